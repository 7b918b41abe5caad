//! GRPCRoute precedence.

use super::{
    request::{self, Req},
    table::{self, Route, RouteMatch, RouteTable},
};
use crate::{GrpcMatch, GrpcMethodMatch, GrpcRoute, GrpcRule, HostMatch, RouteRef};

/// The rule (and the match of it) that governs a call.
pub type GrpcRouteMatch<'r> = RouteMatch<'r, GrpcRoute>;

/// GRPCRoutes with their matches sorted once by precedence; see
/// [`RouteTable`] for the costs.
pub type GrpcRouteTable = RouteTable<GrpcRoute>;

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

impl Route for GrpcRoute {
    type Rule = GrpcRule;
    type Match = GrpcMatch;
    type Rank = GrpcRank;
    /// The call's service and method, from `:path`.
    type Call<'a> = Option<(&'a str, &'a str)>;

    fn meta(&self) -> &RouteRef {
        &self.meta
    }

    fn hostnames(&self) -> &[HostMatch] {
        &self.hostnames
    }

    fn rules(&self) -> &[GrpcRule] {
        &self.rules
    }

    fn matches(rule: &GrpcRule) -> &[GrpcMatch] {
        &rule.matches
    }

    fn rank(m: Option<&GrpcMatch>) -> GrpcRank {
        GrpcRank::of(m)
    }

    fn call<'a>(req: &Req<'a>) -> Option<(&'a str, &'a str)> {
        service_and_method(req.path)
    }

    fn holds(m: &GrpcMatch, req: &Req<'_>, call: &Option<(&str, &str)>) -> bool {
        m.method.as_ref().is_none_or(|mm| method_matches(mm, *call))
            && request::headers_match(&m.headers, req.headers)
    }
}

/// The rule of `routes` that governs a gRPC call, by GRPCRoute precedence;
/// `None` means no route matches (the proxy answers `UNIMPLEMENTED`, as the
/// conformance suite expects, or 404). Allocation-free; O(total matches).
pub fn grpc<'r, B>(
    routes: &'r [GrpcRoute],
    req: &::http::Request<B>,
) -> Option<GrpcRouteMatch<'r>> {
    table::linear(routes, &Req::new(req))
}
