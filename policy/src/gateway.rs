//! What a gateway proxy serves: one entry per Gateway listener with the routes
//! attached to it.

use crate::{GrpcRoute, HostMatch, HttpRoute, ResourceRef, TcpRoute, TlsRoute};
use serde::{Deserialize, Serialize};

/// The resolved configuration of one Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayPolicy {
    pub gateway: ResourceRef,
    pub listeners: Vec<Listener>,
}

/// One accepted listener. Listeners on the same port share a socket; the
/// proxy picks the listener by SNI or Host, most specific hostname first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<HostMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Routes attached to this listener, hostnames already intersected with
    /// the listener's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_routes: Vec<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    Tls,
    Tcp,
}

/// TLS settings of an HTTPS or TLS listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerTls {
    pub mode: TlsMode,
    /// Certificates resolved from `certificateRefs` (Secrets of type
    /// `kubernetes.io/tls`), chosen by SNI. Empty in `Passthrough` mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificatePem>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsMode {
    #[default]
    Terminate,
    Passthrough,
}

/// A certificate chain and its private key, PEM encoded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatePem {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificatePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private keys never reach a log line.
        f.debug_struct("CertificatePem")
            .field("chain_pem", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}
