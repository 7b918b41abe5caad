//! Where pod metadata comes from, behind one trait: a directory of Pod
//! objects (the sandbox) or the API server (a cluster).

use crate::config::MetadataSource;
use crate::pod::PodInfo;
use crate::spec::{CniError, code};
use std::{path::PathBuf, time::Duration};

/// How long the API server may take to answer before the runtime is told
/// to try again later.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a pod's metadata by namespace and name.
pub trait PodSource {
    fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo, CniError>;
}

/// The source a configuration names.
pub fn from_config(source: &MetadataSource) -> Box<dyn PodSource> {
    match source {
        MetadataSource::Dir(dir) => Box::new(DirSource { dir: dir.clone() }),
        MetadataSource::Kubeconfig(path) => Box::new(KubeSource {
            kubeconfig: path.clone(),
        }),
    }
}

/// `<dir>/<namespace>/<name>.json`, each holding a Pod object.
#[derive(Debug, Clone)]
pub struct DirSource {
    pub dir: PathBuf,
}

impl PodSource for DirSource {
    fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo, CniError> {
        for part in [namespace, name] {
            if part.is_empty() || part == "." || part == ".." || part.contains('/') {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("invalid pod name or namespace {part:?} in CNI_ARGS"),
                ));
            }
        }
        let path = self.dir.join(namespace).join(format!("{name}.json"));
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CniError::new(
                code::POD_NOT_FOUND,
                format!(
                    "no metadata for pod {namespace}/{name}: {} does not exist",
                    path.display()
                ),
            ),
            _ => CniError::new(code::IO_FAILURE, format!("reading {}: {e}", path.display())),
        })?;
        PodInfo::from_json(&bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("{} is not a Pod object: {e}", path.display()),
            )
        })
    }
}

/// The API server of a kubeconfig file.
#[derive(Debug, Clone)]
pub struct KubeSource {
    pub kubeconfig: PathBuf,
}

impl PodSource for KubeSource {
    fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo, CniError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                CniError::new(code::IO_FAILURE, format!("starting the async runtime: {e}"))
            })?;
        runtime.block_on(self.get(namespace, name))
    }
}

impl KubeSource {
    async fn get(&self, namespace: &str, name: &str) -> Result<PodInfo, CniError> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let shown = self.kubeconfig.display();
        let invalid = |e: &dyn std::fmt::Display| {
            CniError::new(code::INVALID_CONFIG, format!("kubeconfig {shown}: {e}"))
        };
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(|e| invalid(&e))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| invalid(&e))?;
        let client = kube::Client::try_from(config).map_err(|e| invalid(&e))?;
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, namespace);
        let pod = tokio::time::timeout(API_TIMEOUT, pods.get(name))
            .await
            .map_err(|_| {
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("the API server did not answer for pod {namespace}/{name} within {API_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| api_error(namespace, name, e))?;
        Ok(PodInfo::from(&pod))
    }
}

/// 404 is "no such pod"; overload and unreachability are worth a retry;
/// anything else (a 403 from missing RBAC, say) needs an operator.
fn api_error(namespace: &str, name: &str, e: kube::Error) -> CniError {
    let msg = format!("reading pod {namespace}/{name} from the API server: {e}");
    match &e {
        kube::Error::Api(status) if status.is_not_found() => {
            CniError::new(code::POD_NOT_FOUND, msg)
        }
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            CniError::new(code::TRY_AGAIN_LATER, msg)
        }
        kube::Error::Api(_) => CniError::new(code::POD_NOT_FOUND, msg),
        _ => CniError::new(code::TRY_AGAIN_LATER, msg),
    }
}
