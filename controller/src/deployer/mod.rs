//! The gateway deployer: for each Gateway of a class whose `controllerName`
//! is `trellis.io/controller`, a ServiceAccount, Service and Deployment
//! running `trellis-proxy gateway`, owned by the Gateway (so Kubernetes
//! deletes them with it). Once its Deployment has a ready replica the
//! Gateway is marked programmed in the index (the status writer turns that
//! into the `Programmed` condition) and its `status.addresses` are set from
//! the Service.
//!
//! ```text
//! when a Gateway or GatewayClass changes, and every few seconds, while
//! this replica holds the lease:
//!   ConfigMap trellis-injector ─► Settings
//!   GatewayClasses (ours) ─► Gateways ─► desired::desired ─► server-side apply
//!   Deployment ready? ─► Index::set_programmed      Service ─► Gateway status.addresses
//!   generated objects whose Gateway is gone or no longer ours ─► deleted
//! ```
//!
//! The settings are the injector's own (`injector.yaml`), so gateway proxies
//! get the same image, control-plane addresses and controller SPIFFE id
//! (mTLS to the controller when the chart sets one) as sidecars; like them,
//! they mount the trust bundle from the `trellis-trust-bundle` ConfigMap
//! identity keeps in their namespace.

pub mod desired;

use crate::index::SharedIndex;
use desired::{Desired, FIELD_MANAGER, GATEWAY_LABEL, MANAGED_BY, Settings};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use trellis_api::contract::CONTROLLER_NAME;
use trellis_policy::ResourceRef;

/// How often the deployer looks again.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{what}: {error}")]
    Api { what: String, error: kube::Error },
    #[error("{0}: the injector's configuration is needed to run gateway proxies")]
    NotConfigured(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DeployError {
    let what = what.into();
    move |error| DeployError::Api { what, error }
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `namespace/name` of each Gateway whose objects were applied.
    pub deployed: Vec<String>,
    /// … of those with a ready proxy.
    pub programmed: Vec<String>,
    /// … of Gateways it could not deploy, with the reason.
    pub refused: Vec<String>,
    /// `namespace/name` of generated objects removed.
    pub removed: Vec<String>,
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn gateway_api(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = resource("gateway.networking.k8s.io", "v1", "Gateway");
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// The settings of gateway proxies, from the controller's namespace.
pub async fn settings(client: &Client, namespace: &str) -> Result<Settings, DeployError> {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let get = |name: &'static str, key: &'static str| {
        let cms = cms.clone();
        async move {
            cms.get_opt(name)
                .await
                .map_err(api_err(format!("configmap {namespace}/{name}")))?
                .and_then(|c| c.data?.remove(key))
                .ok_or_else(|| {
                    DeployError::NotConfigured(format!("configmap {namespace}/{name} has no {key}"))
                })
        }
    };
    let text = get("trellis-injector", "injector.yaml").await?;
    serde_saphyr::from_str(&text).map_err(|e| {
        DeployError::NotConfigured(format!(
            "injector.yaml of {namespace}/trellis-injector: {e}"
        ))
    })
}

/// One pass over every Gateway.
pub async fn reconcile_once(
    client: &Client,
    index: &SharedIndex,
    namespace: &str,
) -> Result<Report, DeployError> {
    let settings = settings(client, namespace).await?;
    let classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("gateway.networking.k8s.io", "v1", "GatewayClass"),
    );
    let ours: BTreeSet<String> = classes
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing gatewayclasses"))?
        .items
        .iter()
        .map(to_value)
        .filter(|c| {
            c.pointer("/spec/controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
        })
        .filter_map(|c| {
            c.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    let gateways: Vec<Value> = gateway_api(client, None)
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing gateways"))?
        .items
        .iter()
        .map(to_value)
        .filter(|g| {
            g.pointer("/spec/gatewayClassName")
                .and_then(Value::as_str)
                .is_some_and(|c| ours.contains(c))
        })
        .collect();

    let mut report = Report::default();
    let mut keep = BTreeSet::new();
    for gw in &gateways {
        let ns = gw
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = gw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let who = format!("{ns}/{name}");
        let gw_ref = ResourceRef::new(ns, name);
        let d = match desired::desired(gw, &settings) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("not deploying gateway {who}: {e}");
                report.refused.push(format!("{who}: {e}"));
                index.lock().set_programmed(gw_ref, false);
                continue;
            }
        };
        keep.insert((ns.to_string(), d.name.clone()));
        apply(client, ns, &d).await?;
        report.deployed.push(who.clone());
        let (ready, addresses) = observe(client, ns, &d.name).await?;
        index.lock().set_programmed(gw_ref, ready);
        if ready {
            report.programmed.push(who.clone());
            if !addresses.is_empty()
                && gw.pointer("/status/addresses") != Some(&Value::Array(addresses.clone()))
            {
                let status = json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": name, "namespace": ns},
                    "status": {"addresses": addresses},
                });
                gateway_api(client, Some(ns))
                    .patch_status(
                        name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&status),
                    )
                    .await
                    .map_err(api_err(format!("status of gateway {who}")))?;
            }
        }
    }
    report.removed = remove_stale(client, index, &keep).await?;
    Ok(report)
}

async fn apply(client: &Client, ns: &str, d: &Desired) -> Result<(), DeployError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (obj, ar) in d.objects().into_iter().zip([
        resource("", "v1", "ServiceAccount"),
        resource("", "v1", "Service"),
        resource("apps", "v1", "Deployment"),
    ]) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        api.patch(&d.name, &params, &Patch::Apply(obj))
            .await
            .map_err(api_err(format!("applying {} {ns}/{}", ar.kind, d.name)))?;
    }
    Ok(())
}

/// Whether the Deployment is ready, and the addresses its Service offers.
async fn observe(client: &Client, ns: &str, name: &str) -> Result<(bool, Vec<Value>), DeployError> {
    let get = |ar: ApiResource| async move {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        api.get_opt(name)
            .await
            .map(|o| o.as_ref().map(to_value))
            .map_err(api_err(format!("reading {} {ns}/{name}", ar.kind)))
    };
    let ready = get(resource("apps", "v1", "Deployment"))
        .await?
        .is_some_and(|d| desired::deployment_ready(&d));
    let addresses = get(resource("", "v1", "Service"))
        .await?
        .map(|s| desired::addresses(&s))
        .unwrap_or_default();
    Ok((ready, addresses))
}

/// Deletes generated objects whose Gateway is gone or no longer ours.
async fn remove_stale(
    client: &Client,
    index: &SharedIndex,
    keep: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, DeployError> {
    let deployments: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("apps", "v1", "Deployment"));
    let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let list = deployments
        .list(&lp)
        .await
        .map_err(api_err("listing gateway deployments"))?;
    let mut removed = Vec::new();
    for d in list.items.iter().map(to_value) {
        let ns = d
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = d
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if keep.contains(&(ns.clone(), name.clone())) {
            continue;
        }
        for ar in [
            resource("apps", "v1", "Deployment"),
            resource("", "v1", "Service"),
            resource("", "v1", "ServiceAccount"),
        ] {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("deleting {} {ns}/{name}", ar.kind))(e)),
            }
        }
        if let Some(gw) = d
            .pointer(&format!(
                "/metadata/labels/{}",
                GATEWAY_LABEL.replace('/', "~1")
            ))
            .and_then(Value::as_str)
        {
            index
                .lock()
                .set_programmed(ResourceRef::new(ns.clone(), gw), false);
        }
        tracing::info!(deployment = %format!("{ns}/{name}"), "removed a gateway proxy whose Gateway is gone");
        removed.push(format!("{ns}/{name}"));
    }
    Ok(removed)
}

/// Runs [`reconcile_once`] while `leader` says this replica holds the
/// lease: at once when a Gateway or GatewayClass changes in the index
/// (created, spec changed, deleted, class taken or given up), and every
/// [`INTERVAL`] to see Deployments become ready and repair drift. Errors
/// are logged and retried on the next pass.
pub async fn run(
    client: Client,
    index: SharedIndex,
    leader: watch::Receiver<bool>,
    namespace: String,
) -> Result<(), kube::Error> {
    run_every(client, index, leader, namespace, INTERVAL).await
}

/// Changes closer together than this make one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What of the index the generated objects depend on: each Gateway's
/// spec generation, and which classes are Trellis'.
type Fingerprint = (Vec<(ResourceRef, Option<i64>)>, Vec<(String, bool)>);

fn fingerprint(index: &SharedIndex) -> Fingerprint {
    let index = index.lock();
    let store = index.store();
    (
        store
            .gateways
            .iter()
            .map(|(k, g)| (k.clone(), g.object.metadata.generation))
            .collect(),
        store
            .gateway_classes
            .iter()
            .map(|(k, c)| (k.clone(), c.ours))
            .collect(),
    )
}

/// [`run`] with the resync period given (tests pass a long one).
pub async fn run_every(
    client: Client,
    index: SharedIndex,
    mut leader: watch::Receiver<bool>,
    namespace: String,
    resync: Duration,
) -> Result<(), kube::Error> {
    let mut tick = tokio::time::interval(resync);
    let mut changes = index.lock().changes();
    let mut seen: Option<Fingerprint> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leader.changed() => if changed.is_err() { return Ok(()) },
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // Endpoints and routes change far more often than Gateways.
                if seen.as_ref() == Some(&fingerprint(&index)) {
                    continue;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
        }
        if !*leader.borrow() {
            continue;
        }
        seen = Some(fingerprint(&index));
        match reconcile_once(&client, &index, &namespace).await {
            Ok(r) if !r.removed.is_empty() || !r.refused.is_empty() => {
                tracing::info!(?r, "gateway deployer pass")
            }
            Ok(r) => tracing::debug!(?r, "gateway deployer pass"),
            Err(e) => tracing::warn!("gateway deployer: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
