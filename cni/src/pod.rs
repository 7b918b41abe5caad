//! What the plugin needs to know about a pod: whether it is meshed and which
//! of its traffic the proxy must leave alone. Read from the Pod object (the
//! API server's or a file's); only annotations and container names matter.

use crate::spec::{CniError, code};
use serde::Deserialize;
use std::collections::BTreeMap;
use trellis_api::contract::{INJECT_DISABLED, PROXY_CONTAINER_NAME, key};
use trellis_capture::CaptureConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub annotations: BTreeMap<String, String>,
    /// Names of the containers and init containers (a native sidecar is an
    /// init container).
    pub containers: Vec<String>,
}

impl PodInfo {
    /// Reads a Pod object in JSON; absent fields are empty.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Pod {
            metadata: Option<Meta>,
            spec: Option<Spec>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spec {
            containers: Option<Vec<Named>>,
            init_containers: Option<Vec<Named>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Named {
            name: String,
        }
        let pod: Pod = serde_json::from_slice(bytes)?;
        let (metadata, spec) = (
            pod.metadata.unwrap_or_default(),
            pod.spec.unwrap_or_default(),
        );
        Ok(PodInfo {
            annotations: metadata.annotations.unwrap_or_default(),
            containers: [spec.containers, spec.init_containers]
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.name)
                .collect(),
        })
    }

    /// Meshed: injected (annotation or a `trellis-proxy` container) and not
    /// opted out with `trellis.io/inject: disabled`.
    pub fn is_meshed(&self) -> bool {
        let opted_out =
            self.annotations.get(key::INJECT).map(String::as_str) == Some(INJECT_DISABLED);
        let annotated = self
            .annotations
            .get(key::INJECTED)
            .is_some_and(|v| v != "false");
        let has_proxy = self.containers.iter().any(|c| c == PROXY_CONTAINER_NAME);
        (annotated || has_proxy) && !opted_out
    }

    /// The plugin's capture settings plus the pod's skip annotations.
    pub fn capture_config(&self, base: &CaptureConfig) -> Result<CaptureConfig, CniError> {
        let mut config = base.clone();
        for (annotation, add) in [
            (
                key::SKIP_INBOUND_PORTS,
                CaptureConfig::skip_inbound as fn(CaptureConfig, &str) -> _,
            ),
            (key::SKIP_OUTBOUND_PORTS, CaptureConfig::skip_outbound),
            (key::SKIP_OUTBOUND_CIDRS, CaptureConfig::skip_cidrs),
        ] {
            if let Some(value) = self.annotations.get(annotation) {
                config = add(config, value).map_err(|e| {
                    CniError::new(
                        code::INVALID_ANNOTATION,
                        format!("annotation {annotation}: {e}"),
                    )
                })?;
            }
        }
        Ok(config)
    }
}

impl From<&k8s_openapi::api::core::v1::Pod> for PodInfo {
    fn from(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let spec = pod.spec.as_ref();
        PodInfo {
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            containers: spec
                .map(|s| s.containers.iter())
                .into_iter()
                .flatten()
                .chain(
                    spec.and_then(|s| s.init_containers.as_ref())
                        .into_iter()
                        .flatten(),
                )
                .map(|c| c.name.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
