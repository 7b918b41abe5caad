//! Status: the `status` Kubernetes would show for every object this
//! controller owns, computed purely from the [`Store`].
//!
//! - routes: one `status.parents[]` entry per parentRef this controller owns
//!   (Service parents, and Gateway parents whose class is Trellis'), with
//!   `Accepted` and `ResolvedRefs`;
//! - `XMesh` objects naming `trellis.io/controller`: `Accepted`;
//! - `AuthorizationPolicy`: `Accepted` (`Accepted`, `Invalid`,
//!   `TargetNotFound`);
//! - Gateways and GatewayClasses of Trellis: see [`crate::resolve::gateway`].
//!
//! `lastTransitionTime` is stamped by [`Transitions`], which remembers when
//! each condition last changed.

use crate::crd::ParentReference;
use crate::index::policies::AuthzTarget;
use crate::index::store::Store;
use crate::resolve::backend::{self, RefProblem};
use crate::routes::{Filter, ParentRef, RouteSpec, Rules};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use trellis_api::contract::CONTROLLER_NAME;
use trellis_policy::{HttpFilter, ResourceRef};

/// A Kubernetes `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339; stamped by [`Transitions`].
    #[serde(default)]
    pub last_transition_time: String,
}

impl Condition {
    pub fn new(
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
    ) -> Self {
        Self {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: String::new(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// One `status.parents[]` entry of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// The status of one object: `parents` for routes, `conditions` for the
/// rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectStatus {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<ParentStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Extra status fields (Gateway listeners, GatewayClass features), as
    /// the API shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

impl ObjectStatus {
    /// The status of an object other than a route: its conditions.
    pub fn of(kind: &str, namespace: &str, name: &str, conditions: Vec<Condition>) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            parents: None,
            conditions: Some(conditions),
            extra: None,
        }
    }

    /// A cluster-scoped object (GatewayClass, XMesh) naming this
    /// controller, which accepts it as it is.
    pub fn served(kind: &str, name: &str, message: &str, generation: Option<i64>) -> Self {
        let accepted = Condition::new("Accepted", true, "Accepted", message, generation);
        Self::of(kind, "", name, vec![accepted])
    }
}

/// The status of a route for one Service parent.
fn service_parent(store: &Store, route: &RouteSpec, parent: &ParentRef) -> Vec<Condition> {
    let g = route.generation;
    let target = parent.target();
    let accepted = if let Some(e) = &route.error {
        Condition::new("Accepted", false, "UnsupportedValue", e.clone(), g)
    } else {
        match store.services.get(&target) {
            None => Condition::new(
                "Accepted",
                false,
                "NoMatchingParent",
                format!("service {target} not found"),
                g,
            ),
            Some(svc) => {
                let port_ok = parent.port.is_none_or(|p| svc.port(p).is_some())
                    && parent
                        .section_name
                        .as_deref()
                        .is_none_or(|s| svc.ports.iter().any(|p| p.name == s));
                if port_ok {
                    Condition::new("Accepted", true, "Accepted", "Route is accepted", g)
                } else {
                    Condition::new(
                        "Accepted",
                        false,
                        "NoMatchingParent",
                        format!("service {target} has no port matching the parentRef"),
                        g,
                    )
                }
            }
        }
    };
    vec![accepted, resolved_refs(store, route, Some(parent))]
}

/// `ResolvedRefs` of a route: the first unresolvable reference, then the
/// first filter Trellis cannot apply.
pub fn resolved_refs(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> Condition {
    let g = route.generation;
    let problems: Vec<RefProblem> = route
        .backend_refs()
        .into_iter()
        .filter_map(|b| backend::check(store, route, parent, b).err())
        .collect();
    if let Some(first) = problems.first() {
        let message = problems
            .iter()
            .map(RefProblem::message)
            .collect::<Vec<_>>()
            .join("; ");
        return Condition::new("ResolvedRefs", false, first.reason(), message, g);
    }
    if let Some(message) = invalid_filter(route) {
        let reason = if message.contains("extensionRef") {
            "InvalidKind"
        } else {
            "UnsupportedValue"
        };
        return Condition::new("ResolvedRefs", false, reason, message, g);
    }
    Condition::new(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "All references are resolved",
        g,
    )
}

fn invalid_filter(route: &RouteSpec) -> Option<String> {
    let invalid = |f: &Filter| match f {
        Filter::Ready(HttpFilter::Invalid { message }) => Some(message.clone()),
        _ => None,
    };
    match &route.rules {
        Rules::Http(rules) => rules.iter().flat_map(|r| r.all_filters()).find_map(invalid),
        Rules::Grpc(rules) => rules.iter().flat_map(|r| r.all_filters()).find_map(invalid),
        Rules::Opaque(_) => None,
    }
}

/// The status of every route with a parent this controller owns.
pub fn routes(store: &Store) -> Vec<ObjectStatus> {
    store
        .routes
        .values()
        .filter_map(|route| {
            let parents: Vec<ParentStatus> = route
                .parents
                .iter()
                .filter_map(|p| {
                    let conditions = if p.is_service() {
                        service_parent(store, route, p)
                    } else if p.is_gateway() {
                        crate::resolve::gateway::route_parent(store, route, p)?
                    } else {
                        return None;
                    };
                    Some(ParentStatus {
                        parent_ref: p.written.clone(),
                        controller_name: CONTROLLER_NAME.to_string(),
                        conditions,
                    })
                })
                .collect();
            (!parents.is_empty()).then(|| ObjectStatus {
                kind: route.meta.kind.as_str().to_string(),
                namespace: route.meta.namespace.clone(),
                name: route.meta.name.clone(),
                parents: Some(parents),
                conditions: None,
                extra: None,
            })
        })
        .collect()
}

/// The status of the other objects this controller owns.
pub fn others(store: &Store) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for (name, mesh) in store.meshes.iter().filter(|(_, m)| m.ours) {
        out.push(ObjectStatus::served(
            "XMesh",
            name,
            "Trellis serves this mesh",
            mesh.generation,
        ));
    }
    for a in store.authz.values() {
        let g = a.generation;
        let missing: Vec<&String> = match &a.target {
            AuthzTarget::Namespace => Vec::new(),
            AuthzTarget::Services(names) => names
                .iter()
                .filter(|n| {
                    !store
                        .services
                        .contains_key(&ResourceRef::new(a.meta.namespace.clone(), (*n).clone()))
                })
                .collect(),
        };
        let cond = if let Some(e) = &a.error {
            Condition::new("Accepted", false, "Invalid", e.clone(), g)
        } else if !missing.is_empty() {
            Condition::new(
                "Accepted",
                false,
                "TargetNotFound",
                format!(
                    "services not found: {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                g,
            )
        } else {
            Condition::new("Accepted", true, "Accepted", "Policy is enforced", g)
        };
        out.push(ObjectStatus::of(
            "AuthorizationPolicy",
            &a.meta.namespace,
            &a.meta.name,
            vec![cond],
        ));
    }
    out.extend(crate::resolve::gateway::statuses(store));
    out
}

/// Everything: routes first, then the other kinds.
pub fn all(store: &Store) -> Vec<ObjectStatus> {
    let mut out = routes(store);
    out.extend(others(store));
    out
}

/// Remembers when each condition last changed status, so
/// `lastTransitionTime` moves only on a transition.
#[derive(Debug, Default)]
pub struct Transitions {
    seen: HashMap<String, (String, String)>,
}

impl Transitions {
    /// Stamps every condition of `statuses` with the time of its last
    /// transition (`now` for new or changed ones).
    pub fn stamp(&mut self, statuses: &mut [ObjectStatus], now: &str) {
        let mut seen = HashMap::with_capacity(self.seen.len());
        for s in statuses.iter_mut() {
            let base = format!("{}/{}/{}", s.kind, s.namespace, s.name);
            let mut stamp_all = |prefix: &str, conditions: &mut Vec<Condition>| {
                for c in conditions {
                    let key = format!("{prefix}/{}", c.type_);
                    let time = match self.seen.get(&key) {
                        Some((status, time)) if *status == c.status => time.clone(),
                        _ => now.to_string(),
                    };
                    c.last_transition_time = time.clone();
                    seen.insert(key, (c.status.clone(), time));
                }
            };
            if let Some(cs) = s.conditions.as_mut() {
                stamp_all(&base, cs);
            }
            for p in s.parents.iter_mut().flatten() {
                let prefix = format!(
                    "{base}/{}",
                    serde_json::to_string(&p.parent_ref).unwrap_or_default()
                );
                stamp_all(&prefix, &mut p.conditions);
            }
        }
        self.seen = seen;
    }
}

/// The current time as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
