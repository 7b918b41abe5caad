//! Where traffic goes: backends of a route rule and their endpoints.

use crate::{Protocol, ResourceRef, SpiffeId, duration::serde_duration};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

/// A route's backend after the controller resolved its reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    /// A Service port with its ready endpoints.
    Service(ServiceBackend),
    /// A reference that could not be resolved (unknown kind, missing
    /// Service, refused cross-namespace reference, missing port). Requests
    /// sent to it are answered with 500; it never breaks the other backends.
    Invalid {
        /// The reference as written, e.g. `Service ns/name:port`.
        name: String,
        /// Why it is invalid, e.g. `service ns/name not found`.
        message: String,
    },
}

impl Backend {
    /// A short name for metrics labels and logs.
    pub fn name(&self) -> String {
        match self {
            Backend::Service(s) => format!("{}:{}", s.service, s.port),
            Backend::Invalid { name, .. } => name.clone(),
        }
    }
}

/// A Service port as a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    pub service: ResourceRef,
    /// The Service port.
    pub port: u16,
    /// `name.namespace.svc.<cluster-domain>:port`, for the `Host` of
    /// requests whose route rewrites nothing and for logs.
    pub authority: String,
    /// The backend port's `appProtocol`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Ready endpoints, with target ports already resolved.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// From an `XBackendTrafficPolicy` that targets the Service; absent means
    /// the proxy's default budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// One ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The pod IP and the resolved target port.
    pub addr: SocketAddr,
    /// The SPIFFE id of the endpoint's workload. Present exactly when the
    /// endpoint's pod runs a Trellis sidecar (it is meshed): then traffic to
    /// it is carried over mTLS and the server must prove this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<SpiffeId>,
    /// The pod behind the endpoint, for metrics and diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ResourceRef>,
    /// The topology zone, when the EndpointSlice names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Endpoint {
    pub fn is_meshed(&self) -> bool {
        self.identity.is_some()
    }
}

/// A backend with a weight (TCP and TLS routes; HTTP uses
/// [`crate::HttpBackend`], which adds filters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedBackend {
    pub backend: Backend,
    pub weight: u32,
}

/// How many retries a backend tolerates: `XBackendTrafficPolicy`
/// `retryConstraint`. Retries may add at most `percent` % to the requests of
/// the last `interval`, but `min_retry_count` retries per
/// `min_retry_interval` are always allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    pub percent: u32,
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    pub min_retry_count: u32,
    #[serde(with = "serde_duration")]
    pub min_retry_interval: Duration,
}

impl Default for RetryBudget {
    /// The spec's defaults: 20 % over 10 s, at least 10 retries per second.
    fn default() -> Self {
        Self {
            percent: 20,
            interval: Duration::from_secs(10),
            min_retry_count: 10,
            min_retry_interval: Duration::from_secs(1),
        }
    }
}
