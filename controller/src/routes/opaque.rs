//! TCPRoute and TLSRoute conversion.

use super::*;

/// TCPRoute and TLSRoute rules, alike but for their types: a name and
/// backends without filters.
macro_rules! opaque_rules {
    ($rules:expr, $ns:expr) => {
        $rules
            .iter()
            .map(|r| OpaqueRuleSpec {
                name: r.name.clone(),
                backends: r
                    .backend_refs
                    .iter()
                    .map(|b| backend_ref!(b, $ns, weight(b.weight), Vec::new()))
                    .collect(),
            })
            .collect()
    };
}

/// Converts a TCPRoute.
pub fn tcp_route(route: &crd::TcpRoute) -> RouteSpec {
    let ns = route.namespace().unwrap_or_default();
    let rules = opaque_rules!(route.spec.rules, ns);
    RouteSpec {
        meta: meta_of(RouteKind::TcpRoute, &route.metadata),
        generation: route.metadata.generation,
        parents: parents(&route.spec.parent_refs, &ns),
        hostnames: Vec::new(),
        rules: Rules::Opaque(rules),
        error: None,
    }
}

/// Converts a TLSRoute.
pub fn tls_route(route: &TlsRoute) -> RouteSpec {
    let ns = route.namespace().unwrap_or_default();
    let mut p = Problems::default();
    let rules = opaque_rules!(route.spec.rules, ns);
    let hostnames = hostnames(&mut p, &route.spec.hostnames);
    RouteSpec {
        meta: meta_of(RouteKind::TlsRoute, &route.metadata),
        generation: route.metadata.generation,
        parents: parents(route.spec.parent_refs.as_deref().unwrap_or_default(), &ns),
        hostnames,
        rules: Rules::Opaque(rules),
        error: p.0,
    }
}
