//! The one error of wire → model conversions: what was wrong, and where.

use std::fmt;
use trellis_policy::{http::InvalidHostname, meta::InvalidSpiffeId, regex::InvalidRegex};

/// A protobuf message that does not describe a valid model value.
///
/// It names the field path from the converted message down to the bad field
/// and the bad value, e.g.
/// `outbound.http_routes[2].rules[0].matches[1].path.regex: invalid regular
/// expression "(": ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{kind}", self.path, if self.path.is_empty() { "" } else { ": " })]
pub struct ConvertError {
    path: FieldPath,
    kind: ErrorKind,
}

/// What was wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A message field the model requires is absent.
    #[error("required field is missing")]
    Missing,
    /// A `oneof` with none of its variants set.
    #[error("none of the variants of the oneof is set")]
    NoVariant,
    /// An enum number this version does not know.
    #[error("unknown enum value {0}")]
    UnknownEnum(i32),
    /// A number that does not fit the model's type (ports, status codes).
    #[error("{value} is out of range (at most {max})")]
    OutOfRange { value: u64, max: u64 },
    /// A `google.protobuf.Duration` that is negative or not normalized.
    #[error("invalid duration {seconds}s {nanos}ns: {reason}")]
    Duration {
        seconds: i64,
        nanos: i32,
        reason: &'static str,
    },
    #[error("invalid IP address {0:?}")]
    IpAddr(String),
    #[error(transparent)]
    SpiffeId(#[from] InvalidSpiffeId),
    #[error(transparent)]
    Hostname(#[from] InvalidHostname),
    /// `*.example.com` given where an exact hostname is expected (the
    /// wildcard variant carries only the suffix).
    #[error("wildcard hostname {0:?} where an exact hostname is expected")]
    UnexpectedWildcard(String),
    #[error(transparent)]
    Regex(#[from] InvalidRegex),
}

impl ConvertError {
    /// An error at the root of the message being converted; callers up the
    /// tree prepend their field names with [`Self::in_field`] and
    /// [`Self::at_index`].
    pub fn new(kind: impl Into<ErrorKind>) -> Self {
        Self {
            path: FieldPath::default(),
            kind: kind.into(),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where, e.g. `http_routes[2].rules[0].timeouts.request`; empty when the
    /// converted message itself was wrong.
    pub fn path(&self) -> String {
        self.path.to_string()
    }

    /// The same error, one field further from the root.
    pub fn in_field(mut self, name: &'static str) -> Self {
        self.path.reversed.push(Segment::Field(name));
        self
    }

    /// The same error, inside element `index` of a repeated field.
    pub fn at_index(mut self, index: usize) -> Self {
        self.path.reversed.push(Segment::Index(index));
        self
    }
}

impl From<ErrorKind> for ConvertError {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl From<InvalidSpiffeId> for ConvertError {
    fn from(e: InvalidSpiffeId) -> Self {
        Self::new(e)
    }
}

impl From<InvalidHostname> for ConvertError {
    fn from(e: InvalidHostname) -> Self {
        Self::new(e)
    }
}

impl From<InvalidRegex> for ConvertError {
    fn from(e: InvalidRegex) -> Self {
        Self::new(e)
    }
}

/// Segments are pushed while the error travels up to the root, so they are
/// stored leaf first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FieldPath {
    reversed: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Field(&'static str),
    Index(usize),
}

impl FieldPath {
    fn is_empty(&self) -> bool {
        self.reversed.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.reversed.iter().rev().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A request that does not convert is the caller's fault: `InvalidArgument`,
/// with the path and value in the message.
impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}
