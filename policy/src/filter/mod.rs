//! Route filters: the data of each Gateway API filter. The functions that
//! apply them to a request or response live in the submodules and are pure:
//!
//! - [`HeaderModifier::apply`]: `RequestHeaderModifier` /
//!   `ResponseHeaderModifier` on a `HeaderMap`;
//! - [`rewrite`]: `URLRewrite` (hostname, `ReplaceFullPath`,
//!   `ReplacePrefixMatch`) into a new path and authority;
//! - [`redirect`]: `RequestRedirect` into a status and `Location`;
//! - [`Cors::evaluate`]: answer a preflight, or the headers an actual
//!   response gets.
//!
//! Each returns a [`FilterError`] rather than skip a filter it cannot apply:
//! the spec says such a request gets an error response (the proxy answers
//! 500), never a silently unfiltered one.

mod cors;
mod headers;
mod path;

pub use self::cors::{CorsAction, CorsResponse};
pub use self::path::{Redirect, Rewritten, redirect, replace_path, rewrite};

use crate::Backend;
use serde::{Deserialize, Serialize};

/// Why a filter could not be applied to a request. The proxy answers 500;
/// the controller can call the `validate` functions to report the same
/// problem in the route's status instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid value {value:?} for header {name:?}")]
    InvalidHeaderValue { name: String, value: String },
    #[error(
        "replacePrefixMatch {replacement:?} needs a PathPrefix match, but the rule matched with {matched}"
    )]
    PrefixReplacementWithoutPrefix {
        replacement: String,
        matched: String,
    },
    #[error("path {path:?} does not start with the matched prefix {prefix:?}")]
    PrefixMismatch { prefix: String, path: String },
    #[error("redirect scheme {0:?} is neither http nor https")]
    InvalidScheme(String),
    #[error("redirect status {0} is not one of 301, 302, 303, 307 or 308")]
    InvalidStatus(u16),
    #[error("invalid hostname {0:?}")]
    InvalidHostname(String),
    #[error("invalid rewritten or redirected URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
}

/// A filter of a rule or of one backend of a rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    /// Answered by the client-side proxy itself; no backend is called.
    RequestRedirect(RequestRedirect),
    UrlRewrite(UrlRewrite),
    RequestMirror(RequestMirror),
    Cors(Cors),
    /// A filter Trellis cannot apply (an unknown `ExtensionRef`, a filter not
    /// valid on this route kind, conflicting filters). The spec requires the
    /// rule to answer 500 rather than to skip the filter.
    Invalid {
        message: String,
    },
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Replace the header's values with this one (or add it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append to the header's values (or add it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Remove the header (names, any case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name (lower-case) and value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// How a rewrite or redirect replaces the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replace the part matched by the rule's `PathPrefix` match; only valid
    /// with such a match.
    ReplacePrefixMatch(String),
}

/// `RequestRedirect`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: u16,
}

/// `URLRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// `RequestMirror`: a copy of the request goes to `backend`; its response is
/// discarded and its failure never affects the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestMirror {
    pub backend: Backend,
    /// The share of requests mirrored (`percent` becomes `n/100`; absent
    /// means all).
    pub fraction: Fraction,
}

/// `numerator / denominator`, with `numerator <= denominator` and a
/// non-zero denominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    pub const ALL: Fraction = Fraction {
        numerator: 1,
        denominator: 1,
    };

    /// Whether a uniformly random `r` selects this share.
    pub fn selects(&self, r: u64) -> bool {
        self.denominator != 0 && (r % u64::from(self.denominator)) < u64::from(self.numerator)
    }
}

/// `CORS` (Gateway API v1.6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Origins (`scheme://host[:port]`), `*`, or wildcard hosts like
    /// `https://*.example.com`.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// Seconds a preflight may be cached (spec default 5).
    pub max_age: u32,
}
