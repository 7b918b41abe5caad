//! Opaque routes: `TCPRoute` (by port) and `TLSRoute` (by SNI).

use crate::{HostMatch, RouteRef, WeightedBackend};
use serde::{Deserialize, Serialize};

/// A TCPRoute attached to a target: its (single, in v1.6) rule forwards each
/// connection to one backend by weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpRoute {
    pub meta: RouteRef,
    pub rules: Vec<TcpRule>,
}

/// A TLSRoute: connections whose ClientHello SNI matches `hostnames` are
/// forwarded, still encrypted, to a backend by weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsRoute {
    pub meta: RouteRef,
    pub hostnames: Vec<HostMatch>,
    pub rules: Vec<TcpRule>,
}

/// One rule of a TCPRoute or TLSRoute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Empty, all weights zero or all invalid: connections are refused.
    pub backends: Vec<WeightedBackend>,
}
