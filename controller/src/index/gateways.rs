//! Gateways (north-south), reduced: GatewayClasses, Gateways and the TLS
//! Secrets their listeners refer to.

use crate::index::store::tls_secret;
use gateway_api::experimental::{gatewayclasses::GatewayClass, gateways::Gateway};
use k8s_openapi::api::core::v1::Secret;
use trellis_api::contract::CONTROLLER_NAME;

#[derive(Clone, Debug, PartialEq)]
pub struct ClassInfo {
    pub generation: Option<i64>,
    /// `controllerName` is `trellis.io/controller`.
    pub ours: bool,
}

impl ClassInfo {
    pub fn from_object(c: &GatewayClass) -> Self {
        Self {
            generation: c.metadata.generation,
            ours: c.spec.controller_name == CONTROLLER_NAME,
        }
    }
}

/// A Gateway as written; resolving it needs routes, namespaces and Secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayInfo {
    pub object: Gateway,
}

/// A `kubernetes.io/tls` Secret (other Secrets are not kept).
#[derive(Clone, PartialEq)]
pub struct SecretInfo {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SecretInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private keys never reach a log line.
        f.debug_struct("SecretInfo").finish_non_exhaustive()
    }
}

impl SecretInfo {
    pub fn from_object(s: &Secret) -> Option<Self> {
        let (chain_pem, key_pem) = tls_secret(s)?;
        Some(Self { chain_pem, key_pem })
    }
}
