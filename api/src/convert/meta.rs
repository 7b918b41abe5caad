//! Names, identities, addresses, durations, hostnames and the protocol enum.

use super::{ConvertError, ErrorKind, Result, enumeration, narrow_u16};
use crate::proto::policy as pb;
use std::{net::IpAddr, time::Duration};
use trellis_policy::{HostMatch, Protocol, ResourceRef, RouteKind, RouteRef, SpiffeId, Target};

impl From<&ResourceRef> for pb::ResourceRef {
    fn from(r: &ResourceRef) -> Self {
        Self {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

impl TryFrom<pb::ResourceRef> for ResourceRef {
    type Error = ConvertError;
    fn try_from(r: pb::ResourceRef) -> Result<Self> {
        Ok(Self {
            namespace: r.namespace,
            name: r.name,
        })
    }
}

impl From<&RouteRef> for pb::RouteRef {
    fn from(r: &RouteRef) -> Self {
        Self {
            kind: pb::route_ref::Kind::from(r.kind).into(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            creation_timestamp: r.creation_timestamp,
        }
    }
}

impl TryFrom<pb::RouteRef> for RouteRef {
    type Error = ConvertError;
    fn try_from(r: pb::RouteRef) -> Result<Self> {
        Ok(Self {
            kind: enumeration::<pb::route_ref::Kind, _>("kind", r.kind)?,
            namespace: r.namespace,
            name: r.name,
            creation_timestamp: r.creation_timestamp,
        })
    }
}

impl From<RouteKind> for pb::route_ref::Kind {
    fn from(k: RouteKind) -> Self {
        match k {
            RouteKind::Default => Self::Default,
            RouteKind::HttpRoute => Self::HttpRoute,
            RouteKind::GrpcRoute => Self::GrpcRoute,
            RouteKind::TcpRoute => Self::TcpRoute,
            RouteKind::TlsRoute => Self::TlsRoute,
        }
    }
}

impl From<pb::route_ref::Kind> for RouteKind {
    fn from(k: pb::route_ref::Kind) -> Self {
        use pb::route_ref::Kind;
        match k {
            Kind::Default => Self::Default,
            Kind::HttpRoute => Self::HttpRoute,
            Kind::GrpcRoute => Self::GrpcRoute,
            Kind::TcpRoute => Self::TcpRoute,
            Kind::TlsRoute => Self::TlsRoute,
        }
    }
}

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Detect => Self::Detect,
            Protocol::Http1 => Self::Http1,
            Protocol::Http2 => Self::Http2,
            Protocol::Grpc => Self::Grpc,
            Protocol::Opaque => Self::Opaque,
            Protocol::Tls => Self::Tls,
        }
    }
}

impl From<pb::Protocol> for Protocol {
    fn from(p: pb::Protocol) -> Self {
        match p {
            pb::Protocol::Detect => Self::Detect,
            pb::Protocol::Http1 => Self::Http1,
            pb::Protocol::Http2 => Self::Http2,
            pb::Protocol::Grpc => Self::Grpc,
            pb::Protocol::Opaque => Self::Opaque,
            pb::Protocol::Tls => Self::Tls,
        }
    }
}

/// A `Protocol` enum field.
pub(super) fn protocol(field: &'static str, value: i32) -> Result<Protocol> {
    enumeration::<pb::Protocol, _>(field, value)
}

impl From<&std::net::SocketAddr> for pb::SocketAddr {
    fn from(a: &std::net::SocketAddr) -> Self {
        Self {
            ip: a.ip().to_string(),
            port: a.port().into(),
        }
    }
}

impl From<std::net::SocketAddr> for pb::SocketAddr {
    fn from(a: std::net::SocketAddr) -> Self {
        Self::from(&a)
    }
}

impl TryFrom<pb::SocketAddr> for std::net::SocketAddr {
    type Error = ConvertError;
    fn try_from(a: pb::SocketAddr) -> Result<Self> {
        let ip: IpAddr =
            a.ip.parse()
                .map_err(|_| ConvertError::new(ErrorKind::IpAddr(a.ip.clone())).in_field("ip"))?;
        let port = narrow_u16("port", a.port)?;
        Ok(Self::new(ip, port))
    }
}

impl From<&Target> for pb::SocketAddr {
    fn from(t: &Target) -> Self {
        Self::from(&t.0)
    }
}

impl TryFrom<pb::SocketAddr> for Target {
    type Error = ConvertError;
    fn try_from(a: pb::SocketAddr) -> Result<Self> {
        std::net::SocketAddr::try_from(a).map(Target)
    }
}

/// A SPIFFE id carried as a string.
pub(super) fn spiffe_id(field: &'static str, value: String) -> Result<SpiffeId> {
    SpiffeId::try_from(value).map_err(|e| ConvertError::from(e).in_field(field))
}

impl From<&HostMatch> for pb::HostMatch {
    fn from(h: &HostMatch) -> Self {
        use pb::host_match::Kind;
        Self {
            kind: Some(match h {
                HostMatch::Exact(name) => Kind::Exact(name.clone()),
                HostMatch::Wildcard(suffix) => Kind::Wildcard(suffix.clone()),
            }),
        }
    }
}

/// Both variants are validated as [`HostMatch::parse`] does (and lower-cased
/// as it does); the exact one must not be a wildcard and the wildcard's
/// suffix must be a plain name.
impl TryFrom<pb::HostMatch> for HostMatch {
    type Error = ConvertError;
    fn try_from(h: pb::HostMatch) -> Result<Self> {
        use pb::host_match::Kind;
        match h.kind {
            Some(Kind::Exact(name)) => match HostMatch::parse(&name) {
                Ok(exact @ HostMatch::Exact(_)) => Ok(exact),
                Ok(HostMatch::Wildcard(_)) => {
                    Err(ConvertError::new(ErrorKind::UnexpectedWildcard(name)).in_field("exact"))
                }
                Err(e) => Err(ConvertError::from(e).in_field("exact")),
            },
            Some(Kind::Wildcard(suffix)) => match HostMatch::parse(&suffix) {
                Ok(HostMatch::Exact(suffix)) => Ok(HostMatch::Wildcard(suffix)),
                Ok(HostMatch::Wildcard(_)) => {
                    Err(ConvertError::new(ErrorKind::UnexpectedWildcard(suffix))
                        .in_field("wildcard"))
                }
                Err(e) => Err(ConvertError::from(e).in_field("wildcard")),
            },
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

/// Model → wire for a duration. Durations beyond what protobuf holds
/// (`i64::MAX` seconds) saturate; no Gateway API duration comes near.
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    match i64::try_from(d.as_secs()) {
        Ok(seconds) => prost_types::Duration {
            seconds,
            // Always below 10⁹, so it fits.
            nanos: d.subsec_nanos() as i32,
        },
        Err(_) => prost_types::Duration {
            seconds: i64::MAX,
            nanos: 999_999_999,
        },
    }
}

/// Wire → model for a duration: it must be non-negative and normalized
/// (`0 <= nanos < 10⁹`).
pub fn duration_from_proto(d: prost_types::Duration) -> Result<Duration> {
    let err = |reason| {
        ConvertError::new(ErrorKind::Duration {
            seconds: d.seconds,
            nanos: d.nanos,
            reason,
        })
    };
    let seconds = u64::try_from(d.seconds).map_err(|_| err("negative"))?;
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| err("nanos must be in 0..1000000000"))?;
    Ok(Duration::new(seconds, nanos))
}

/// A required duration field.
pub(super) fn required_duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Duration> {
    match d {
        Some(d) => duration_from_proto(d).map_err(|e| e.in_field(field)),
        None => Err(ConvertError::new(ErrorKind::Missing).in_field(field)),
    }
}

/// An optional duration field.
pub(super) fn optional_duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>> {
    d.map(|d| duration_from_proto(d).map_err(|e| e.in_field(field)))
        .transpose()
}
