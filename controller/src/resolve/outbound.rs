//! Outbound policy: what a client in one namespace gets for a Service
//! ClusterIP and port (GAMMA).
//!
//! Routes attach to a Service through a parentRef of group `""` and kind
//! `Service`, optionally narrowed to a port (`port`, or `sectionName` naming
//! the port). Routes in the Service's namespace are *producer* routes and
//! apply to every client; routes in the client's own namespace are
//! *consumer* routes and, when there is any, replace the producer routes for
//! that namespace's clients. Routes in a third namespace apply to no one
//! here.

use super::backend;
use crate::index::store::Store;
use crate::routes::{ParentRef, RouteSpec, Rules};
use std::net::SocketAddr;
use trellis_policy::{
    Backend, GrpcRoute, GrpcRule, HttpBackend, HttpRoute, HttpRule, OutboundPolicy, ResourceRef,
    Target, TcpRoute, TcpRule, TlsRoute, WeightedBackend,
};

/// The parentRef through which `route` attaches to `service` port `port`.
pub fn attached_parent<'r>(
    route: &'r RouteSpec,
    service: &ResourceRef,
    port: u16,
    port_name: &str,
) -> Option<&'r ParentRef> {
    route.parents.iter().find(|p| {
        p.is_service()
            && p.namespace == service.namespace
            && p.name == service.name
            && p.port.is_none_or(|pp| pp == port)
            && p.section_name.as_deref().is_none_or(|s| s == port_name)
    })
}

/// The policy for `target` as seen from `client_ns`; `None` when `target` is
/// not a Service ClusterIP and port (the proxy forwards to it unchanged).
pub fn outbound(store: &Store, target: SocketAddr, client_ns: &str) -> Option<OutboundPolicy> {
    let service = store.by_cluster_ip.get(&target.ip())?;
    let svc = store.services.get(service)?;
    let port = svc.port(target.port())?;
    let own_backend = Backend::Service(backend::service_backend(store, service, svc, port));

    let attached: Vec<(&RouteSpec, &ParentRef)> = store
        .accepted_routes_of(service)
        .filter_map(|r| Some((r, attached_parent(r, service, port.port, &port.name)?)))
        .collect();
    let consumer: Vec<_> = attached
        .iter()
        .filter(|(r, _)| r.meta.namespace == client_ns && client_ns != service.namespace)
        .copied()
        .collect();
    let mut chosen = if consumer.is_empty() {
        attached
            .iter()
            .filter(|(r, _)| r.meta.namespace == service.namespace)
            .copied()
            .collect()
    } else {
        consumer
    };
    chosen.sort_by(|(a, _), (b, _)| a.meta.precedence_key().cmp(&b.meta.precedence_key()));

    let mut policy = OutboundPolicy {
        target: Target(target),
        service: service.clone(),
        port: port.port,
        port_name: (!port.name.is_empty()).then(|| port.name.clone()),
        protocol: backend::port_protocol(svc, port),
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        tcp_routes: Vec::new(),
        tls_routes: Vec::new(),
        backend: own_backend,
    };
    for (route, parent) in chosen {
        match &route.rules {
            Rules::Http(_) => policy
                .http_routes
                .push(http_route(store, route, Some(parent))),
            Rules::Grpc(_) => policy
                .grpc_routes
                .push(grpc_route(store, route, Some(parent))),
            Rules::Opaque(_) => match route.meta.kind {
                trellis_policy::RouteKind::TlsRoute => {
                    policy
                        .tls_routes
                        .push(tls_route(store, route, Some(parent)))
                }
                _ => policy
                    .tcp_routes
                    .push(tcp_route(store, route, Some(parent))),
            },
        }
    }
    Some(policy)
}

fn http_backends(
    store: &Store,
    route: &RouteSpec,
    parent: Option<&ParentRef>,
    refs: &[crate::routes::BackendRef],
) -> Vec<HttpBackend> {
    refs.iter()
        .map(|b| HttpBackend {
            backend: backend::resolve(store, route, parent, b),
            weight: b.weight,
            filters: backend::filters(store, route, parent, &b.filters),
        })
        .collect()
}

/// The rule's own session persistence, else that of an
/// `XBackendTrafficPolicy` of its first Service backend.
fn session(
    store: &Store,
    own: &Option<trellis_policy::SessionPersistence>,
    backends: &[HttpBackend],
) -> Option<trellis_policy::SessionPersistence> {
    own.clone().or_else(|| {
        backends.iter().find_map(|b| match &b.backend {
            Backend::Service(s) => backend::session_persistence(store, &s.service),
            Backend::Invalid { .. } => None,
        })
    })
}

/// A route's HTTP or gRPC rules with their references resolved; the policy
/// model has a rule type for each (`$rule`), with the same fields.
macro_rules! resolved_rules {
    ($rule:ident, $store:expr, $route:expr, $parent:expr, $rules:expr) => {{
        let (store, route, parent) = ($store, $route, $parent);
        $rules
            .iter()
            .map(|r| {
                let backends = http_backends(store, route, parent, &r.backends);
                $rule {
                    name: r.name.clone(),
                    matches: r.matches.clone(),
                    filters: backend::filters(store, route, parent, &r.filters),
                    session_persistence: session(store, &r.session_persistence, &backends),
                    backends,
                    timeouts: r.timeouts,
                    retry: r.retry.clone(),
                }
            })
            .collect()
    }};
}

/// An HTTPRoute with its references resolved. Hostnames are kept for
/// Gateway parents only: in the mesh the ClusterIP a request was sent to
/// selects the policy, not its Host header.
pub fn http_route(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> HttpRoute {
    let rules: &[crate::routes::HttpRuleSpec] = match &route.rules {
        Rules::Http(rules) => rules,
        _ => &[],
    };
    HttpRoute {
        meta: route.meta.clone(),
        hostnames: hostnames_for(route, parent),
        rules: resolved_rules!(HttpRule, store, route, parent, rules),
    }
}

pub fn grpc_route(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> GrpcRoute {
    let rules: &[crate::routes::GrpcRuleSpec] = match &route.rules {
        Rules::Grpc(rules) => rules,
        _ => &[],
    };
    GrpcRoute {
        meta: route.meta.clone(),
        hostnames: hostnames_for(route, parent),
        rules: resolved_rules!(GrpcRule, store, route, parent, rules),
    }
}

fn opaque_rules(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> Vec<TcpRule> {
    let rules: &[crate::routes::OpaqueRuleSpec] = match &route.rules {
        Rules::Opaque(rules) => rules,
        _ => &[],
    };
    rules
        .iter()
        .map(|r| TcpRule {
            name: r.name.clone(),
            backends: r
                .backends
                .iter()
                .map(|b| WeightedBackend {
                    backend: backend::resolve(store, route, parent, b),
                    weight: b.weight,
                })
                .collect(),
        })
        .collect()
}

pub fn tcp_route(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> TcpRoute {
    TcpRoute {
        meta: route.meta.clone(),
        rules: opaque_rules(store, route, parent),
    }
}

pub fn tls_route(store: &Store, route: &RouteSpec, parent: Option<&ParentRef>) -> TlsRoute {
    TlsRoute {
        meta: route.meta.clone(),
        hostnames: route.hostnames.clone(),
        rules: opaque_rules(store, route, parent),
    }
}

fn hostnames_for(route: &RouteSpec, parent: Option<&ParentRef>) -> Vec<trellis_policy::HostMatch> {
    match parent {
        Some(p) if p.is_service() => Vec::new(),
        _ => route.hostnames.clone(),
    }
}
