//! HTTP routes: `HTTPRoute` rules after the controller resolved them.

use crate::{Backend, RouteRef, duration::serde_opt_duration, filter::HttpFilter, regex::Regex};
use serde::{Deserialize, Serialize};
use std::{fmt, time::Duration};

/// An HTTPRoute (or the controller's default route) attached to a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub meta: RouteRef,
    /// Empty matches every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<HostMatch>,
    pub rules: Vec<HttpRule>,
}

/// One rule of an HTTPRoute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRule {
    /// `rules[].name` (the NamedRouteRule feature), for metrics and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these selects the rule. The controller fills the spec's
    /// default (PathPrefix `/`) so this is never empty for a real route; an
    /// empty list matches every request.
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
    /// Empty (with no redirect filter) means the rule answers 500, as the spec
    /// requires for a rule without backends.
    #[serde(default)]
    pub backends: Vec<HttpBackend>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// A weighted backend of an HTTP or gRPC rule, with its own filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpBackend {
    pub backend: Backend,
    /// Relative weight; 0 means never chosen.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
}

/// `HTTPRouteMatch`: every present condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// Upper-case method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// How a request path is matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The whole path, byte for byte.
    Exact(String),
    /// A prefix of whole path elements: `/v2` matches `/v2`, `/v2/` and
    /// `/v2/x` but not `/v2example`. A trailing slash in the prefix is
    /// ignored.
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(Regex),
}

/// A header condition. Header names compare case-insensitively; the name is
/// stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// A query parameter condition. Names compare exactly (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryParamMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// How a header or query value is matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

/// A route hostname: `example.com` or the wildcard `*.example.com`, which
/// matches any name with at least one more label (`a.example.com`,
/// `a.b.example.com`) and not `example.com` itself. Stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostMatch {
    Exact(String),
    /// The suffix after `*.`: `example.com` for `*.example.com`.
    Wildcard(String),
}

/// A hostname that is not a valid route hostname.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname {0:?}")]
pub struct InvalidHostname(pub String);

impl HostMatch {
    pub fn parse(value: &str) -> Result<Self, InvalidHostname> {
        let lower = value.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(InvalidHostname(value.to_string()));
        }
        Ok(if wildcard {
            HostMatch::Wildcard(name)
        } else {
            HostMatch::Exact(name)
        })
    }

    /// Whether a request host (without port, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl TryFrom<String> for HostMatch {
    type Error = InvalidHostname;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HostMatch> for String {
    fn from(h: HostMatch) -> String {
        h.to_string()
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// `rules[].timeouts`. A zero duration in the route disables that timeout;
/// the controller turns it into `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Bounds the whole exchange, retries included (answered with 504).
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub request: Option<Duration>,
    /// Bounds each attempt to a backend.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_request: Option<Duration>,
}

/// `rules[].retry` of an HTTPRoute (experimental channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Status codes that make a response retryable. Connection errors (reset,
    /// refused, timed out before a response) are always retryable.
    #[serde(default)]
    pub codes: Vec<u16>,
    /// Retries after the first attempt. The spec's default is 2 when `retry`
    /// is present without `attempts`; the controller fills it in.
    pub attempts: u32,
    /// Minimum wait before a retry.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}

/// `rules[].sessionPersistence` (experimental channel), or the one of an
/// `XBackendTrafficPolicy` targeting the backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistence {
    /// Cookie or header name; the proxy picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: SessionPersistenceKind,
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub absolute_timeout: Option<Duration>,
    /// `cookieConfig.lifetimeType: Permanent`.
    #[serde(default)]
    pub permanent: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionPersistenceKind {
    #[default]
    Cookie,
    Header,
}
