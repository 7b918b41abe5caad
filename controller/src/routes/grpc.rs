//! GRPCRoute conversion; timeouts and retries come from the route's
//! annotations (`trellis_api::contract::key`), GRPCRoute having no such
//! fields.

use super::*;

/// gRPC status codes by name, for `retry.trellis.io/grpc-codes`.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Timeouts and retries of a GRPCRoute's rules, from its annotations.
fn grpc_annotations(
    p: &mut Problems,
    annotations: &BTreeMap<String, String>,
) -> (Timeouts, Option<GrpcRetry>) {
    let timeouts = Timeouts {
        request: parse_duration(
            p,
            key::GRPC_TIMEOUT_REQUEST,
            annotations.get(key::GRPC_TIMEOUT_REQUEST),
        ),
        backend_request: parse_duration(
            p,
            key::GRPC_TIMEOUT_BACKEND_REQUEST,
            annotations.get(key::GRPC_TIMEOUT_BACKEND_REQUEST),
        ),
    };
    let codes = annotations.get(key::GRPC_RETRY_CODES);
    let attempts = annotations.get(key::GRPC_RETRY_ATTEMPTS);
    let backoff = annotations.get(key::GRPC_RETRY_BACKOFF);
    if codes.is_none() && attempts.is_none() && backoff.is_none() {
        return (timeouts, None);
    }
    let codes = codes
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .filter_map(|c| {
                    let upper = c.to_ascii_uppercase().replace('-', "_");
                    let code = c.parse::<u32>().ok().filter(|n| *n <= 16).or_else(|| {
                        GRPC_CODES
                            .iter()
                            .position(|n| *n == upper)
                            .and_then(|i| u32::try_from(i).ok())
                    });
                    if code.is_none() {
                        p.note(format!(
                            "{}: unknown gRPC code {c:?}",
                            key::GRPC_RETRY_CODES
                        ));
                    }
                    code
                })
                .collect()
        })
        .unwrap_or_default();
    let attempts = match attempts.map(|a| a.trim().parse::<u32>()) {
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            p.note(format!("{}: not a number", key::GRPC_RETRY_ATTEMPTS));
            2
        }
        None => 2,
    };
    let retry = GrpcRetry {
        codes,
        attempts,
        backoff: parse_duration(p, key::GRPC_RETRY_BACKOFF, backoff),
    };
    (timeouts, Some(retry))
}

/// Converts a GRPCRoute.
pub fn grpc_route(route: &GrpcRoute) -> RouteSpec {
    let ns = route.namespace().unwrap_or_default();
    let mut p = Problems::default();
    let spec = &route.spec;
    let (timeouts, retry) = grpc_annotations(&mut p, route.annotations());
    let rules = spec
        .rules
        .iter()
        .flatten()
        .map(|rule| {
            let matches = rule
                .matches
                .iter()
                .flatten()
                .map(|m| GrpcMatch {
                    method: m.method.as_ref().and_then(|mm| {
                        if mm.service.is_none() && mm.method.is_none() {
                            return None;
                        }
                        match mm.r#type.as_ref().map(wire_name).as_deref() {
                            Some("RegularExpression") => Some(GrpcMethodMatch::Regex {
                                service: mm.service.as_deref().and_then(|s| regex(&mut p, s)),
                                method: mm.method.as_deref().and_then(|s| regex(&mut p, s)),
                            }),
                            _ => Some(GrpcMethodMatch::Exact {
                                service: mm.service.clone(),
                                method: mm.method.clone(),
                            }),
                        }
                    }),
                    headers: header_matches!(&mut p, m.headers),
                })
                .collect();
            let filters = rule
                .filters
                .iter()
                .flatten()
                .map(|f| grpc_common_filter!(&mut p, f, ns, wire_name(&f.r#type).as_str()))
                .collect();
            let backends = rule
                .backend_refs
                .iter()
                .flatten()
                .map(|b| {
                    let fs = b
                        .filters
                        .iter()
                        .flatten()
                        .map(|f| grpc_common_filter!(&mut p, f, ns, wire_name(&f.r#type).as_str()))
                        .collect();
                    backend_ref!(b, ns, weight(b.weight), fs)
                })
                .collect();
            let session_persistence = rule
                .session_persistence
                .as_ref()
                .map(|s| session_persistence!(&mut p, s));
            GrpcRuleSpec {
                name: rule.name.clone(),
                matches,
                filters,
                backends,
                timeouts,
                retry: retry.clone(),
                session_persistence,
            }
        })
        .collect();
    let hostnames = hostnames(&mut p, spec.hostnames.as_deref().unwrap_or_default());
    RouteSpec {
        meta: meta_of(RouteKind::GrpcRoute, &route.metadata),
        generation: route.metadata.generation,
        parents: parents(spec.parent_refs.as_deref().unwrap_or_default(), &ns),
        hostnames,
        rules: Rules::Grpc(rules),
        error: p.0,
    }
}
