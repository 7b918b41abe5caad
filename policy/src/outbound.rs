//! What a client's proxy knows about one target: a Service's ClusterIP and
//! port, as seen from the client's namespace.

use crate::{Backend, GrpcRoute, HttpRoute, ResourceRef, TcpRoute, TlsRoute};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How a port's traffic is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Unknown: the proxy sniffs HTTP/1, the HTTP/2 preface or falls back to opaque.
    #[default]
    Detect,
    /// HTTP/1.x (`appProtocol: http`).
    Http1,
    /// HTTP/2 with prior knowledge (`appProtocol: kubernetes.io/h2c`, `h2c`, `http2`).
    Http2,
    /// gRPC: HTTP/2 with gRPC semantics (`appProtocol: grpc`).
    Grpc,
    /// Opaque TCP, never sniffed (`appProtocol: tcp`).
    Opaque,
    /// TLS originated by the application, routed by SNI (`appProtocol: tls`, `https`).
    Tls,
}

impl Protocol {
    /// The protocol a Service port's `appProtocol` names. Unknown or absent
    /// values mean "detect", which is what a user without annotations expects.
    pub fn from_app_protocol(app_protocol: Option<&str>) -> Protocol {
        let Some(p) = app_protocol else {
            return Protocol::Detect;
        };
        match p.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" | "kubernetes.io/ws" => Protocol::Http1,
            "h2c" | "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "tcp" | "opaque" | "mysql" | "redis" | "mongo" | "smtp" => Protocol::Opaque,
            "tls" | "https" | "kubernetes.io/wss" => Protocol::Tls,
            _ => Protocol::Detect,
        }
    }

    /// Whether traffic of this protocol is HTTP that routes apply to.
    pub fn is_http(&self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Detect => "detect",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Opaque => "opaque",
            Protocol::Tls => "tls",
        }
    }
}

/// The address a client connected to, as the proxy read it from the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target(pub SocketAddr);

/// The resolved policy for one Service port as seen by clients of one
/// namespace.
///
/// Routes are the consumer routes of the client's namespace when there are
/// any, the producer routes otherwise (the controller has already chosen). If
/// there are no HTTP or gRPC routes, HTTP traffic goes to [`Self::backend`],
/// the Service itself; likewise opaque traffic without TCP or TLS routes. If
/// there are routes and none matches, the request is answered with 404.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundPolicy {
    /// The ClusterIP and port the policy is keyed by.
    pub target: Target,
    /// The Service that owns the ClusterIP.
    pub service: ResourceRef,
    /// The Service port (not the target port).
    pub port: u16,
    /// The Service port's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_routes: Vec<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    /// The Service itself: where traffic goes when no route applies.
    pub backend: Backend,
}

impl OutboundPolicy {
    /// Whether any HTTP or gRPC route governs this target.
    pub fn has_http_routes(&self) -> bool {
        !self.http_routes.is_empty() || !self.grpc_routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn app_protocols() {
        let cases = [
            (None, Protocol::Detect),
            (Some("http"), Protocol::Http1),
            (Some("HTTP"), Protocol::Http1),
            (Some("kubernetes.io/h2c"), Protocol::Http2),
            (Some("h2c"), Protocol::Http2),
            (Some("grpc"), Protocol::Grpc),
            (Some("tcp"), Protocol::Opaque),
            (Some("tls"), Protocol::Tls),
            (Some("https"), Protocol::Tls),
            (Some("example.com/custom"), Protocol::Detect),
        ];
        for (app, want) in cases {
            assert_eq!(Protocol::from_app_protocol(app), want, "{app:?}");
        }
    }
}
