//! Writes status to the API server while this replica holds the lease:
//! after each change (debounced), every object whose computed status
//! differs from what was last written gets a server-side apply of its
//! `status` with field manager `trellis.io/controller`.
//!
//! Route `status.parents` is an atomic list shared with other controllers,
//! so the writer reads the current list, keeps the entries of other
//! controllers, replaces its own, and keeps `lastTransitionTime` of
//! conditions whose status did not change.

use crate::index::SharedIndex;
use crate::objects::Kind;
use crate::status::{self, ObjectStatus, ParentStatus};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use trellis_api::contract::CONTROLLER_NAME;

/// Changes closer together than this are written together.
const DEBOUNCE: Duration = Duration::from_millis(500);

fn api_resource(kind: &str) -> Option<(ApiResource, bool)> {
    let (group, version, k, namespaced) = match kind {
        "HTTPRoute" => ("gateway.networking.k8s.io", "v1", Kind::HttpRoute, true),
        "GRPCRoute" => ("gateway.networking.k8s.io", "v1", Kind::GrpcRoute, true),
        "TCPRoute" => ("gateway.networking.k8s.io", "v1", Kind::TcpRoute, true),
        "TLSRoute" => ("gateway.networking.k8s.io", "v1", Kind::TlsRoute, true),
        "Gateway" => ("gateway.networking.k8s.io", "v1", Kind::Gateway, true),
        "GatewayClass" => ("gateway.networking.k8s.io", "v1", Kind::GatewayClass, false),
        "XMesh" => ("gateway.networking.x-k8s.io", "v1alpha1", Kind::Mesh, false),
        "AuthorizationPolicy" => (
            "policy.trellis.io",
            "v1alpha1",
            Kind::AuthorizationPolicy,
            true,
        ),
        _ => return None,
    };
    let gvk = GroupVersionKind::gvk(group, version, k.group_kind().1);
    Some((ApiResource::from_gvk(&gvk), namespaced))
}

/// Keeps other controllers' parents; keeps our conditions' transition
/// times where their status did not change.
fn merge_parents(current: &serde_json::Value, ours: &[ParentStatus]) -> Vec<serde_json::Value> {
    let existing: Vec<serde_json::Value> = current
        .pointer("/status/parents")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<serde_json::Value> = existing
        .iter()
        .filter(|p| p.get("controllerName").and_then(|c| c.as_str()) != Some(CONTROLLER_NAME))
        .cloned()
        .collect();
    for p in ours {
        let mut p = p.clone();
        let previous = existing.iter().find(|e| {
            e.get("controllerName").and_then(|c| c.as_str()) == Some(CONTROLLER_NAME)
                && serde_json::from_value::<crate::crd::ParentReference>(
                    e.get("parentRef").cloned().unwrap_or_default(),
                )
                .is_ok_and(|r| r == p.parent_ref)
        });
        keep_times(
            previous.and_then(|e| e.get("conditions")),
            &mut p.conditions,
        );
        out.push(serde_json::to_value(p).unwrap_or_default());
    }
    out
}

fn keep_times(previous: Option<&serde_json::Value>, conditions: &mut [status::Condition]) {
    let Some(prev) = previous.and_then(|c| c.as_array()) else {
        return;
    };
    for c in conditions {
        let same = prev.iter().find(|p| {
            p.get("type").and_then(|t| t.as_str()) == Some(&c.type_)
                && p.get("status").and_then(|s| s.as_str()) == Some(&c.status)
        });
        if let Some(time) = same
            .and_then(|p| p.get("lastTransitionTime"))
            .and_then(|t| t.as_str())
        {
            c.last_transition_time = time.to_string();
        }
    }
}

async fn write(client: &Client, s: &ObjectStatus) -> Result<(), kube::Error> {
    let Some((ar, namespaced)) = api_resource(&s.kind) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), &s.namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let current = match api.get_opt(&s.name).await? {
        Some(o) => serde_json::to_value(o).unwrap_or_default(),
        // Deleted meanwhile: nothing to write.
        None => return Ok(()),
    };
    let mut body = serde_json::json!({ "apiVersion": ar.api_version, "kind": ar.kind });
    let mut st = serde_json::Map::new();
    if let Some(parents) = &s.parents {
        st.insert(
            "parents".into(),
            serde_json::Value::Array(merge_parents(&current, parents)),
        );
    }
    if let Some(conditions) = &s.conditions {
        let mut conditions = conditions.clone();
        keep_times(current.pointer("/status/conditions"), &mut conditions);
        st.insert(
            "conditions".into(),
            serde_json::to_value(conditions).unwrap_or_default(),
        );
    }
    if let Some(serde_json::Value::Object(extra)) = &s.extra {
        st.extend(extra.clone());
    }
    body["status"] = serde_json::Value::Object(st);
    let pp = PatchParams::apply(CONTROLLER_NAME).force();
    api.patch_status(&s.name, &pp, &Patch::Apply(&body)).await?;
    Ok(())
}

/// Writes status whenever the index changes while `leader` is true.
pub async fn run(
    client: Client,
    index: SharedIndex,
    mut leader: watch::Receiver<bool>,
) -> Result<(), kube::Error> {
    let mut changes = index.lock().changes();
    let mut transitions = status::Transitions::default();
    // What was last written, per object, to skip unchanged ones.
    let mut written: HashMap<(String, String, String), ObjectStatus> = HashMap::new();
    loop {
        if !*leader.borrow_and_update() {
            written.clear();
            if leader.changed().await.is_err() {
                return Ok(());
            }
            continue;
        }
        let mut statuses = status::all(index.lock().store());
        transitions.stamp(&mut statuses, &status::now_rfc3339());
        for s in statuses {
            let key = (s.kind.clone(), s.namespace.clone(), s.name.clone());
            if written.get(&key) == Some(&s) {
                continue;
            }
            match write(&client, &s).await {
                Ok(()) => {
                    written.insert(key, s);
                }
                Err(e) => {
                    tracing::warn!(kind = %s.kind, namespace = %s.namespace, name = %s.name, "writing status: {e}")
                }
            }
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return Ok(()) },
            r = leader.changed() => if r.is_err() { return Ok(()) },
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
