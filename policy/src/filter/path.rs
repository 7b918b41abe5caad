//! `URLRewrite` and `RequestRedirect`: the new path, authority and
//! `Location`.

use super::{FilterError, PathModifier, RequestRedirect, UrlRewrite};
use crate::{HttpMatch, PathMatch, find};
use http::{
    HeaderValue, StatusCode, Uri,
    uri::{Authority, PathAndQuery},
};

/// The path a [`PathModifier`] makes of `path`, given the match that
/// selected the rule (`None` for a rule without matches, which counts as
/// `PathPrefix /`).
///
/// - `ReplaceFullPath`: the value (with one leading `/`).
/// - `ReplacePrefixMatch`: the matched prefix (whole path elements, a
///   trailing `/` of the prefix ignored) is replaced and the rest kept:
///   with prefix `/foo`, `/foo/bar` becomes `/xyz/bar` for `/xyz` or `/xyz/`,
///   `/bar` for `` or `/`; `/foo` becomes `/xyz`, or `/` for `` and `/`;
///   `/foo/` keeps its trailing slash (`/xyz/`, or `/`).
///
/// The result always starts with exactly one `/` and has no `//` where the
/// replacement meets the rest.
pub fn replace_path(
    modifier: &PathModifier,
    matched: Option<&HttpMatch>,
    path: &str,
) -> Result<String, FilterError> {
    match modifier {
        PathModifier::ReplaceFullPath(full) => Ok(format!("/{}", full.trim_start_matches('/'))),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = match matched.and_then(|m| m.path.as_ref()) {
                None => "/",
                Some(PathMatch::Prefix(p)) => p.as_str(),
                Some(other) => {
                    return Err(FilterError::PrefixReplacementWithoutPrefix {
                        replacement: replacement.clone(),
                        matched: match other {
                            PathMatch::Exact(p) => format!("Exact {p:?}"),
                            _ => "a RegularExpression".to_string(),
                        },
                    });
                }
            };
            if !find::prefix_matches(prefix, path) {
                return Err(FilterError::PrefixMismatch {
                    prefix: prefix.to_string(),
                    path: path.to_string(),
                });
            }
            let trimmed = prefix.trim_end_matches('/');
            // The root prefix matched the leading `/` itself: `/` has no
            // rest, `/a` has the rest `/a`.
            let rest = if trimmed.is_empty() && path == "/" {
                ""
            } else {
                &path[trimmed.len()..]
            };
            Ok(join(replacement, rest))
        }
    }
}

/// `replacement` (without trailing slashes, with one leading slash) then
/// `rest` (one leading slash); `/` when both are empty.
fn join(replacement: &str, rest: &str) -> String {
    let head = replacement.trim_matches('/');
    let tail = rest.trim_start_matches('/');
    let mut out = String::with_capacity(head.len() + rest.len() + 2);
    if !head.is_empty() {
        out.push('/');
        out.push_str(head);
    }
    if !rest.is_empty() {
        out.push('/');
        out.push_str(tail);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// What a `URLRewrite` changes; `None` leaves that part as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The new path, with the request's query kept.
    pub path_and_query: Option<PathAndQuery>,
    /// The new `Host` / `:authority`: the filter's hostname, no port.
    pub authority: Option<Authority>,
}

/// Applies a `URLRewrite` to a request URI. `matched` is the match that
/// selected the rule ([`crate::find::RouteMatch::matched`]).
pub fn rewrite(
    rewrite: &UrlRewrite,
    matched: Option<&HttpMatch>,
    uri: &Uri,
) -> Result<Rewritten, FilterError> {
    let path_and_query = match &rewrite.path {
        None => None,
        Some(modifier) => {
            let path = replace_path(modifier, matched, uri.path())?;
            Some(path_and_query(path, uri.query())?)
        }
    };
    let authority = match &rewrite.hostname {
        None => None,
        Some(hostname) => Some(hostname_authority(hostname)?),
    };
    Ok(Rewritten {
        path_and_query,
        authority,
    })
}

impl Rewritten {
    /// Applies the rewrite to a request: the URI's path, and the authority
    /// both in the URI (when it has one, as HTTP/2 requests do) and in the
    /// `Host` header (when present, or when the URI has no authority).
    pub fn apply<B>(self, req: &mut http::Request<B>) -> Result<(), FilterError> {
        if self.path_and_query.is_none() && self.authority.is_none() {
            return Ok(());
        }
        let mut parts = req.uri().clone().into_parts();
        if let Some(pq) = self.path_and_query {
            parts.path_and_query = Some(pq);
        }
        if let Some(authority) = &self.authority {
            let had_authority = parts.authority.is_some();
            if had_authority {
                parts.authority = Some(authority.clone());
            }
            if !had_authority || req.headers().contains_key(http::header::HOST) {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| FilterError::InvalidHostname(authority.to_string()))?;
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| FilterError::InvalidUri {
            uri: req.uri().to_string(),
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

fn path_and_query(path: String, query: Option<&str>) -> Result<PathAndQuery, FilterError> {
    let full = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    PathAndQuery::try_from(full.as_str()).map_err(|e| FilterError::InvalidUri {
        uri: full.clone(),
        reason: e.to_string(),
    })
}

fn hostname_authority(hostname: &str) -> Result<Authority, FilterError> {
    let invalid = || FilterError::InvalidHostname(hostname.to_string());
    if hostname.is_empty() || hostname.contains(['@', '/', '?', '#']) {
        return Err(invalid());
    }
    Authority::try_from(hostname).map_err(|_| invalid())
}

/// The answer to a request whose rule has a `RequestRedirect` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// An absolute URI (`scheme://host[:port]/path[?query]`).
    pub location: HeaderValue,
}

/// Builds the redirect of a `RequestRedirect` filter.
///
/// - scheme: the filter's, else `req_scheme` (`http` or `https`);
/// - host: the filter's hostname, else `req_host` without its port;
/// - port: the filter's; else, when the filter sets a scheme, that scheme's
///   well-known port (80, 443); else `listener_port` (the Gateway listener's,
///   or in the mesh the Service port the client called). The port is left
///   out of `Location` when it is the scheme's default (http:80, https:443);
/// - path: per the filter's path modifier (see [`replace_path`]), else the
///   request's path; the query is always kept.
pub fn redirect(
    redirect: &RequestRedirect,
    matched: Option<&HttpMatch>,
    req_scheme: &str,
    req_host: &str,
    req_uri: &Uri,
    listener_port: u16,
) -> Result<Redirect, FilterError> {
    let status = match redirect.status {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(redirect.status)
            .map_err(|_| FilterError::InvalidStatus(redirect.status))?,
        other => return Err(FilterError::InvalidStatus(other)),
    };
    let scheme = redirect.scheme.as_deref().unwrap_or(req_scheme);
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else {
        return Err(FilterError::InvalidScheme(scheme.to_string()));
    };
    let host = match &redirect.hostname {
        Some(h) => h.as_str(),
        None => find::strip_port(req_host)
            .ok_or_else(|| FilterError::InvalidHostname(req_host.to_string()))?,
    };
    let port = match (redirect.port, &redirect.scheme) {
        (Some(port), _) => port,
        (None, Some(_)) => default_port,
        (None, None) => listener_port,
    };
    let path = match &redirect.path {
        Some(modifier) => replace_path(modifier, matched, req_uri.path())?,
        None if req_uri.path().is_empty() => "/".to_string(),
        None => req_uri.path().to_string(),
    };
    let mut location = format!("{scheme}://{host}");
    if port != default_port {
        location.push(':');
        location.push_str(&port.to_string());
    }
    location.push_str(&path);
    if let Some(q) = req_uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let invalid = |reason: String| FilterError::InvalidUri {
        uri: location.clone(),
        reason,
    };
    let uri = Uri::try_from(location.as_str()).map_err(|e| invalid(e.to_string()))?;
    if uri.host() != Some(host) || host.is_empty() {
        return Err(FilterError::InvalidHostname(host.to_string()));
    }
    let location = HeaderValue::try_from(location.as_str()).map_err(|e| invalid(e.to_string()))?;
    Ok(Redirect { status, location })
}
