//! HTTPRoute precedence.

use super::{
    request::{self, Req},
    table::{self, Route, RouteMatch, RouteTable},
};
use crate::{HostMatch, HttpMatch, HttpRoute, HttpRule, PathMatch, RouteRef};

/// The rule (and the match of it) that governs a request.
pub type HttpRouteMatch<'r> = RouteMatch<'r, HttpRoute>;

/// HTTPRoutes with their matches sorted once by precedence.
pub type HttpRouteTable = RouteTable<HttpRoute>;

/// How specific an [`HttpMatch`] is, ordered as the spec ranks them (greater
/// wins): Exact path, then the longest PathPrefix, then a regular expression
/// (the spec leaves their place to implementations: Trellis puts them after
/// every prefix, the longer pattern first, as Istio does); then a method
/// condition; then the most header conditions; then the most query
/// conditions.
///
/// A match without a path condition ranks as `PathPrefix /`, which the CRD
/// makes its default, and so does a rule without matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchRank {
    /// 3 Exact, 2 PathPrefix, 1 RegularExpression.
    pub path_kind: u8,
    /// Characters of the path value (pattern for a regular expression).
    pub path_len: usize,
    pub method: bool,
    /// Header conditions on distinct names.
    pub headers: usize,
    /// Query conditions on distinct names.
    pub query: usize,
}

impl MatchRank {
    /// The rank of a rule without matches: everything, as `PathPrefix /`.
    pub const CATCH_ALL: MatchRank = MatchRank {
        path_kind: 2,
        path_len: 1,
        method: false,
        headers: 0,
        query: 0,
    };

    pub fn of(m: Option<&HttpMatch>) -> MatchRank {
        let Some(m) = m else {
            return MatchRank::CATCH_ALL;
        };
        let (path_kind, path_len) = match &m.path {
            None => (2, 1),
            Some(PathMatch::Exact(p)) => (3, p.len()),
            Some(PathMatch::Prefix(p)) => (2, p.len()),
            Some(PathMatch::Regex(re)) => (1, re.as_str().len()),
        };
        MatchRank {
            path_kind,
            path_len,
            method: m.method.is_some(),
            headers: request::distinct_headers(&m.headers),
            query: request::distinct_query(&m.query_params),
        }
    }
}

impl Route for HttpRoute {
    type Rule = HttpRule;
    type Match = HttpMatch;
    type Rank = MatchRank;
    type Call<'a> = ();

    fn meta(&self) -> &RouteRef {
        &self.meta
    }

    fn hostnames(&self) -> &[HostMatch] {
        &self.hostnames
    }

    fn rules(&self) -> &[HttpRule] {
        &self.rules
    }

    fn matches(rule: &HttpRule) -> &[HttpMatch] {
        &rule.matches
    }

    fn rank(m: Option<&HttpMatch>) -> MatchRank {
        MatchRank::of(m)
    }

    fn call(_: &Req<'_>) {}

    fn holds(m: &HttpMatch, req: &Req<'_>, (): &()) -> bool {
        request::http_match(m, req)
    }
}

/// The rule of `routes` that governs `req`, by the spec's precedence; `None`
/// means 404. Allocation-free; O(total matches) per request. A proxy that
/// keeps its routes should use [`HttpRouteTable`], which orders the matches
/// once and usually stops at the first that matches.
pub fn http<'r, B>(
    routes: &'r [HttpRoute],
    req: &::http::Request<B>,
) -> Option<HttpRouteMatch<'r>> {
    table::linear(routes, &Req::new(req))
}
