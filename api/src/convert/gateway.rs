//! Gateway configuration: listeners, their TLS and attached routes.

use super::{
    ConvertError, Result, enumeration, narrow_u16, optional, repeated, required, to_repeated,
};
use crate::proto::policy as pb;
use trellis_policy::{
    CertificatePem, GatewayPolicy, Listener, ListenerProtocol, ListenerTls, TlsMode,
};

impl From<&GatewayPolicy> for pb::GatewayPolicy {
    fn from(g: &GatewayPolicy) -> Self {
        Self {
            gateway: Some((&g.gateway).into()),
            listeners: to_repeated(&g.listeners),
        }
    }
}

/// Error paths start at `gateway`.
impl TryFrom<pb::GatewayPolicy> for GatewayPolicy {
    type Error = ConvertError;
    fn try_from(g: pb::GatewayPolicy) -> Result<Self> {
        convert(g).map_err(|e| e.in_field("gateway"))
    }
}

fn convert(g: pb::GatewayPolicy) -> Result<GatewayPolicy> {
    Ok(GatewayPolicy {
        gateway: required("gateway", g.gateway)?,
        listeners: repeated("listeners", g.listeners)?,
    })
}

impl From<&Listener> for pb::Listener {
    fn from(l: &Listener) -> Self {
        Self {
            name: l.name.clone(),
            port: l.port.into(),
            protocol: pb::listener::Protocol::from(l.protocol).into(),
            hostname: l.hostname.as_ref().map(Into::into),
            tls: l.tls.as_ref().map(Into::into),
            http_routes: to_repeated(&l.http_routes),
            grpc_routes: to_repeated(&l.grpc_routes),
            tls_routes: to_repeated(&l.tls_routes),
            tcp_routes: to_repeated(&l.tcp_routes),
        }
    }
}

impl TryFrom<pb::Listener> for Listener {
    type Error = ConvertError;
    fn try_from(l: pb::Listener) -> Result<Self> {
        Ok(Self {
            name: l.name,
            port: narrow_u16("port", l.port)?,
            protocol: enumeration::<pb::listener::Protocol, _>("protocol", l.protocol)?,
            hostname: optional("hostname", l.hostname)?,
            tls: optional("tls", l.tls)?,
            http_routes: repeated("http_routes", l.http_routes)?,
            grpc_routes: repeated("grpc_routes", l.grpc_routes)?,
            tls_routes: repeated("tls_routes", l.tls_routes)?,
            tcp_routes: repeated("tcp_routes", l.tcp_routes)?,
        })
    }
}

impl From<ListenerProtocol> for pb::listener::Protocol {
    fn from(p: ListenerProtocol) -> Self {
        match p {
            ListenerProtocol::Http => Self::Http,
            ListenerProtocol::Https => Self::Https,
            ListenerProtocol::Tls => Self::Tls,
            ListenerProtocol::Tcp => Self::Tcp,
        }
    }
}

impl From<pb::listener::Protocol> for ListenerProtocol {
    fn from(p: pb::listener::Protocol) -> Self {
        match p {
            pb::listener::Protocol::Http => Self::Http,
            pb::listener::Protocol::Https => Self::Https,
            pb::listener::Protocol::Tls => Self::Tls,
            pb::listener::Protocol::Tcp => Self::Tcp,
        }
    }
}

impl From<&ListenerTls> for pb::ListenerTls {
    fn from(t: &ListenerTls) -> Self {
        Self {
            mode: pb::listener_tls::Mode::from(t.mode).into(),
            certificates: to_repeated(&t.certificates),
        }
    }
}

impl TryFrom<pb::ListenerTls> for ListenerTls {
    type Error = ConvertError;
    fn try_from(t: pb::ListenerTls) -> Result<Self> {
        Ok(Self {
            mode: enumeration::<pb::listener_tls::Mode, _>("mode", t.mode)?,
            certificates: repeated("certificates", t.certificates)?,
        })
    }
}

impl From<TlsMode> for pb::listener_tls::Mode {
    fn from(m: TlsMode) -> Self {
        match m {
            TlsMode::Terminate => Self::Terminate,
            TlsMode::Passthrough => Self::Passthrough,
        }
    }
}

impl From<pb::listener_tls::Mode> for TlsMode {
    fn from(m: pb::listener_tls::Mode) -> Self {
        match m {
            pb::listener_tls::Mode::Terminate => Self::Terminate,
            pb::listener_tls::Mode::Passthrough => Self::Passthrough,
        }
    }
}

impl From<&CertificatePem> for pb::CertificatePem {
    fn from(c: &CertificatePem) -> Self {
        Self {
            chain_pem: c.chain_pem.clone(),
            key_pem: c.key_pem.clone(),
        }
    }
}

impl TryFrom<pb::CertificatePem> for CertificatePem {
    type Error = ConvertError;
    fn try_from(c: pb::CertificatePem) -> Result<Self> {
        Ok(Self {
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
        })
    }
}
