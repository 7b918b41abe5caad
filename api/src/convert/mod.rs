//! Conversions between the `trellis-policy` model and its protobuf messages.
//!
//! Every model type `policy::X` with a message `proto::policy::X` has
//!
//! - `impl From<&policy::X> for proto::X`: model → wire, infallible;
//! - `impl TryFrom<proto::X> for policy::X` with [`ConvertError`]: wire →
//!   model, refusing what the model cannot hold (a missing required message,
//!   an unknown enum number, a port above 65535, a negative duration, an
//!   invalid SPIFFE id, hostname, regular expression or IP address) with the
//!   field path and the bad value. Nothing here panics on input.
//!
//! Model enums without a message of their own (`Protocol`, `RouteKind`,
//! `MtlsMode`, ...) convert to and from their prost enums both ways
//! infallibly; unknown numbers are caught where the field is read.
//!
//! Encoding rules, chosen so that model → proto → bytes → proto → model is
//! the identity (the round-trip tests in `api/tests/` check it for every
//! message):
//!
//! - `Option<T>` of a message type is an absent message; a required model
//!   field is always sent, and its absence on the wire is an error;
//! - [`Timeouts`](trellis_policy::Timeouts) equal to its default (no
//!   timeouts) is sent as an absent message, and an absent or empty message
//!   reads back as the default;
//! - durations are `google.protobuf.Duration` (a model duration beyond
//!   `i64::MAX` seconds is sent as the largest one protobuf can hold);
//! - socket addresses are the textual IP and the port; an IPv6 address's
//!   flow label and scope id are not carried (pod and Service addresses have
//!   none).
//!
//! The top-level policies root their error paths at `outbound`, `inbound`
//! and `gateway`.

/// The conversions of a route and of its rules. HTTPRoute and GRPCRoute
/// carry the same fields in the model and on the wire (only their match and
/// retry messages differ), so one body serves both and a field added to
/// both kinds is converted in one place.
macro_rules! route_conversions {
    ($route:ident, $rule:ident) => {
        impl From<&trellis_policy::$route> for $crate::proto::policy::$route {
            fn from(r: &trellis_policy::$route) -> Self {
                Self {
                    meta: Some((&r.meta).into()),
                    hostnames: super::to_repeated(&r.hostnames),
                    rules: super::to_repeated(&r.rules),
                }
            }
        }

        impl TryFrom<$crate::proto::policy::$route> for trellis_policy::$route {
            type Error = super::ConvertError;
            fn try_from(r: $crate::proto::policy::$route) -> super::Result<Self> {
                Ok(Self {
                    meta: super::required("meta", r.meta)?,
                    hostnames: super::repeated("hostnames", r.hostnames)?,
                    rules: super::repeated("rules", r.rules)?,
                })
            }
        }

        impl From<&trellis_policy::$rule> for $crate::proto::policy::$rule {
            fn from(r: &trellis_policy::$rule) -> Self {
                Self {
                    name: r.name.clone(),
                    matches: super::to_repeated(&r.matches),
                    filters: super::to_repeated(&r.filters),
                    backends: super::to_repeated(&r.backends),
                    timeouts: super::http::timeouts_to_proto(&r.timeouts),
                    retry: r.retry.as_ref().map(Into::into),
                    session_persistence: r.session_persistence.as_ref().map(Into::into),
                }
            }
        }

        impl TryFrom<$crate::proto::policy::$rule> for trellis_policy::$rule {
            type Error = super::ConvertError;
            fn try_from(r: $crate::proto::policy::$rule) -> super::Result<Self> {
                Ok(Self {
                    name: r.name,
                    matches: super::repeated("matches", r.matches)?,
                    filters: super::repeated("filters", r.filters)?,
                    backends: super::repeated("backends", r.backends)?,
                    timeouts: super::http::timeouts_from_proto("timeouts", r.timeouts)?,
                    retry: super::optional("retry", r.retry)?,
                    session_persistence: super::optional(
                        "session_persistence",
                        r.session_persistence,
                    )?,
                })
            }
        }
    };
}

mod backend;
mod discovery;
mod error;
mod filter;
mod gateway;
mod grpc;
mod http;
mod inbound;
mod meta;
mod outbound;
mod tcp;

pub use self::discovery::{GatewayTarget, InboundTarget, OutboundTarget};
pub use self::error::{ConvertError, ErrorKind};
pub use self::meta::{duration_from_proto, duration_to_proto};

type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// A required message field: absent is [`ErrorKind::Missing`].
fn required<P, T>(field: &'static str, value: Option<P>) -> Result<T>
where
    T: TryFrom<P, Error = ConvertError>,
{
    match value {
        Some(v) => T::try_from(v).map_err(|e| e.in_field(field)),
        None => Err(ConvertError::new(ErrorKind::Missing).in_field(field)),
    }
}

/// An optional message field.
fn optional<P, T>(field: &'static str, value: Option<P>) -> Result<Option<T>>
where
    T: TryFrom<P, Error = ConvertError>,
{
    value
        .map(|v| T::try_from(v).map_err(|e| e.in_field(field)))
        .transpose()
}

/// A repeated message field.
fn repeated<P, T>(field: &'static str, values: Vec<P>) -> Result<Vec<T>>
where
    T: TryFrom<P, Error = ConvertError>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| T::try_from(v).map_err(|e| e.at_index(i).in_field(field)))
        .collect()
}

/// Model → wire for a repeated field.
fn to_repeated<'a, M: 'a, P: From<&'a M>>(values: &'a [M]) -> Vec<P> {
    values.iter().map(P::from).collect()
}

/// A `uint32` that the model holds as `u16` (ports, HTTP status codes).
fn narrow_u16(field: &'static str, value: u32) -> Result<u16> {
    u16::try_from(value).map_err(|_| {
        ConvertError::new(ErrorKind::OutOfRange {
            value: value.into(),
            max: u16::MAX.into(),
        })
        .in_field(field)
    })
}

/// Model → wire for a `u16` list (status codes, ports).
fn widen(values: &[u16]) -> Vec<u32> {
    values.iter().copied().map(u32::from).collect()
}

/// A repeated `uint32` that the model holds as `u16`.
fn narrow_u16s(field: &'static str, values: Vec<u32>) -> Result<Vec<u16>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            u16::try_from(v).map_err(|_| {
                ConvertError::new(ErrorKind::OutOfRange {
                    value: v.into(),
                    max: u16::MAX.into(),
                })
                .at_index(i)
                .in_field(field)
            })
        })
        .collect()
}

/// An enum field: the prost enum `P` read from its number, then the model
/// enum `M`.
fn enumeration<P, M>(field: &'static str, value: i32) -> Result<M>
where
    P: TryFrom<i32>,
    M: From<P>,
{
    P::try_from(value)
        .map(M::from)
        .map_err(|_| ConvertError::new(ErrorKind::UnknownEnum(value)).in_field(field))
}
