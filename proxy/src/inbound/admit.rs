//! Who may reach the application on a port: the port's mTLS mode, then its
//! authorization, judged from the client identity the mesh TLS handshake
//! verified (`None` for a plaintext client).
//!
//! ```text
//!  client id, port, inbound policy ──► strict and plaintext? ──► refused (connection closed)
//!                                  └─► Authorization::check ──► denied: HTTP 403 / TCP closed
//!                                                          └─► allowed
//! ```
//!
//! A port whose policy is unknown (no policy source, or the controller
//! never answered) is treated as permissive with no authorization policy,
//! what an empty policy means.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use std::sync::{Arc, OnceLock};
use trellis_policy::{InboundPolicy, MtlsMode, SpiffeId, inbound::Decision};

/// Why a client was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Plaintext on a port whose mTLS mode is strict.
    Plaintext,
    /// No rule of the AuthorizationPolicies targeting the workload matches.
    Denied,
}

impl Refusal {
    /// The reason the proxy gives (`x-trellis-proxy-error`, logs).
    pub fn reason(&self, port: u16) -> String {
        match self {
            Refusal::Plaintext => format!("port {port} accepts mTLS only"),
            Refusal::Denied => format!("not authorized on port {port}"),
        }
    }
}

/// Decides for `client` reaching `port` under `policy`.
pub fn admit(
    policy: Option<&InboundPolicy>,
    client: Option<&SpiffeId>,
    port: u16,
) -> Result<Decision, Refusal> {
    let Some(policy) = policy else {
        return Ok(Decision::AllowedByDefault);
    };
    if policy.mtls == MtlsMode::Strict && client.is_none() {
        return Err(Refusal::Plaintext);
    }
    match policy.authorization.check(client, port) {
        Decision::Denied => Err(Refusal::Denied),
        allowed => Ok(allowed),
    }
}

/// How the refused or admitted traffic was carried, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carried {
    Http,
    Tcp,
}

impl Carried {
    fn as_str(&self) -> &'static str {
        match self {
            Carried::Http => "http",
            Carried::Tcp => "tcp",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    port: u16,
    protocol: &'static str,
    /// `allow` or `deny`.
    decision: &'static str,
    /// `namespace/name` of the AuthorizationPolicy that allowed; empty when
    /// none targets the workload, or when denied.
    policy: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: u16,
}

/// Metrics of admission; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AdmitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    plaintext_refused: Family<PortLabels, Counter>,
}

fn no_policy() -> Arc<str> {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    NONE.clone()
}

impl AdmitMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trellis_inbound_authorization_decisions",
            "Inbound authorization decisions (per HTTP request, per TCP connection), by port, protocol, decision and allowing policy",
            self.decisions.clone(),
        );
        registry.register(
            "trellis_inbound_plaintext_refused",
            "Plaintext connections closed because the port's mTLS mode is strict",
            self.plaintext_refused.clone(),
        );
    }

    /// Counts the outcome of [`admit`].
    pub fn record(
        &self,
        policy: Option<&InboundPolicy>,
        port: u16,
        carried: Carried,
        outcome: &Result<Decision, Refusal>,
    ) {
        self.record_cached(policy, port, carried, outcome, &OnceLock::new());
    }

    /// As [`Self::record`], with the counter of the commonest outcome (allowed,
    /// no AuthorizationPolicy to name) kept in `allowed` by the caller, per
    /// port and protocol, so the hot path skips the family lookup.
    pub fn record_cached(
        &self,
        policy: Option<&InboundPolicy>,
        port: u16,
        carried: Carried,
        outcome: &Result<Decision, Refusal>,
        allowed: &OnceLock<Counter>,
    ) {
        let named = |i: usize| policy.and_then(|p| p.authorization.policies.get(i));
        let unnamed = match outcome {
            Ok(Decision::Allowed { policy: i }) => named(*i).is_none(),
            Ok(_) => true,
            Err(_) => false,
        };
        if unnamed {
            allowed
                .get_or_init(|| {
                    self.decisions
                        .get_or_create(&DecisionLabels {
                            port,
                            protocol: carried.as_str(),
                            decision: "allow",
                            policy: no_policy(),
                        })
                        .clone()
                })
                .inc();
            return;
        }
        let (decision, name) = match outcome {
            Err(Refusal::Plaintext) => {
                self.plaintext_refused
                    .get_or_create(&PortLabels { port })
                    .inc();
                return;
            }
            Err(Refusal::Denied) => ("deny", no_policy()),
            Ok(Decision::Allowed { policy: i }) => {
                let name = policy
                    .and_then(|p| p.authorization.policies.get(*i))
                    .map(|p| Arc::from(p.meta.to_string()))
                    .unwrap_or_else(no_policy);
                ("allow", name)
            }
            Ok(_) => ("allow", no_policy()),
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                port,
                protocol: carried.as_str(),
                decision,
                policy: name,
            })
            .inc();
    }

    /// How many decisions were counted with these labels (tests, diagnostics).
    pub fn decisions(&self, port: u16, carried: Carried, allowed: bool, policy: &str) -> u64 {
        self.decisions
            .get_or_create(&DecisionLabels {
                port,
                protocol: carried.as_str(),
                decision: if allowed { "allow" } else { "deny" },
                policy: Arc::from(policy),
            })
            .get()
    }

    pub fn plaintext_refused(&self, port: u16) -> u64 {
        self.plaintext_refused
            .get_or_create(&PortLabels { port })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_policy::{AuthorizationPolicy, AuthzRule, AuthzSource, ResourceRef};

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::for_service_account("cluster.local", ns, sa)
    }

    fn policy(mtls: MtlsMode, allow_ns: Option<&str>) -> InboundPolicy {
        let mut p = InboundPolicy {
            port: 8080,
            mtls,
            ..InboundPolicy::default()
        };
        if let Some(ns) = allow_ns {
            p.authorization.policies.push(AuthorizationPolicy {
                meta: ResourceRef::new("shop", "allow-shop"),
                rules: vec![AuthzRule {
                    sources: vec![AuthzSource::Namespace(ns.into())],
                    ports: vec![],
                }],
            });
        }
        p
    }

    #[test]
    fn modes_and_authorization_decide_in_order() {
        use MtlsMode::*;
        let web = id("shop", "web");
        let other = id("ops", "prom");
        type Case<'a> = (
            Option<InboundPolicy>,
            Option<&'a SpiffeId>,
            Result<(), Refusal>,
        );
        let cases: &[Case<'_>] = &[
            (None, None, Ok(())),
            (Some(policy(Permissive, None)), None, Ok(())),
            (Some(policy(Permissive, None)), Some(&web), Ok(())),
            (Some(policy(Strict, None)), None, Err(Refusal::Plaintext)),
            (Some(policy(Strict, None)), Some(&web), Ok(())),
            (Some(policy(Strict, Some("shop"))), Some(&web), Ok(())),
            (
                Some(policy(Strict, Some("shop"))),
                Some(&other),
                Err(Refusal::Denied),
            ),
            // Plaintext is refused first: the mode, then the policy.
            (
                Some(policy(Strict, Some("shop"))),
                None,
                Err(Refusal::Plaintext),
            ),
            (
                Some(policy(Permissive, Some("shop"))),
                None,
                Err(Refusal::Denied),
            ),
        ];
        for (p, client, want) in cases {
            let got = admit(p.as_ref(), *client, 8080).map(|_| ());
            assert_eq!(&got, want, "{p:?} {client:?}");
        }
    }

    #[test]
    fn decisions_are_counted_with_the_allowing_policy() {
        let m = AdmitMetrics::default();
        let p = policy(MtlsMode::Permissive, Some("shop"));
        let web = id("shop", "web");
        for client in [Some(&web), None] {
            let outcome = admit(Some(&p), client, 8080);
            m.record(Some(&p), 8080, Carried::Http, &outcome);
        }
        let strict = policy(MtlsMode::Strict, None);
        m.record(
            Some(&strict),
            9090,
            Carried::Tcp,
            &admit(Some(&strict), None, 9090),
        );
        assert_eq!(m.decisions(8080, Carried::Http, true, "shop/allow-shop"), 1);
        assert_eq!(m.decisions(8080, Carried::Http, false, ""), 1);
        assert_eq!(m.plaintext_refused(9090), 1);
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains(r#"trellis_inbound_authorization_decisions_total{port="8080",protocol="http",decision="allow",policy="shop/allow-shop"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"trellis_inbound_plaintext_refused_total{port="9090"} 1"#),
            "{text}"
        );
    }
}
