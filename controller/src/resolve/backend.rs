//! Backend references: whether a reference may be followed, and the Service
//! backend (with its ready endpoints) it leads to.

use crate::index::store::{ServiceInfo, ServicePort, Store, TargetPort};
use crate::routes::{BackendRef, Filter, GATEWAY_GROUP, ParentRef, RouteSpec};
use std::net::SocketAddr;
use trellis_policy::{
    Backend, Endpoint, HttpFilter, Protocol, RequestMirror, ResourceRef, ServiceBackend,
    SessionPersistence, SpiffeId,
};

/// Why a reference cannot be followed, with the reason the spec names for
/// the `ResolvedRefs` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefProblem {
    NotFound(String),
    NotPermitted(String),
    InvalidKind(String),
    Unsupported(String),
}

impl RefProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            RefProblem::NotFound(_) => "BackendNotFound",
            RefProblem::NotPermitted(_) => "RefNotPermitted",
            RefProblem::InvalidKind(_) => "InvalidKind",
            RefProblem::Unsupported(_) => "UnsupportedValue",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            RefProblem::NotFound(m)
            | RefProblem::NotPermitted(m)
            | RefProblem::InvalidKind(m)
            | RefProblem::Unsupported(m) => m,
        }
    }
}

/// Whether a ReferenceGrant in `to_ns` lets objects of `from_kind` in
/// `from_ns` refer to the `to_kind` named `to_name`.
pub fn granted(
    store: &Store,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    fn core(g: &str) -> &str {
        if g == "core" { "" } else { g }
    }
    store
        .grants
        .iter()
        .filter(|(k, _)| k.namespace == to_ns)
        .any(|(_, g)| {
            g.from
                .iter()
                .any(|(grp, kind, ns)| grp == GATEWAY_GROUP && kind == from_kind && ns == from_ns)
                && g.to.iter().any(|(grp, kind, name)| {
                    core(grp) == core(to_group)
                        && kind == to_kind
                        && name.as_deref().is_none_or(|n| n == to_name)
                })
        })
}

/// Follows a backend reference of `route` as seen through `parent`.
pub fn check<'s>(
    store: &'s Store,
    route: &RouteSpec,
    parent: Option<&ParentRef>,
    b: &BackendRef,
) -> Result<(&'s ServiceInfo, &'s ServicePort), RefProblem> {
    if !b.is_service() {
        return Err(RefProblem::InvalidKind(format!(
            "unsupported backend kind {}/{} (only core Services)",
            if b.group.is_empty() { "core" } else { &b.group },
            b.kind
        )));
    }
    let route_ns = &route.meta.namespace;
    if &b.namespace != route_ns {
        // A consumer route may always send to the Service it is attached to:
        // that reference was already allowed by attaching to it (GAMMA).
        let own_parent = parent.is_some_and(|p| p.is_service() && p.target() == b.target());
        if !own_parent
            && !granted(
                store,
                route.meta.kind.as_str(),
                route_ns,
                "",
                "Service",
                &b.namespace,
                &b.name,
            )
        {
            return Err(RefProblem::NotPermitted(format!(
                "no ReferenceGrant in {} allows {} from {route_ns} to refer to Service {}",
                b.namespace,
                route.meta.kind.as_str(),
                b.name
            )));
        }
    }
    let Some(svc) = store.services.get(&b.target()) else {
        return Err(RefProblem::NotFound(format!(
            "service {} not found",
            b.target()
        )));
    };
    let Some(port) = b.port else {
        return Err(RefProblem::Unsupported(format!(
            "backendRef to Service {} has no port",
            b.target()
        )));
    };
    let Some(sp) = svc.port(port) else {
        return Err(RefProblem::NotFound(format!(
            "service {} has no port {port}",
            b.target()
        )));
    };
    Ok((svc, sp))
}

/// The protocol of a Service port, `trellis.io/opaque-ports` first.
pub fn port_protocol(svc: &ServiceInfo, port: &ServicePort) -> Protocol {
    if svc.opaque_ports.contains(&port.port) {
        Protocol::Opaque
    } else {
        Protocol::from_app_protocol(port.app_protocol.as_deref())
    }
}

/// The ready endpoints of one Service port, target ports resolved.
pub fn endpoints(store: &Store, service: &ResourceRef, port: &ServicePort) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for key in store.service_slices.get(service).into_iter().flatten() {
        let Some(slice) = store.slices.get(key) else {
            continue;
        };
        let slice_port = slice
            .ports
            .iter()
            .find(|p| p.name == port.name)
            .and_then(|p| p.port);
        for ep in slice.endpoints.iter().filter(|e| e.ready) {
            let pod = ep.pod.as_ref().and_then(|p| store.pods.get(p));
            let target = match (slice_port, &port.target_port) {
                (Some(p), _) => Some(p),
                (None, TargetPort::Number(n)) => Some(*n),
                (None, TargetPort::Name(name)) => {
                    pod.and_then(|p| p.named_ports.get(name).copied())
                }
            };
            let Some(target) = target else {
                continue;
            };
            let identity = match (&ep.pod, pod) {
                (Some(pod_ref), Some(pod)) if pod.meshed => Some(SpiffeId::for_service_account(
                    &store.settings.trust_domain,
                    &pod_ref.namespace,
                    &pod.service_account,
                )),
                _ => None,
            };
            for ip in &ep.addresses {
                out.push(Endpoint {
                    addr: SocketAddr::new(*ip, target),
                    identity: identity.clone(),
                    pod: ep.pod.clone(),
                    zone: ep.zone.clone(),
                });
            }
        }
    }
    out.sort_by_key(|a| a.addr);
    out.dedup_by(|a, b| a.addr == b.addr);
    out
}

/// The `XBackendTrafficPolicy` that governs a Service: the oldest one
/// targeting it (then by name), as the spec resolves conflicts.
fn traffic_policy<'s>(
    store: &'s Store,
    service: &ResourceRef,
) -> Option<&'s crate::index::policies::TrafficPolicy> {
    store
        .traffic_policies
        .iter()
        .filter(|(k, p)| k.namespace == service.namespace && p.services.contains(&service.name))
        .min_by(|(ka, a), (kb, b)| (a.created, &ka.name).cmp(&(b.created, &kb.name)))
        .map(|(_, p)| p)
}

/// The session persistence an `XBackendTrafficPolicy` gives a Service.
pub fn session_persistence(store: &Store, service: &ResourceRef) -> Option<SessionPersistence> {
    traffic_policy(store, service).and_then(|p| p.session_persistence.clone())
}

/// A Service port as a backend, endpoints and retry budget included.
pub fn service_backend(
    store: &Store,
    service: &ResourceRef,
    svc: &ServiceInfo,
    port: &ServicePort,
) -> ServiceBackend {
    ServiceBackend {
        service: service.clone(),
        port: port.port,
        authority: format!(
            "{}.{}.svc.{}:{}",
            service.name, service.namespace, store.settings.cluster_domain, port.port
        ),
        protocol: port_protocol(svc, port),
        endpoints: endpoints(store, service, port),
        retry_budget: traffic_policy(store, service).and_then(|p| p.retry_budget.clone()),
    }
}

/// A backend reference resolved for a proxy: a Service backend, or an
/// invalid backend that answers 500 for its share.
pub fn resolve(
    store: &Store,
    route: &RouteSpec,
    parent: Option<&ParentRef>,
    b: &BackendRef,
) -> Backend {
    match check(store, route, parent, b) {
        Ok((svc, port)) => Backend::Service(service_backend(store, &b.target(), svc, port)),
        Err(problem) => Backend::Invalid {
            name: b.display(),
            message: problem.message().to_string(),
        },
    }
}

/// Filters resolved: mirrors get their backend.
pub fn filters(
    store: &Store,
    route: &RouteSpec,
    parent: Option<&ParentRef>,
    filters: &[Filter],
) -> Vec<HttpFilter> {
    filters
        .iter()
        .map(|f| match f {
            Filter::Ready(f) => f.clone(),
            Filter::Mirror { backend, fraction } => HttpFilter::RequestMirror(RequestMirror {
                backend: resolve(store, route, parent, backend),
                fraction: *fraction,
            }),
        })
        .collect()
}
