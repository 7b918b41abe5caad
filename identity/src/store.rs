//! Where the CA's material lives and where its trust bundle is published:
//! a state directory (0700, files 0600) and a bundle file in the sandbox; a
//! Secret and a ConfigMap in Kubernetes. Writes are compare-and-swap, so two
//! replicas starting together agree on one CA (the first writer wins, the
//! other loads what it wrote) and a rotation step never overwrites a change
//! it did not see.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::ca::{Material, NAMES};

/// The ConfigMap key (and conventional file name) of the published bundle.
pub const BUNDLE_KEY: &str = trellis_api::contract::TRUST_BUNDLE_KEY;
/// The field manager of server-side apply, and the `managed-by` label.
pub const FIELD_MANAGER: &str = "trellis-identity";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{0} changed while it was being updated; retry")]
    Conflict(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The CA's persistent material.
pub trait Store: Send + Sync + 'static {
    /// What and where, for messages.
    fn describe(&self) -> String;
    /// The stored material; `None` when nothing is stored yet.
    fn load(&self) -> StoreFuture<'_, Option<Material>>;
    /// Stores `material` unless something is stored already; returns what
    /// is stored afterwards.
    fn create<'a>(&'a self, material: &'a Material) -> StoreFuture<'a, Material>;
    /// Replaces `old` with `new`; [`StoreError::Conflict`] if the stored
    /// material is no longer `old`.
    fn replace<'a>(&'a self, old: &'a Material, new: &'a Material) -> StoreFuture<'a, ()>;
}

/// Where the trust bundle is published.
pub trait BundleSink: Send + Sync + 'static {
    fn describe(&self) -> String;
    /// Publishes `pem`; `true` when that changed what was published.
    fn publish<'a>(&'a self, pem: &'a str) -> StoreFuture<'a, bool>;
}

/// A state directory holding one file per name.
#[derive(Clone, Debug)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = format!("{what} {}", self.dir.display());
        move |source| StoreError::Io { what, source }
    }

    fn read(&self) -> Result<Option<Material>, StoreError> {
        let mut material = Material::default();
        for name in NAMES {
            match std::fs::read(self.dir.join(name)) {
                Ok(content) => {
                    material.files.insert((*name).to_string(), content);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&format!("reading {name} in"))(e)),
            }
        }
        Ok((!material.files.is_empty()).then_some(material))
    }

    fn write(&self, material: &Material) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io("creating"))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(self.io("restricting"))?;
        for name in NAMES {
            let path = self.dir.join(name);
            match material.get(name) {
                Some(content) => write_atomic(&path, content, 0o600)
                    .map_err(self.io(&format!("writing {name} in")))?,
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(self.io(&format!("removing {name} in"))(e));
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// Writes `content` to `path` through a temporary file and a rename, so a
/// reader sees the old or the new file, never half of one.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

impl Store for DirStore {
    fn describe(&self) -> String {
        format!("state directory {}", self.dir.display())
    }

    fn load(&self) -> StoreFuture<'_, Option<Material>> {
        Box::pin(async move { self.read() })
    }

    fn create<'a>(&'a self, material: &'a Material) -> StoreFuture<'a, Material> {
        Box::pin(async move {
            if let Some(existing) = self.read()? {
                return Ok(existing);
            }
            self.write(material)?;
            Ok(material.clone())
        })
    }

    fn replace<'a>(&'a self, old: &'a Material, new: &'a Material) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.read()?.as_ref() != Some(old) {
                return Err(StoreError::Conflict(self.describe()));
            }
            self.write(new)
        })
    }
}

/// A Kubernetes Secret holding one key per name.
#[derive(Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    )])
}

impl SecretStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn api_err(&self, what: &str) -> impl FnOnce(kube::Error) -> StoreError {
        let what = format!("{what} {}", self.describe());
        move |source| StoreError::Api { what, source }
    }

    async fn get(&self) -> Result<Option<(Secret, Material)>, StoreError> {
        let Some(secret) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.api_err("reading"))?
        else {
            return Ok(None);
        };
        let mut material = Material::default();
        for (k, v) in secret.data.iter().flatten() {
            if NAMES.contains(&k.as_str()) {
                material.files.insert(k.clone(), v.0.clone());
            }
        }
        Ok(Some((secret, material)))
    }

    fn data(material: &Material) -> BTreeMap<String, ByteString> {
        material
            .files
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect()
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Store for SecretStore {
    fn describe(&self) -> String {
        format!("secret {}/{}", self.namespace, self.name)
    }

    fn load(&self) -> StoreFuture<'_, Option<Material>> {
        Box::pin(async move {
            Ok(self
                .get()
                .await?
                .map(|(_, m)| m)
                .filter(|m| !m.files.is_empty()))
        })
    }

    fn create<'a>(&'a self, material: &'a Material) -> StoreFuture<'a, Material> {
        Box::pin(async move {
            if let Some((_, existing)) = self.get().await?
                && !existing.files.is_empty()
            {
                return Ok(existing);
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(Self::data(material)),
                ..Secret::default()
            };
            match self.api.create(&PostParams::default(), &secret).await {
                Ok(_) => Ok(material.clone()),
                Err(e) if is_conflict(&e) => {
                    // Another replica created it first: use theirs.
                    match self.get().await? {
                        Some((_, existing)) if !existing.files.is_empty() => Ok(existing),
                        _ => Err(StoreError::Conflict(self.describe())),
                    }
                }
                Err(e) => Err(self.api_err("creating")(e)),
            }
        })
    }

    fn replace<'a>(&'a self, old: &'a Material, new: &'a Material) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let Some((mut secret, current)) = self.get().await? else {
                return Err(StoreError::Conflict(self.describe()));
            };
            if &current != old {
                return Err(StoreError::Conflict(self.describe()));
            }
            let mut data = secret.data.take().unwrap_or_default();
            data.retain(|k, _| !NAMES.contains(&k.as_str()));
            data.extend(Self::data(new));
            secret.data = Some(data);
            match self
                .api
                .replace(&self.name, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_conflict(&e) => Err(StoreError::Conflict(self.describe())),
                Err(e) => Err(self.api_err("replacing")(e)),
            }
        })
    }
}

/// The bundle as a file (mode 0644: anchors are public).
#[derive(Clone, Debug)]
pub struct FileBundle {
    path: PathBuf,
}

impl FileBundle {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl BundleSink for FileBundle {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn publish<'a>(&'a self, pem: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if std::fs::read(&self.path).is_ok_and(|c| c == pem.as_bytes()) {
                return Ok(false);
            }
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    what: format!("creating {}", parent.display()),
                    source,
                })?;
            }
            write_atomic(&self.path, pem.as_bytes(), 0o644).map_err(|source| StoreError::Io {
                what: format!("writing {}", self.path.display()),
                source,
            })?;
            Ok(true)
        })
    }
}

/// The bundle as a ConfigMap (key [`BUNDLE_KEY`]), written by server-side apply.
#[derive(Clone)]
pub struct ConfigMapBundle {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for ConfigMapBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ConfigMapBundle {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl BundleSink for ConfigMapBundle {
    fn describe(&self) -> String {
        format!("configmap {}/{}", self.namespace, self.name)
    }

    fn publish<'a>(&'a self, pem: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let api_err = |what: &str| {
                let what = format!("{what} {}", self.describe());
                move |source| StoreError::Api { what, source }
            };
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(api_err("reading"))?;
            let published = current
                .as_ref()
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get(BUNDLE_KEY));
            if published.map(String::as_str) == Some(pem) {
                return Ok(false);
            }
            let desired = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(BUNDLE_KEY.to_string(), pem.to_string())])),
                ..ConfigMap::default()
            };
            let params = PatchParams::apply(FIELD_MANAGER).force();
            self.api
                .patch(&self.name, &params, &Patch::Apply(&desired))
                .await
                .map_err(api_err("applying"))?;
            Ok(true)
        })
    }
}
