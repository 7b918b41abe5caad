//! HTTPRoute precedence.

use super::{
    host::{self, HostRank},
    request::{self, Req},
    route_order,
};
use crate::{HttpMatch, HttpRoute, HttpRule, PathMatch};
use std::cmp::Ordering;

/// The rule (and the match of it) that governs a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpRouteMatch<'r> {
    pub route: &'r HttpRoute,
    /// Index of `route` in the slice or table it was found in.
    pub route_index: usize,
    pub rule: &'r HttpRule,
    pub rule_index: usize,
    /// The match that selected the rule; `None` when the rule has no matches
    /// (it matches everything, like the spec's default `PathPrefix /`).
    /// `ReplacePrefixMatch` needs its path prefix.
    pub matched: Option<&'r HttpMatch>,
    /// How specifically the route's hostnames matched the request's host.
    pub host_rank: HostRank,
    /// How specifically the match matched.
    pub rank: MatchRank,
}

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

/// Whether candidate `a` takes precedence over `b`, both already known to
/// match: host, then match rank, then the older route (then
/// `namespace/name`), then position (route, rule, match).
fn precedes(
    a: &HttpRouteMatch<'_>,
    a_match: usize,
    b: &HttpRouteMatch<'_>,
    b_match: usize,
) -> bool {
    let ord = b
        .host_rank
        .cmp(&a.host_rank)
        .then_with(|| b.rank.cmp(&a.rank))
        .then_with(|| route_order(&a.route.meta, &b.route.meta))
        .then_with(|| a.route_index.cmp(&b.route_index))
        .then_with(|| a.rule_index.cmp(&b.rule_index))
        .then_with(|| a_match.cmp(&b_match));
    ord == Ordering::Less
}

/// The rule of `routes` that governs `req`, by the spec's precedence; `None`
/// means 404. Allocation-free; O(total matches) per request. A proxy that
/// keeps its routes should use [`HttpRouteTable`], which orders the matches
/// once and usually stops at the first that matches.
pub fn http<'r, B>(
    routes: &'r [HttpRoute],
    req: &::http::Request<B>,
) -> Option<HttpRouteMatch<'r>> {
    find_in(routes, &Req::new(req))
}

fn find_in<'r>(routes: &'r [HttpRoute], req: &Req<'_>) -> Option<HttpRouteMatch<'r>> {
    let mut best: Option<(HttpRouteMatch<'r>, usize)> = None;
    for (route_index, route) in routes.iter().enumerate() {
        let Some(host_rank) = host::rank(&route.hostnames, req.host) else {
            continue;
        };
        if best.is_some_and(|(b, _)| b.host_rank > host_rank) {
            continue;
        }
        for (rule_index, rule) in route.rules.iter().enumerate() {
            for (match_index, matched) in candidates(rule) {
                if matched.is_some_and(|m| !request::http_match(m, req)) {
                    continue;
                }
                let found = HttpRouteMatch {
                    route,
                    route_index,
                    rule,
                    rule_index,
                    matched,
                    host_rank,
                    rank: MatchRank::of(matched),
                };
                if best.is_none_or(|(b, bi)| precedes(&found, match_index, &b, bi)) {
                    best = Some((found, match_index));
                }
            }
        }
    }
    best.map(|(m, _)| m)
}

/// The matches of a rule with their index; one `None` for a rule without.
fn candidates(rule: &HttpRule) -> impl Iterator<Item = (usize, Option<&HttpMatch>)> {
    let none = rule.matches.is_empty().then_some((0, None));
    rule.matches
        .iter()
        .enumerate()
        .map(|(i, m)| (i, Some(m)))
        .chain(none)
}

/// Routes with their matches sorted once by precedence, so that finding the
/// rule for a request is a scan that stops at the first match.
///
/// Building costs O(m log m) for m matches over all rules. Finding costs,
/// per request and without allocating: when no route has hostnames (the
/// usual GAMMA case), the conditions of the matches before the first that
/// holds; otherwise one pass over the routes' hostnames to find the best
/// possible host rank, then the scan, which stops at the first match of a
/// route with that rank and skips matches whose route cannot beat the best
/// found so far.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRouteTable {
    routes: Vec<HttpRoute>,
    order: Vec<Entry>,
    any_hostnames: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    route: usize,
    rule: usize,
    /// `None` for a rule without matches.
    matched: Option<usize>,
    rank: MatchRank,
}

impl HttpRouteTable {
    pub fn new(routes: Vec<HttpRoute>) -> Self {
        let mut order = Vec::new();
        for (ri, route) in routes.iter().enumerate() {
            for (ui, rule) in route.rules.iter().enumerate() {
                for (mi, m) in candidates(rule) {
                    order.push(Entry {
                        route: ri,
                        rule: ui,
                        matched: m.map(|_| mi),
                        rank: MatchRank::of(m),
                    });
                }
            }
        }
        order.sort_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then_with(|| route_order(&routes[a.route].meta, &routes[b.route].meta))
                .then_with(|| (a.route, a.rule, a.matched).cmp(&(b.route, b.rule, b.matched)))
        });
        let any_hostnames = routes.iter().any(|r| !r.hostnames.is_empty());
        HttpRouteTable {
            routes,
            order,
            any_hostnames,
        }
    }

    pub fn routes(&self) -> &[HttpRoute] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The rule that governs `req`; the same answer as [`http()`] over
    /// [`Self::routes`].
    pub fn find<B>(&self, req: &::http::Request<B>) -> Option<HttpRouteMatch<'_>> {
        let req = Req::new(req);
        let routes = &self.routes;
        super::scan(
            &self.order,
            req.host,
            self.any_hostnames,
            |e| &routes[e.route].hostnames,
            || {
                routes
                    .iter()
                    .filter_map(|r| host::rank(&r.hostnames, req.host))
                    .max()
            },
            |e| self.holds(e, &req),
        )
        .map(|(e, rank)| self.result(e, rank))
    }

    fn holds(&self, e: &Entry, req: &Req<'_>) -> bool {
        match e.matched {
            None => true,
            Some(mi) => request::http_match(&self.routes[e.route].rules[e.rule].matches[mi], req),
        }
    }

    fn result(&self, e: &Entry, host_rank: HostRank) -> HttpRouteMatch<'_> {
        let route = &self.routes[e.route];
        let rule = &route.rules[e.rule];
        HttpRouteMatch {
            route,
            route_index: e.route,
            rule,
            rule_index: e.rule,
            matched: e.matched.map(|mi| &rule.matches[mi]),
            host_rank,
            rank: e.rank,
        }
    }
}

impl From<Vec<HttpRoute>> for HttpRouteTable {
    fn from(routes: Vec<HttpRoute>) -> Self {
        HttpRouteTable::new(routes)
    }
}
