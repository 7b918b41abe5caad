//! Writes status to the API server while this replica holds the lease:
//! after each change (debounced), every object whose computed status
//! differs from what was last written gets a server-side apply of its
//! `status` with field manager `trellis.io/controller`.
//!
//! A write that fails is tried again with backoff even if nothing changes.
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

/// After a failed write (the API server overloaded or restarting), the
/// statuses not yet written are tried again after this pause, doubled on
/// each failure in a row up to [`RETRY_MAX`]; a change to the index tries
/// at once as before.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

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
    leader: watch::Receiver<bool>,
) -> Result<(), kube::Error> {
    follow(index, leader, |s| {
        let client = client.clone();
        async move { write(&client, &s).await }
    })
    .await;
    Ok(())
}

/// The writer's loop, with the write itself given: `write` for the API
/// server, a recorder in tests. Returns when the index or the lease
/// watch is gone.
async fn follow<W, F>(index: SharedIndex, mut leader: watch::Receiver<bool>, mut write: W)
where
    W: FnMut(ObjectStatus) -> F,
    F: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut changes = index.lock().changes();
    let mut transitions = status::Transitions::default();
    // What was last written, per object, to skip unchanged ones.
    let mut written: HashMap<(String, String, String), ObjectStatus> = HashMap::new();
    let mut retry = RETRY_MIN;
    loop {
        if !*leader.borrow_and_update() {
            written.clear();
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut statuses = status::all(index.lock().store());
        transitions.stamp(&mut statuses, &status::now_rfc3339());
        let mut failed = false;
        for s in statuses {
            let key = (s.kind.clone(), s.namespace.clone(), s.name.clone());
            if written.get(&key) == Some(&s) {
                continue;
            }
            match write(s.clone()).await {
                Ok(()) => {
                    written.insert(key, s);
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(kind = %s.kind, namespace = %s.namespace, name = %s.name, "writing status: {e}; trying again in {retry:?}")
                }
            }
        }
        let pause = failed.then_some(retry);
        retry = if failed {
            (retry * 2).min(RETRY_MAX)
        } else {
            RETRY_MIN
        };
        let again = async {
            match pause {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = again => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, Settings};
    use crate::objects::Object;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// A write that fails while `refuse` is above zero (counting down), and
    /// records every attempt.
    #[derive(Clone, Default)]
    struct Recorder {
        attempts: Arc<Mutex<Vec<String>>>,
        refuse: Arc<Mutex<usize>>,
    }

    impl Recorder {
        async fn write(self, s: ObjectStatus) -> Result<(), kube::Error> {
            self.attempts.lock().push(format!("{}/{}", s.kind, s.name));
            let mut refuse = self.refuse.lock();
            if *refuse == 0 {
                return Ok(());
            }
            *refuse -= 1;
            Err(kube::Error::Api(
                kube::core::Status::failure("etcd leader changed", "ServiceUnavailable")
                    .with_code(503)
                    .boxed(),
            ))
        }

        fn attempts(&self) -> usize {
            self.attempts.lock().len()
        }
    }

    /// Lets the writer run until it waits again (time is paused).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_write_is_tried_again_with_backoff_and_nothing_else() {
        let index = Index::shared(Settings::default());
        let mesh = serde_json::json!({
            "apiVersion": "gateway.networking.x-k8s.io/v1alpha1", "kind": "XMesh",
            "metadata": {"name": "trellis", "generation": 1},
            "spec": {"controllerName": CONTROLLER_NAME},
        });
        index
            .lock()
            .apply(Object::from_value(mesh).unwrap().expect("a known kind"));
        let (_lease, leader) = watch::channel(true);
        let rec = Recorder::default();
        *rec.refuse.lock() = 3;
        let task = tokio::spawn(follow(index.clone(), leader, {
            let rec = rec.clone();
            move |s| rec.clone().write(s)
        }));

        settle().await;
        assert_eq!(rec.attempts(), 1, "the first write, refused");
        // Refused again after 1 s and 2 s, written after 4 s more.
        for (wait, attempts) in [(RETRY_MIN, 2), (RETRY_MIN * 2, 3), (RETRY_MIN * 4, 4)] {
            tokio::time::advance(wait - Duration::from_millis(1)).await;
            settle().await;
            assert_eq!(rec.attempts(), attempts - 1, "not before {wait:?}");
            tokio::time::advance(Duration::from_millis(1)).await;
            settle().await;
            tokio::time::advance(DEBOUNCE).await;
            settle().await;
            assert_eq!(rec.attempts(), attempts, "after {wait:?}");
        }
        // Written: nothing more until the index changes.
        tokio::time::advance(RETRY_MAX * 2).await;
        settle().await;
        assert_eq!(rec.attempts(), 4);
        task.abort();
    }
}
