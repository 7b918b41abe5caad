//! The conditions of one match, evaluated against one request without
//! allocating (except for a regular expression over a repeated header or a
//! percent-encoded query value, which need the value in one piece).

use crate::{HeaderMatch, HttpMatch, PathMatch, QueryParamMatch, ValueMatch};
use ::http::HeaderMap;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// The parts of a request that routes look at.
#[derive(Clone, Copy, Debug)]
pub struct Req<'a> {
    pub(crate) method: &'a ::http::Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) host: Option<&'a str>,
}

impl<'a> Req<'a> {
    pub(crate) fn new<B>(req: &'a ::http::Request<B>) -> Self {
        let uri = req.uri();
        Req {
            method: req.method(),
            path: uri.path(),
            query: uri.query(),
            headers: req.headers(),
            host: super::host_of(req),
        }
    }
}

/// Whether every condition of `m` holds for `req`.
pub(crate) fn http_match(m: &HttpMatch, req: &Req<'_>) -> bool {
    if let Some(method) = &m.method
        && req.method.as_str() != method
    {
        return false;
    }
    if let Some(path) = &m.path
        && !path_matches(path, req.path)
    {
        return false;
    }
    headers_match(&m.headers, req.headers) && query_matches(&m.query_params, req.query)
}

/// Whether every header condition holds. Only the first condition on a
/// name counts; later ones on an equivalent name are ignored, as the spec
/// requires.
pub(crate) fn headers_match(conditions: &[HeaderMatch], headers: &HeaderMap) -> bool {
    conditions
        .iter()
        .enumerate()
        .all(|(i, h)| shadowed_header(&conditions[..i], &h.name) || header_matches(h, headers))
}

fn shadowed_header(earlier: &[HeaderMatch], name: &str) -> bool {
    earlier.iter().any(|e| e.name.eq_ignore_ascii_case(name))
}

/// The number of header conditions that count (distinct names).
pub(crate) fn distinct_headers(conditions: &[HeaderMatch]) -> usize {
    (0..conditions.len())
        .filter(|&i| !shadowed_header(&conditions[..i], &conditions[i].name))
        .count()
}

/// The number of query conditions that count (distinct names).
pub(crate) fn distinct_query(conditions: &[QueryParamMatch]) -> usize {
    (0..conditions.len())
        .filter(|&i| !conditions[..i].iter().any(|e| e.name == conditions[i].name))
        .count()
}

/// PathPrefix, Exact or RegularExpression against the path as received.
pub(crate) fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => prefix_matches(p, path),
        PathMatch::Regex(re) => re.is_match(path),
    }
}

/// Whether `prefix` matches `path` on whole path elements: `/v2` matches
/// `/v2`, `/v2/` and `/v2/x` but not `/v2x`; a trailing slash of the prefix
/// is ignored, so `/v2/` matches `/v2` too; `/` matches every path.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A header condition. A header sent several times is matched against its
/// values joined with `,` (RFC 9110 §5.3, and what Envoy does), so
/// `x: a` + `x: b` matches the exact value `a,b`.
fn header_matches(m: &HeaderMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(m.name.as_str()).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let second = values.next();
    match (&m.value, second) {
        (ValueMatch::Exact(want), None) => first.as_bytes() == want.as_bytes(),
        (ValueMatch::Exact(want), Some(_)) => {
            joined_equals(headers.get_all(m.name.as_str()).iter(), want.as_bytes())
        }
        (ValueMatch::Regex(re), None) => re.is_match(&String::from_utf8_lossy(first.as_bytes())),
        (ValueMatch::Regex(re), Some(_)) => {
            let mut joined = Vec::new();
            for (i, v) in headers.get_all(m.name.as_str()).iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(v.as_bytes());
            }
            re.is_match(&String::from_utf8_lossy(&joined))
        }
    }
}

/// Whether the values joined with `,` equal `want`, without joining them.
fn joined_equals<'v>(values: impl Iterator<Item = &'v ::http::HeaderValue>, want: &[u8]) -> bool {
    let mut rest = want;
    for (i, v) in values.enumerate() {
        if i > 0 {
            match rest.split_first() {
                Some((b',', tail)) => rest = tail,
                _ => return false,
            }
        }
        match rest.strip_prefix(v.as_bytes()) {
            Some(tail) => rest = tail,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether every query condition holds. Names compare exactly after
/// percent-decoding; a parameter sent several times is matched by its first
/// value, as the spec recommends; `+` is not a space (RFC 3986 gives it no
/// meaning in a query). Only the first condition on a name counts.
pub(crate) fn query_matches(conditions: &[QueryParamMatch], query: Option<&str>) -> bool {
    conditions.iter().enumerate().all(|(i, q)| {
        conditions[..i].iter().any(|e| e.name == q.name)
            || query
                .and_then(|query| first_query_value(query, &q.name))
                .is_some_and(|value| value_matches(&q.value, value))
    })
}

/// The first (still encoded) value of parameter `name`; `""` for `?name`.
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| percent_decode_str(k).eq(name.bytes()))
        .map(|(_, v)| v)
}

fn value_matches(m: &ValueMatch, encoded: &str) -> bool {
    match m {
        ValueMatch::Exact(want) => percent_decode_str(encoded).eq(want.bytes()),
        ValueMatch::Regex(re) => {
            let decoded: Cow<'_, str> = percent_decode_str(encoded).decode_utf8_lossy();
            re.is_match(&decoded)
        }
    }
}
