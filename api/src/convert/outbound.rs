//! The outbound policy of one target.

use super::{ConvertError, Result, meta::protocol, narrow_u16, repeated, required, to_repeated};
use crate::proto::policy as pb;
use trellis_policy::OutboundPolicy;

impl From<&OutboundPolicy> for pb::OutboundPolicy {
    fn from(p: &OutboundPolicy) -> Self {
        Self {
            target: Some((&p.target).into()),
            service: Some((&p.service).into()),
            port: p.port.into(),
            port_name: p.port_name.clone(),
            protocol: pb::Protocol::from(p.protocol).into(),
            http_routes: to_repeated(&p.http_routes),
            grpc_routes: to_repeated(&p.grpc_routes),
            tcp_routes: to_repeated(&p.tcp_routes),
            tls_routes: to_repeated(&p.tls_routes),
            backend: Some((&p.backend).into()),
        }
    }
}

/// Error paths start at `outbound`.
impl TryFrom<pb::OutboundPolicy> for OutboundPolicy {
    type Error = ConvertError;
    fn try_from(p: pb::OutboundPolicy) -> Result<Self> {
        convert(p).map_err(|e| e.in_field("outbound"))
    }
}

fn convert(p: pb::OutboundPolicy) -> Result<OutboundPolicy> {
    Ok(OutboundPolicy {
        target: required("target", p.target)?,
        service: required("service", p.service)?,
        port: narrow_u16("port", p.port)?,
        port_name: p.port_name,
        protocol: protocol("protocol", p.protocol)?,
        http_routes: repeated("http_routes", p.http_routes)?,
        grpc_routes: repeated("grpc_routes", p.grpc_routes)?,
        tcp_routes: repeated("tcp_routes", p.tcp_routes)?,
        tls_routes: repeated("tls_routes", p.tls_routes)?,
        backend: required("backend", p.backend)?,
    })
}
