//! What a workload's proxy accepts on one of its ports: protocol, mTLS mode
//! and authorization.

use crate::{Protocol, ResourceRef, SpiffeId};
use serde::{Deserialize, Serialize};

/// The resolved inbound policy for one port of one workload (pod).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InboundPolicy {
    /// The pod.
    pub workload: ResourceRef,
    /// The container port traffic arrives on.
    pub port: u16,
    pub protocol: Protocol,
    pub mtls: MtlsMode,
    pub authorization: Authorization,
}

/// Whether plaintext from unmeshed clients is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// mTLS from meshed clients, plaintext from the rest (the default).
    #[default]
    Permissive,
    /// Only mTLS; plaintext connections are closed.
    Strict,
}

/// The `AuthorizationPolicy` objects (GEP-3779 shape, `ALLOW` action) that
/// target this workload. With none, everything is allowed; with any, a
/// connection or request is allowed when at least one rule of one policy
/// matches it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub policies: Vec<AuthorizationPolicy>,
}

/// One `policy.trellis.io/v1alpha1` AuthorizationPolicy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    pub meta: ResourceRef,
    pub rules: Vec<AuthzRule>,
}

/// Sources allowed, optionally only on some ports. A rule with no sources
/// matches no one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    pub sources: Vec<AuthzSource>,
    /// Empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// Who a rule allows, judged from the verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthzSource {
    /// Exactly this SPIFFE id.
    Identity(SpiffeId),
    /// Workloads running as this service account.
    ServiceAccount(ResourceRef),
    /// Any workload of this namespace.
    Namespace(String),
}

/// The outcome of an authorization check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No policy targets the workload.
    AllowedByDefault,
    /// A rule of the named policy matched (index into `policies`).
    Allowed {
        policy: usize,
    },
    Denied,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

impl Authorization {
    /// Decides for a client (its verified identity, `None` for plaintext)
    /// reaching `port`.
    pub fn check(&self, client: Option<&SpiffeId>, port: u16) -> Decision {
        if self.policies.is_empty() {
            return Decision::AllowedByDefault;
        }
        let allowed = self.policies.iter().position(|p| {
            p.rules.iter().any(|r| {
                (r.ports.is_empty() || r.ports.contains(&port))
                    && client.is_some_and(|id| r.sources.iter().any(|s| s.matches(id)))
            })
        });
        match allowed {
            Some(policy) => Decision::Allowed { policy },
            None => Decision::Denied,
        }
    }
}

impl AuthzSource {
    pub fn matches(&self, client: &SpiffeId) -> bool {
        match self {
            AuthzSource::Identity(id) => id == client,
            AuthzSource::ServiceAccount(sa) => client.service_account().as_ref() == Some(sa),
            AuthzSource::Namespace(ns) => client
                .service_account()
                .is_some_and(|sa| &sa.namespace == ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::for_service_account("cluster.local", ns, sa)
    }

    fn policy(rules: Vec<AuthzRule>) -> Authorization {
        Authorization {
            policies: vec![AuthorizationPolicy {
                meta: ResourceRef::new("shop", "allow"),
                rules,
            }],
        }
    }

    #[test]
    fn no_policy_allows_everyone() {
        let authz = Authorization::default();
        assert_eq!(authz.check(None, 80), Decision::AllowedByDefault);
        assert_eq!(
            authz.check(Some(&id("a", "b")), 80),
            Decision::AllowedByDefault
        );
    }

    #[test]
    fn sources_and_ports() {
        let authz = policy(vec![
            AuthzRule {
                sources: vec![AuthzSource::Namespace("shop".into())],
                ports: vec![],
            },
            AuthzRule {
                sources: vec![AuthzSource::ServiceAccount(ResourceRef::new("ops", "prom"))],
                ports: vec![9090],
            },
            AuthzRule {
                sources: vec![AuthzSource::Identity(id("edge", "gw"))],
                ports: vec![],
            },
        ]);
        let cases = [
            (Some(id("shop", "web")), 80, true),
            (Some(id("shop", "anything")), 9090, true),
            (Some(id("ops", "prom")), 9090, true),
            (Some(id("ops", "prom")), 80, false),
            (Some(id("ops", "other")), 9090, false),
            (Some(id("edge", "gw")), 443, true),
            (Some(id("edge", "other")), 443, false),
            (None, 80, false),
        ];
        for (client, port, want) in cases {
            assert_eq!(
                authz.check(client.as_ref(), port).is_allowed(),
                want,
                "{client:?} on {port}"
            );
        }
    }

    #[test]
    fn empty_rule_allows_no_one() {
        let authz = policy(vec![AuthzRule::default()]);
        assert_eq!(authz.check(Some(&id("a", "b")), 80), Decision::Denied);
    }
}
