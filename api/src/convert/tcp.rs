//! Opaque routes: TCP by port, TLS by SNI.

use super::{ConvertError, Result, repeated, required, to_repeated};
use crate::proto::policy as pb;
use trellis_policy::{TcpRoute, TcpRule, TlsRoute};

impl From<&TcpRoute> for pb::TcpRoute {
    fn from(r: &TcpRoute) -> Self {
        Self {
            meta: Some((&r.meta).into()),
            rules: to_repeated(&r.rules),
        }
    }
}

impl TryFrom<pb::TcpRoute> for TcpRoute {
    type Error = ConvertError;
    fn try_from(r: pb::TcpRoute) -> Result<Self> {
        Ok(Self {
            meta: required("meta", r.meta)?,
            rules: repeated("rules", r.rules)?,
        })
    }
}

impl From<&TlsRoute> for pb::TlsRoute {
    fn from(r: &TlsRoute) -> Self {
        Self {
            meta: Some((&r.meta).into()),
            hostnames: to_repeated(&r.hostnames),
            rules: to_repeated(&r.rules),
        }
    }
}

impl TryFrom<pb::TlsRoute> for TlsRoute {
    type Error = ConvertError;
    fn try_from(r: pb::TlsRoute) -> Result<Self> {
        Ok(Self {
            meta: required("meta", r.meta)?,
            hostnames: repeated("hostnames", r.hostnames)?,
            rules: repeated("rules", r.rules)?,
        })
    }
}

impl From<&TcpRule> for pb::TcpRule {
    fn from(r: &TcpRule) -> Self {
        Self {
            name: r.name.clone(),
            backends: to_repeated(&r.backends),
        }
    }
}

impl TryFrom<pb::TcpRule> for TcpRule {
    type Error = ConvertError;
    fn try_from(r: pb::TcpRule) -> Result<Self> {
        Ok(Self {
            name: r.name,
            backends: repeated("backends", r.backends)?,
        })
    }
}
