//! The trust bundle in every namespace where meshed pods run.
//!
//! A pod can mount only ConfigMaps of its own namespace, and the kubelet
//! keeps a mounted ConfigMap's files current (a downward-API annotation is
//! copied once, so a rotation would never reach running pods). So identity
//! applies the bundle ConfigMap (`--bundle-configmap`'s name, key
//! `ca-bundle.crt`) in each namespace matching `--bundle-namespaces`, the
//! injected sidecar mounts it as `trust-bundle.pem`, and the proxy follows
//! the file: an anchor added for rotation reaches running proxies within the
//! kubelet's sync period (about a minute), as Istio's `istio-ca-root-cert`
//! does.
//!
//! ```text
//!  reload tick ─► publish(pem) ─► list namespaces (selector) and our ConfigMaps
//!                               ─► apply where missing or different
//!  namespace watch (selector) ─► a namespace appears or gains the label ─► apply there now
//! ```

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Once};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::store::{BUNDLE_KEY, BundleSink, FIELD_MANAGER, StoreError, StoreFuture};

/// The label every object identity writes carries (selects our ConfigMaps).
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The bundle ConfigMap `name` in every namespace matching `selector` (a
/// Kubernetes label selector; empty means every namespace).
pub struct NamespaceBundles {
    client: kube::Client,
    name: String,
    selector: String,
    /// The bundle last published; the namespace watch applies it.
    pem: Arc<watch::Sender<Option<String>>>,
    watching: Once,
}

impl std::fmt::Debug for NamespaceBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl NamespaceBundles {
    pub fn new(client: kube::Client, name: &str, selector: &str) -> Self {
        Self {
            client,
            name: name.to_string(),
            selector: selector.to_string(),
            pem: Arc::new(watch::channel(None).0),
            watching: Once::new(),
        }
    }
}

fn desired(namespace: &str, name: &str, pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(BUNDLE_KEY.to_string(), pem.to_string())])),
        ..ConfigMap::default()
    }
}

/// Applies the bundle ConfigMap in `namespace` (server-side apply).
async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    pem: &str,
) -> Result<(), StoreError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&desired(namespace, name, pem)))
        .await
        .map_err(|source| StoreError::Api {
            what: format!("applying configmap {namespace}/{name}"),
            source,
        })?;
    Ok(())
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating")
}

/// Applies the current bundle in each namespace that appears or changes,
/// until the sink is gone. What the watch misses, the next publish repairs.
async fn follow(
    client: kube::Client,
    name: String,
    selector: String,
    mut pem: watch::Receiver<Option<String>>,
) {
    let api: Api<Namespace> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&selector);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            changed = pem.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // The initial list is the publish's to cover; later events are news.
        let ns = match event {
            None => return,
            Some(Ok(watcher::Event::Apply(ns))) => ns,
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                tracing::warn!(%error, "watching namespaces for the trust bundle");
                continue;
            }
        };
        let Some(current) = pem.borrow().clone() else {
            continue;
        };
        let Some(namespace) = ns.metadata.name.as_deref().filter(|_| !terminating(&ns)) else {
            continue;
        };
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let published = match cms.get_opt(&name).await {
            Ok(cm) => cm
                .and_then(|c| c.data)
                .and_then(|mut d| d.remove(BUNDLE_KEY)),
            Err(error) => {
                tracing::warn!(%error, namespace, "reading the trust bundle configmap");
                None
            }
        };
        if published.as_deref() == Some(current.as_str()) {
            continue;
        }
        match apply(&client, namespace, &name, &current).await {
            Ok(()) => tracing::info!(namespace, configmap = %name, "trust bundle published"),
            Err(error) => tracing::warn!(%error, "publishing the trust bundle failed; will retry"),
        }
    }
}

impl BundleSink for NamespaceBundles {
    fn describe(&self) -> String {
        format!(
            "configmap {} in namespaces matching {:?}",
            self.name, self.selector
        )
    }

    fn publish<'a>(&'a self, pem: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.pem.send_replace(Some(pem.to_string()));
            self.watching.call_once(|| {
                tokio::spawn(follow(
                    self.client.clone(),
                    self.name.clone(),
                    self.selector.clone(),
                    self.pem.subscribe(),
                ));
            });
            let api_err = |what: String| move |source| StoreError::Api { what, source };
            let namespaces = Api::<Namespace>::all(self.client.clone())
                .list(&ListParams::default().labels(&self.selector))
                .await
                .map_err(api_err(format!("listing namespaces {:?}", self.selector)))?;
            let ours = Api::<ConfigMap>::all(self.client.clone())
                .list(&ListParams::default().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}")))
                .await
                .map_err(api_err("listing trust bundle configmaps".into()))?;
            let published: HashMap<String, Option<String>> = ours
                .items
                .into_iter()
                .filter(|c| c.metadata.name.as_deref() == Some(self.name.as_str()))
                .filter_map(|c| {
                    let ns = c.metadata.namespace?;
                    Some((ns, c.data.and_then(|mut d| d.remove(BUNDLE_KEY))))
                })
                .collect();
            let mut changed = false;
            let mut failed = None;
            for ns in namespaces.items.iter().filter(|ns| !terminating(ns)) {
                let Some(namespace) = ns.metadata.name.as_deref() else {
                    continue;
                };
                if published
                    .get(namespace)
                    .is_some_and(|p| p.as_deref() == Some(pem))
                {
                    continue;
                }
                match apply(&self.client, namespace, &self.name, pem).await {
                    Ok(()) => changed = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the trust bundle failed; will retry");
                        failed.get_or_insert(e);
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(changed),
            }
        })
    }
}
