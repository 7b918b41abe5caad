//! Which route rule governs a request: the precedence rules of Gateway API
//! v1.6.1, in one place.
//!
//! ```text
//!   request ──► host_of ──► hostname rank of each route (exact > wildcard > none)
//!                               │
//!                               ▼
//!          every match of every rule of the routes whose hostnames match
//!                               │  greatest (host rank, match rank) wins;
//!                               │  ties: oldest route, then namespace/name,
//!                               ▼  then rule order, then match order
//!                        HttpRouteMatch { route, rule, matched, .. }
//! ```
//!
//! HTTP match rank ([`MatchRank`]): Exact path, then the longest PathPrefix,
//! then RegularExpression (longest pattern), then a method condition, then
//! the most header conditions, then the most query conditions. gRPC
//! ([`GrpcRank`]): the service, then the method (exact before pattern), then
//! the most header conditions. Hostnames rank before either
//! ([`HostRank`]); a route whose hostnames do not match the host is not a
//! candidate at all, and a more specific route whose rules do not match the
//! request falls through to less specific ones (the upstream
//! `HTTPRouteHostnameIntersection` conformance test relies on this).
//!
//! Paths are matched as received (no decoding or normalisation; a proxy that
//! normalises does so before asking). Header names compare
//! case-insensitively; a header sent several times is matched against its
//! values joined with `,`. Query parameters are percent-decoded and matched
//! by their first value. Methods compare exactly (RFC 9110: they are
//! case-sensitive). Of several conditions on an equivalent header or query
//! name only the first counts, for matching and for ranking.
//!
//! [`http()`] and [`grpc()`] scan every match without allocating; the tables
//! ([`HttpRouteTable`], [`GrpcRouteTable`]) sort the matches once so the
//! per-request scan stops at the first that holds. Both kinds share one
//! scan and one [`RouteTable`]: a [`Route`] kind gives only its match rank
//! and its match predicate.

mod grpc;
mod host;
mod http;
mod request;
mod table;

pub use self::grpc::{GrpcRank, GrpcRouteMatch, GrpcRouteTable, grpc, service_and_method};
pub use self::host::{HostRank, host_of, rank as host_rank, strip_port};
pub use self::http::{HttpRouteMatch, HttpRouteTable, MatchRank, http};
pub use self::request::prefix_matches;
pub use self::table::{Route, RouteMatch, RouteTable};

use crate::{RouteRef, TcpRoute, TlsRoute};
use std::cmp::Ordering;

/// The spec's order between routes of equal precedence: the oldest first,
/// then `{namespace}/{name}` alphabetically (compared as that one string,
/// so `a-b/x` comes before `a/y`).
pub fn route_order(a: &RouteRef, b: &RouteRef) -> Ordering {
    a.creation_timestamp
        .cmp(&b.creation_timestamp)
        .then_with(|| qualified(a).cmp(qualified(b)))
}

fn qualified(r: &RouteRef) -> impl Iterator<Item = u8> + '_ {
    r.namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(r.name.bytes())
}

/// The TLSRoute for a ClientHello's SNI: the most specific matching
/// hostname wins (exact over wildcard, longer over shorter), then the oldest
/// route, then `namespace/name`. A route without hostnames matches every
/// connection, even one without SNI, and ranks last.
pub fn tls<'r>(routes: &'r [TlsRoute], sni: Option<&str>) -> Option<&'r TlsRoute> {
    routes
        .iter()
        .filter_map(|r| Some((host::rank(&r.hostnames, sni)?, r)))
        .min_by(|(ra, a), (rb, b)| rb.cmp(ra).then_with(|| route_order(&a.meta, &b.meta)))
        .map(|(_, r)| r)
}

/// The TCPRoute that owns a port when several claim it: the oldest, then
/// `namespace/name`, as the spec orders conflicting routes.
pub fn tcp(routes: &[TcpRoute]) -> Option<&TcpRoute> {
    routes.iter().min_by(|a, b| route_order(&a.meta, &b.meta))
}
