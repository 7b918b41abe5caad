//! GRPCRoute precedence.

use super::{
    host::{self, HostRank},
    request::{self, Req},
    route_order,
};
use crate::{GrpcMatch, GrpcMethodMatch, GrpcRoute, GrpcRule};
use std::cmp::Ordering;

/// The rule (and the match of it) that governs a call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpcRouteMatch<'r> {
    pub route: &'r GrpcRoute,
    pub route_index: usize,
    pub rule: &'r GrpcRule,
    pub rule_index: usize,
    /// `None` when the rule has no matches (it matches every call).
    pub matched: Option<&'r GrpcMatch>,
    pub host_rank: HostRank,
    pub rank: GrpcRank,
}

/// How specific a [`GrpcMatch`] is, ordered as the spec ranks them (greater
/// wins): the characters of a matching service, then of a matching method,
/// then the number of header conditions. For each of service and method an
/// exact value outranks a regular expression (the spec counts characters of
/// exact values; Trellis puts patterns below them, the longer pattern
/// first), which outranks no condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrpcRank {
    /// 2 exact, 1 regular expression, 0 none.
    pub service_kind: u8,
    pub service_len: usize,
    pub method_kind: u8,
    pub method_len: usize,
    /// Header conditions on distinct names.
    pub headers: usize,
}

impl GrpcRank {
    pub fn of(m: Option<&GrpcMatch>) -> GrpcRank {
        let Some(m) = m else {
            return GrpcRank::default();
        };
        let part =
            |exact: Option<&String>, regex: Option<&crate::regex::Regex>| match (exact, regex) {
                (Some(s), _) => (2, s.len()),
                (None, Some(re)) => (1, re.as_str().len()),
                (None, None) => (0, 0),
            };
        let ((service_kind, service_len), (method_kind, method_len)) = match &m.method {
            None => ((0, 0), (0, 0)),
            Some(GrpcMethodMatch::Exact { service, method }) => (
                part(service.as_ref().filter(|s| !s.is_empty()), None),
                part(method.as_ref().filter(|s| !s.is_empty()), None),
            ),
            Some(GrpcMethodMatch::Regex { service, method }) => {
                (part(None, service.as_ref()), part(None, method.as_ref()))
            }
        };
        GrpcRank {
            service_kind,
            service_len,
            method_kind,
            method_len,
            headers: request::distinct_headers(&m.headers),
        }
    }
}

/// The service and method of a gRPC call's `:path` (`/<service>/<method>`);
/// `None` for any other shape.
pub fn service_and_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

fn method_matches(m: &GrpcMethodMatch, call: Option<(&str, &str)>) -> bool {
    let Some((service, method)) = call else {
        return false;
    };
    match m {
        GrpcMethodMatch::Exact {
            service: want_service,
            method: want_method,
        } => {
            want_service
                .as_deref()
                .is_none_or(|s| s.is_empty() || s == service)
                && want_method
                    .as_deref()
                    .is_none_or(|m| m.is_empty() || m == method)
        }
        GrpcMethodMatch::Regex {
            service: service_re,
            method: method_re,
        } => {
            service_re.as_ref().is_none_or(|re| re.is_match(service))
                && method_re.as_ref().is_none_or(|re| re.is_match(method))
        }
    }
}

fn grpc_match(m: &GrpcMatch, call: Option<(&str, &str)>, req: &Req<'_>) -> bool {
    m.method.as_ref().is_none_or(|mm| method_matches(mm, call))
        && request::headers_match(&m.headers, req.headers)
}

fn precedes(
    a: &GrpcRouteMatch<'_>,
    a_match: usize,
    b: &GrpcRouteMatch<'_>,
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

fn candidates(rule: &GrpcRule) -> impl Iterator<Item = (usize, Option<&GrpcMatch>)> {
    let none = rule.matches.is_empty().then_some((0, None));
    rule.matches
        .iter()
        .enumerate()
        .map(|(i, m)| (i, Some(m)))
        .chain(none)
}

/// The rule of `routes` that governs a gRPC call, by GRPCRoute precedence;
/// `None` means no route matches (the proxy answers `UNIMPLEMENTED`, as the
/// conformance suite expects, or 404). Allocation-free; O(total matches).
pub fn grpc<'r, B>(
    routes: &'r [GrpcRoute],
    req: &::http::Request<B>,
) -> Option<GrpcRouteMatch<'r>> {
    let req = Req::new(req);
    let call = service_and_method(req.path);
    let mut best: Option<(GrpcRouteMatch<'r>, usize)> = None;
    for (route_index, route) in routes.iter().enumerate() {
        let Some(host_rank) = host::rank(&route.hostnames, req.host) else {
            continue;
        };
        for (rule_index, rule) in route.rules.iter().enumerate() {
            for (match_index, matched) in candidates(rule) {
                if matched.is_some_and(|m| !grpc_match(m, call, &req)) {
                    continue;
                }
                let found = GrpcRouteMatch {
                    route,
                    route_index,
                    rule,
                    rule_index,
                    matched,
                    host_rank,
                    rank: GrpcRank::of(matched),
                };
                if best.is_none_or(|(b, bi)| precedes(&found, match_index, &b, bi)) {
                    best = Some((found, match_index));
                }
            }
        }
    }
    best.map(|(m, _)| m)
}

/// GRPCRoutes with their matches sorted once by precedence; see
/// [`super::HttpRouteTable`] for the costs, which are the same.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcRouteTable {
    routes: Vec<GrpcRoute>,
    order: Vec<Entry>,
    any_hostnames: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    route: usize,
    rule: usize,
    matched: Option<usize>,
    rank: GrpcRank,
}

impl GrpcRouteTable {
    pub fn new(routes: Vec<GrpcRoute>) -> Self {
        let mut order = Vec::new();
        for (ri, route) in routes.iter().enumerate() {
            for (ui, rule) in route.rules.iter().enumerate() {
                for (mi, m) in candidates(rule) {
                    order.push(Entry {
                        route: ri,
                        rule: ui,
                        matched: m.map(|_| mi),
                        rank: GrpcRank::of(m),
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
        GrpcRouteTable {
            routes,
            order,
            any_hostnames,
        }
    }

    pub fn routes(&self) -> &[GrpcRoute] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The rule that governs the call; the same answer as [`grpc`] over
    /// [`Self::routes`].
    pub fn find<B>(&self, req: &::http::Request<B>) -> Option<GrpcRouteMatch<'_>> {
        let req = Req::new(req);
        let call = service_and_method(req.path);
        let holds = |e: &Entry| match e.matched {
            None => true,
            Some(mi) => grpc_match(&self.routes[e.route].rules[e.rule].matches[mi], call, &req),
        };
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
            holds,
        )
        .map(|(e, rank)| self.result(e, rank))
    }

    fn result(&self, e: &Entry, host_rank: HostRank) -> GrpcRouteMatch<'_> {
        let route = &self.routes[e.route];
        let rule = &route.rules[e.rule];
        GrpcRouteMatch {
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

impl From<Vec<GrpcRoute>> for GrpcRouteTable {
    fn from(routes: Vec<GrpcRoute>) -> Self {
        GrpcRouteTable::new(routes)
    }
}
