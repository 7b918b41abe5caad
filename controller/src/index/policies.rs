//! Policy objects attached to Services or namespaces, reduced:
//! `XBackendTrafficPolicy` (retry budgets, session persistence), `XMesh`
//! (acceptance) and Trellis' `AuthorizationPolicy`.

use crate::crd::AuthorizationPolicy;
use crate::index::store::creation_timestamp;
use crate::routes::wire_name;
use gateway_api::experimental::{xbackendtrafficpolicies::XBackendTrafficPolicy, xmeshes::XMesh};
use kube::ResourceExt;
use std::time::Duration;
use trellis_api::contract::CONTROLLER_NAME;
use trellis_policy::{
    AuthzRule, AuthzSource, ResourceRef, RetryBudget, SessionPersistence, SpiffeId, duration,
};

/// An `XBackendTrafficPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficPolicy {
    pub created: i64,
    /// Services (by name, in the policy's namespace) it targets.
    pub services: Vec<String>,
    pub retry_budget: Option<RetryBudget>,
    pub session_persistence: Option<SessionPersistence>,
    /// Why a value was refused; the policy then applies without it.
    pub error: Option<String>,
}

fn dur(
    error: &mut Option<String>,
    field: &str,
    value: Option<&String>,
    default: Duration,
) -> Duration {
    match value.map(|v| duration::parse(v)) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            error.get_or_insert(format!("{field}: {e}"));
            default
        }
        None => default,
    }
}

impl TrafficPolicy {
    pub fn from_object(p: &XBackendTrafficPolicy) -> Self {
        let mut error = None;
        let spec = &p.spec;
        let defaults = RetryBudget::default();
        let retry_budget = spec.retry_constraint.as_ref().map(|rc| {
            let budget = rc.budget.clone().unwrap_or_default();
            let min = rc.min_retry_rate.clone().unwrap_or_default();
            RetryBudget {
                percent: budget
                    .percent
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(defaults.percent),
                interval: dur(
                    &mut error,
                    "budget.interval",
                    budget.interval.as_ref(),
                    defaults.interval,
                ),
                min_retry_count: min
                    .count
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(defaults.min_retry_count),
                min_retry_interval: dur(
                    &mut error,
                    "minRetryRate.interval",
                    min.interval.as_ref(),
                    defaults.min_retry_interval,
                ),
            }
        });
        let session_persistence = spec
            .session_persistence
            .as_ref()
            .map(|s| SessionPersistence {
                name: s.session_name.clone(),
                kind: match s.r#type.as_ref().map(wire_name).as_deref() {
                    Some("Header") => trellis_policy::SessionPersistenceKind::Header,
                    _ => trellis_policy::SessionPersistenceKind::Cookie,
                },
                absolute_timeout: s.absolute_timeout.as_ref().and_then(|v| {
                    duration::parse(v)
                        .map_err(|e| {
                            error.get_or_insert(format!("sessionPersistence.absoluteTimeout: {e}"));
                        })
                        .ok()
                        .filter(|d| !d.is_zero())
                }),
                permanent: s
                    .cookie_config
                    .as_ref()
                    .and_then(|c| c.lifetime_type.as_ref())
                    .map(wire_name)
                    .as_deref()
                    == Some("Permanent"),
            });
        Self {
            created: creation_timestamp(&p.metadata),
            services: spec
                .target_refs
                .iter()
                .filter(|t| (t.group.is_empty() || t.group == "core") && t.kind == "Service")
                .map(|t| t.name.clone())
                .collect(),
            retry_budget,
            session_persistence,
            error,
        }
    }
}

/// An `XMesh`: Trellis accepts those naming its controller.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshInfo {
    pub generation: Option<i64>,
    pub ours: bool,
}

impl MeshInfo {
    pub fn from_object(m: &XMesh) -> Self {
        Self {
            generation: m.metadata.generation,
            ours: m.spec.controller_name == CONTROLLER_NAME,
        }
    }
}

/// What an AuthorizationPolicy protects.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthzTarget {
    /// Every workload of the policy's namespace.
    Namespace,
    /// Pods backing these Services (names in the policy's namespace).
    Services(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuthzInfo {
    pub meta: ResourceRef,
    pub generation: Option<i64>,
    pub target: AuthzTarget,
    pub rules: Vec<AuthzRule>,
    /// Why (part of) the policy is invalid; an invalid source is dropped,
    /// which only ever allows less.
    pub error: Option<String>,
}

impl AuthzInfo {
    pub fn from_object(p: &AuthorizationPolicy) -> Self {
        let ns = p.namespace().unwrap_or_default();
        let mut error = None;
        let mut services = Vec::new();
        let mut namespace_wide = p.spec.target_refs.is_empty();
        for t in &p.spec.target_refs {
            let core = t.group.is_empty() || t.group == "core";
            match (core, t.kind.as_str()) {
                (true, "Namespace") => namespace_wide = true,
                (true, "Service") => services.push(t.name.clone()),
                _ => {
                    error.get_or_insert(format!(
                        "unsupported targetRef {}/{} {}",
                        t.group, t.kind, t.name
                    ));
                }
            }
        }
        let rules = p
            .spec
            .rules
            .iter()
            .map(|r| AuthzRule {
                sources: r
                    .from
                    .iter()
                    .filter_map(|s| {
                        let set = usize::from(s.spiffe_id.is_some())
                            + usize::from(s.service_account.is_some())
                            + usize::from(s.namespace.is_some());
                        if set != 1 {
                            error.get_or_insert(
                                "each source names exactly one of spiffeId, serviceAccount, namespace"
                                    .to_string(),
                            );
                            return None;
                        }
                        if let Some(id) = &s.spiffe_id {
                            return SpiffeId::parse(id)
                                .map(AuthzSource::Identity)
                                .map_err(|e| {
                                    error.get_or_insert(e.to_string());
                                })
                                .ok();
                        }
                        if let Some(sa) = &s.service_account {
                            return Some(AuthzSource::ServiceAccount(ResourceRef::new(
                                sa.namespace.clone(),
                                sa.name.clone(),
                            )));
                        }
                        s.namespace.clone().map(AuthzSource::Namespace)
                    })
                    .collect(),
                ports: r.ports.clone(),
            })
            .collect();
        Self {
            meta: ResourceRef::new(ns, p.name_any()),
            generation: p.metadata.generation,
            target: if namespace_wide {
                AuthzTarget::Namespace
            } else {
                AuthzTarget::Services(services)
            },
            rules,
            error,
        }
    }
}
