//! The precedence scan shared by HTTPRoute and GRPCRoute: both rank every
//! match of every rule of the routes whose hostnames match, by host rank,
//! then the kind's match rank, then route order, then position. Only the
//! rank and the match predicate differ, and [`Route`] gives those.

use super::{
    host::{self, HostRank},
    request::Req,
    route_order,
};
use crate::{HostMatch, RouteRef};
use std::{cmp::Ordering, fmt::Debug, hash::Hash};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::HttpRoute {}
    impl Sealed for crate::GrpcRoute {}
}

/// A kind of route that the precedence rules rank: [`crate::HttpRoute`] or
/// [`crate::GrpcRoute`]. Sealed: the spec defines the kinds.
pub trait Route: sealed::Sealed + Clone + Debug + PartialEq {
    type Rule: Debug + PartialEq + 'static;
    type Match: Debug + PartialEq + 'static;
    /// How specific a match is; greater wins.
    type Rank: Copy + Ord + Debug + Hash;
    /// What a match of this kind reads from a request beyond [`Req`],
    /// parsed once per request.
    #[doc(hidden)]
    type Call<'a>;

    fn meta(&self) -> &RouteRef;
    fn hostnames(&self) -> &[HostMatch];
    fn rules(&self) -> &[Self::Rule];
    fn matches(rule: &Self::Rule) -> &[Self::Match];
    /// The rank of a match; `None` for a rule without matches.
    fn rank(m: Option<&Self::Match>) -> Self::Rank;

    #[doc(hidden)]
    fn call<'a>(req: &Req<'a>) -> Self::Call<'a>;
    /// Whether every condition of `m` holds for the request.
    #[doc(hidden)]
    fn holds(m: &Self::Match, req: &Req<'_>, call: &Self::Call<'_>) -> bool;
}

/// The rule (and the match of it) that governs a request.
#[derive(Debug, PartialEq)]
pub struct RouteMatch<'r, R: Route> {
    pub route: &'r R,
    /// Index of `route` in the slice or table it was found in.
    pub route_index: usize,
    pub rule: &'r R::Rule,
    pub rule_index: usize,
    /// The match that selected the rule; `None` when the rule has no matches
    /// (it matches everything, like the spec's default `PathPrefix /`).
    /// `ReplacePrefixMatch` needs its path prefix.
    pub matched: Option<&'r R::Match>,
    /// How specifically the route's hostnames matched the request's host.
    pub host_rank: HostRank,
    /// How specifically the match matched.
    pub rank: R::Rank,
}

// By hand: a derive would ask `R: Copy` though only references are held.
impl<R: Route> Clone for RouteMatch<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Route> Copy for RouteMatch<'_, R> {}

/// Whether candidate `a` takes precedence over `b`, both already known to
/// match: host, then match rank, then the older route (then
/// `namespace/name`), then position (route, rule, match).
fn precedes<R: Route>(
    a: &RouteMatch<'_, R>,
    a_match: usize,
    b: &RouteMatch<'_, R>,
    b_match: usize,
) -> bool {
    let ord = b
        .host_rank
        .cmp(&a.host_rank)
        .then_with(|| b.rank.cmp(&a.rank))
        .then_with(|| route_order(a.route.meta(), b.route.meta()))
        .then_with(|| a.route_index.cmp(&b.route_index))
        .then_with(|| a.rule_index.cmp(&b.rule_index))
        .then_with(|| a_match.cmp(&b_match));
    ord == Ordering::Less
}

/// The matches of a rule with their index; one `None` for a rule without.
fn candidates<R: Route>(rule: &R::Rule) -> impl Iterator<Item = (usize, Option<&R::Match>)> {
    let matches = R::matches(rule);
    let none = matches.is_empty().then_some((0, None));
    matches
        .iter()
        .enumerate()
        .map(|(i, m)| (i, Some(m)))
        .chain(none)
}

/// The rule of `routes` that governs `req` without a table: every match is
/// checked. Allocation-free; O(total matches) per request.
pub(super) fn linear<'r, R: Route>(routes: &'r [R], req: &Req<'_>) -> Option<RouteMatch<'r, R>> {
    let call = R::call(req);
    let mut best: Option<(RouteMatch<'r, R>, usize)> = None;
    for (route_index, route) in routes.iter().enumerate() {
        let Some(host_rank) = host::rank(route.hostnames(), req.host) else {
            continue;
        };
        if best.is_some_and(|(b, _)| b.host_rank > host_rank) {
            continue;
        }
        for (rule_index, rule) in route.rules().iter().enumerate() {
            for (match_index, matched) in candidates::<R>(rule) {
                if matched.is_some_and(|m| !R::holds(m, req, &call)) {
                    continue;
                }
                let found = RouteMatch {
                    route,
                    route_index,
                    rule,
                    rule_index,
                    matched,
                    host_rank,
                    rank: R::rank(matched),
                };
                if best.is_none_or(|(b, bi)| precedes(&found, match_index, &b, bi)) {
                    best = Some((found, match_index));
                }
            }
        }
    }
    best.map(|(m, _)| m)
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
pub struct RouteTable<R: Route> {
    routes: Vec<R>,
    order: Vec<Entry<R::Rank>>,
    any_hostnames: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry<K> {
    route: usize,
    rule: usize,
    /// `None` for a rule without matches.
    matched: Option<usize>,
    rank: K,
}

impl<R: Route> RouteTable<R> {
    pub fn new(routes: Vec<R>) -> Self {
        let mut order = Vec::new();
        for (ri, route) in routes.iter().enumerate() {
            for (ui, rule) in route.rules().iter().enumerate() {
                for (mi, m) in candidates::<R>(rule) {
                    order.push(Entry {
                        route: ri,
                        rule: ui,
                        matched: m.map(|_| mi),
                        rank: R::rank(m),
                    });
                }
            }
        }
        order.sort_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then_with(|| route_order(routes[a.route].meta(), routes[b.route].meta()))
                .then_with(|| (a.route, a.rule, a.matched).cmp(&(b.route, b.rule, b.matched)))
        });
        let any_hostnames = routes.iter().any(|r| !r.hostnames().is_empty());
        RouteTable {
            routes,
            order,
            any_hostnames,
        }
    }

    pub fn routes(&self) -> &[R] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The rule that governs `req`; the same answer as [`super::http()`] or
    /// [`super::grpc()`] over [`Self::routes`].
    pub fn find<B>(&self, req: &::http::Request<B>) -> Option<RouteMatch<'_, R>> {
        let req = Req::new(req);
        let call = R::call(&req);
        let holds = |e: &Entry<R::Rank>| match e.matched {
            None => true,
            Some(mi) => {
                let rule = &self.routes[e.route].rules()[e.rule];
                R::holds(&R::matches(rule)[mi], &req, &call)
            }
        };
        self.scan(req.host, holds)
            .map(|(e, rank)| self.result(e, rank))
    }

    /// The winner is the first entry of `order` that holds among those whose
    /// route has the best host rank that any holding entry reaches.
    fn scan(
        &self,
        host: Option<&str>,
        mut holds: impl FnMut(&Entry<R::Rank>) -> bool,
    ) -> Option<(&Entry<R::Rank>, HostRank)> {
        if !self.any_hostnames {
            return self
                .order
                .iter()
                .find(|e| holds(e))
                .map(|e| (e, HostRank::ANY));
        }
        let best_possible = self
            .routes
            .iter()
            .filter_map(|r| host::rank(r.hostnames(), host))
            .max()?;
        let mut best: Option<(&Entry<R::Rank>, HostRank)> = None;
        for e in &self.order {
            let Some(rank) = host::rank(self.routes[e.route].hostnames(), host) else {
                continue;
            };
            if best.is_some_and(|(_, b)| b >= rank) || !holds(e) {
                continue;
            }
            best = Some((e, rank));
            if rank == best_possible {
                break;
            }
        }
        best
    }

    fn result(&self, e: &Entry<R::Rank>, host_rank: HostRank) -> RouteMatch<'_, R> {
        let route = &self.routes[e.route];
        let rule = &route.rules()[e.rule];
        RouteMatch {
            route,
            route_index: e.route,
            rule,
            rule_index: e.rule,
            matched: e.matched.map(|mi| &R::matches(rule)[mi]),
            host_rank,
            rank: e.rank,
        }
    }
}

impl<R: Route> From<Vec<R>> for RouteTable<R> {
    fn from(routes: Vec<R>) -> Self {
        RouteTable::new(routes)
    }
}
