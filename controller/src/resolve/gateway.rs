//! Gateways (north-south): a Gateway of a GatewayClass whose
//! `controllerName` is `trellis.io/controller` becomes a [`GatewayPolicy`]:
//! its listeners, each with the routes attached to it.
//!
//! A route attaches to a listener when its parentRef names the Gateway (and,
//! if given, the listener's `sectionName` and `port`), the listener's
//! `allowedRoutes` admits the route's namespace and kind, and the route's
//! hostnames intersect the listener's. HTTPS and TLS-terminate listeners
//! carry the certificates of their `kubernetes.io/tls` Secrets; a Secret in
//! another namespace needs a ReferenceGrant.

use super::backend::granted;
use super::outbound::{grpc_route, http_route, tcp_route, tls_route};
use crate::index::store::Store;
use crate::routes::{GATEWAY_GROUP, ParentRef, RouteSpec, Rules};
use crate::status::{Condition, ObjectStatus};
use gateway_api::experimental::gateways::{Gateway, GatewayListeners};
use std::collections::BTreeMap;
use trellis_policy::{
    CertificatePem, GatewayPolicy, HostMatch, Listener, ListenerProtocol, ListenerTls, ResourceRef,
    RouteKind, TlsMode,
};

/// The Gateway, when it exists and its class is Trellis'.
fn ours<'s>(store: &'s Store, gw: &ResourceRef) -> Option<&'s Gateway> {
    let info = store.gateways.get(gw)?;
    let class = store
        .gateway_classes
        .get(&info.object.spec.gateway_class_name)?;
    class.ours.then_some(&info.object)
}

fn protocol(l: &GatewayListeners) -> Option<ListenerProtocol> {
    match l.protocol.as_str() {
        "HTTP" => Some(ListenerProtocol::Http),
        "HTTPS" => Some(ListenerProtocol::Https),
        "TLS" => Some(ListenerProtocol::Tls),
        "TCP" => Some(ListenerProtocol::Tcp),
        _ => None,
    }
}

/// Route kinds a listener admits: its `allowedRoutes.kinds`, else the
/// protocol's defaults.
fn allowed_kinds(l: &GatewayListeners) -> Vec<RouteKind> {
    let defaults = match protocol(l) {
        Some(ListenerProtocol::Http | ListenerProtocol::Https) => {
            vec![RouteKind::HttpRoute, RouteKind::GrpcRoute]
        }
        Some(ListenerProtocol::Tls) => vec![RouteKind::TlsRoute],
        Some(ListenerProtocol::Tcp) => vec![RouteKind::TcpRoute],
        None => Vec::new(),
    };
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        Some(kinds) => defaults
            .into_iter()
            .filter(|d| {
                kinds.iter().any(|k| {
                    k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                        && k.kind == d.as_str()
                })
            })
            .collect(),
        None => defaults,
    }
}

fn selector_matches(
    labels: &BTreeMap<String, String>,
    match_labels: Option<&BTreeMap<String, String>>,
    expressions: &[(String, String, Vec<String>)],
) -> bool {
    match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && expressions
            .iter()
            .all(|(key, op, values)| match op.as_str() {
                "In" => labels.get(key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(key),
                "DoesNotExist" => !labels.contains_key(key),
                _ => false,
            })
}

fn namespace_allowed(store: &Store, gw_ns: &str, l: &GatewayListeners, route_ns: &str) -> bool {
    let Some(ns) = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    else {
        return route_ns == gw_ns;
    };
    match ns.from.as_ref().map(crate::routes::wire_name).as_deref() {
        Some("All") => true,
        Some("Selector") => {
            let Some(sel) = &ns.selector else {
                return false;
            };
            let expressions: Vec<_> = sel
                .match_expressions
                .iter()
                .flatten()
                .map(|e| {
                    (
                        e.key.clone(),
                        e.operator.clone(),
                        e.values.clone().unwrap_or_default(),
                    )
                })
                .collect();
            store.namespaces.get(route_ns).is_some_and(|n| {
                selector_matches(&n.labels, sel.match_labels.as_ref(), &expressions)
            })
        }
        _ => route_ns == gw_ns,
    }
}

/// The hostnames a route serves on a listener: the intersection of both,
/// the more specific name of each matching pair. `None` when they do not
/// intersect.
pub fn intersect(listener: Option<&HostMatch>, route: &[HostMatch]) -> Option<Vec<HostMatch>> {
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![l.clone()]);
    }
    let within = |inner: &HostMatch, outer: &HostMatch| match (inner, outer) {
        (HostMatch::Exact(h), _) => {
            outer.matches(h) || matches!(outer, HostMatch::Exact(o) if o == h)
        }
        (HostMatch::Wildcard(i), HostMatch::Wildcard(o)) => {
            i == o || HostMatch::Wildcard(o.clone()).matches(i)
        }
        (HostMatch::Wildcard(_), HostMatch::Exact(_)) => false,
    };
    let out: Vec<HostMatch> = route
        .iter()
        .filter_map(|r| {
            if within(r, l) {
                Some(r.clone())
            } else if within(l, r) {
                Some(l.clone())
            } else {
                None
            }
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Why a route does not attach to any listener of a Gateway.
enum Refusal {
    NoMatchingParent,
    NotAllowed,
    NoHostname,
}

/// The listeners of `gw` a route attaches to through `parent`.
fn attach<'g>(
    store: &Store,
    gw: &'g Gateway,
    route: &RouteSpec,
    parent: &ParentRef,
) -> Result<Vec<(&'g GatewayListeners, Vec<HostMatch>)>, Refusal> {
    let gw_ns = gw.metadata.namespace.as_deref().unwrap_or_default();
    let mut refusal = Refusal::NoMatchingParent;
    let mut out = Vec::new();
    for l in &gw.spec.listeners {
        if protocol(l).is_none()
            || parent.section_name.as_deref().is_some_and(|s| s != l.name)
            || parent.port.is_some_and(|p| i32::from(p) != l.port)
        {
            continue;
        }
        if !allowed_kinds(l).contains(&route.meta.kind)
            || !namespace_allowed(store, gw_ns, l, &route.meta.namespace)
        {
            refusal = Refusal::NotAllowed;
            continue;
        }
        let listener_host = l.hostname.as_deref().and_then(|h| HostMatch::parse(h).ok());
        match intersect(listener_host.as_ref(), &route.hostnames) {
            Some(hosts) => out.push((l, hosts)),
            None => {
                if !matches!(refusal, Refusal::NotAllowed) {
                    refusal = Refusal::NoHostname;
                }
            }
        }
    }
    if out.is_empty() {
        Err(refusal)
    } else {
        Ok(out)
    }
}

/// A listener's certificates, or why one cannot be used
/// (`InvalidCertificateRef`, `RefNotPermitted`).
fn certificates(
    store: &Store,
    gw: &Gateway,
    l: &GatewayListeners,
) -> (Vec<CertificatePem>, Option<(&'static str, String)>) {
    let gw_ns = gw.metadata.namespace.clone().unwrap_or_default();
    let mut certs = Vec::new();
    let mut problem = None;
    for r in l
        .tls
        .iter()
        .flat_map(|t| t.certificate_refs.iter().flatten())
    {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let ns = r.namespace.clone().unwrap_or_else(|| gw_ns.clone());
        if !(group.is_empty() || group == "core") || kind != "Secret" {
            problem.get_or_insert((
                "InvalidCertificateRef",
                format!("unsupported certificateRef kind {kind}"),
            ));
            continue;
        }
        if ns != gw_ns && !granted(store, "Gateway", &gw_ns, "", "Secret", &ns, &r.name) {
            problem.get_or_insert((
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in {ns} allows Gateway from {gw_ns} to refer to Secret {}",
                    r.name
                ),
            ));
            continue;
        }
        match store
            .secrets
            .get(&ResourceRef::new(ns.clone(), r.name.clone()))
        {
            Some(s) => certs.push(CertificatePem {
                chain_pem: s.chain_pem.clone(),
                key_pem: s.key_pem.clone(),
            }),
            None => {
                problem.get_or_insert((
                    "InvalidCertificateRef",
                    format!(
                        "secret {ns}/{} not found or not of type kubernetes.io/tls",
                        r.name
                    ),
                ));
            }
        }
    }
    (certs, problem)
}

fn tls_mode(l: &GatewayListeners) -> TlsMode {
    match l
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_ref())
        .map(crate::routes::wire_name)
        .as_deref()
    {
        Some("Passthrough") => TlsMode::Passthrough,
        _ => TlsMode::Terminate,
    }
}

/// The configuration of a Trellis Gateway; `None` if it does not exist or
/// belongs to another controller.
pub fn gateway(store: &Store, gw_ref: &ResourceRef) -> Option<GatewayPolicy> {
    let gw = ours(store, gw_ref)?;
    let mut listeners: Vec<Listener> = Vec::new();
    for l in &gw.spec.listeners {
        let (Some(protocol), Ok(port)) = (protocol(l), u16::try_from(l.port)) else {
            continue;
        };
        let tls = match protocol {
            ListenerProtocol::Https | ListenerProtocol::Tls => {
                let mode = tls_mode(l);
                let certificates = match mode {
                    TlsMode::Terminate => certificates(store, gw, l).0,
                    TlsMode::Passthrough => Vec::new(),
                };
                Some(ListenerTls { mode, certificates })
            }
            _ => None,
        };
        listeners.push(Listener {
            name: l.name.clone(),
            port,
            protocol,
            hostname: l.hostname.as_deref().and_then(|h| HostMatch::parse(h).ok()),
            tls,
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
            tls_routes: Vec::new(),
            tcp_routes: Vec::new(),
        });
    }
    let mut attached: Vec<&RouteSpec> = store.accepted_routes_of(gw_ref).collect();
    attached.sort_by(|a, b| a.meta.precedence_key().cmp(&b.meta.precedence_key()));
    for route in attached {
        for parent in route
            .parents
            .iter()
            .filter(|p| p.is_gateway() && p.target() == *gw_ref)
        {
            let Ok(on) = attach(store, gw, route, parent) else {
                continue;
            };
            for (l, hosts) in on {
                let Some(listener) = listeners.iter_mut().find(|x| x.name == l.name) else {
                    continue;
                };
                let mut spec = route.clone();
                spec.hostnames = hosts;
                match &route.rules {
                    Rules::Http(_) => {
                        listener
                            .http_routes
                            .push(http_route(store, &spec, Some(parent)))
                    }
                    Rules::Grpc(_) => {
                        listener
                            .grpc_routes
                            .push(grpc_route(store, &spec, Some(parent)))
                    }
                    Rules::Opaque(_) if route.meta.kind == RouteKind::TlsRoute => listener
                        .tls_routes
                        .push(tls_route(store, &spec, Some(parent))),
                    Rules::Opaque(_) => {
                        listener
                            .tcp_routes
                            .push(tcp_route(store, &spec, Some(parent)))
                    }
                }
            }
        }
    }
    Some(GatewayPolicy {
        gateway: gw_ref.clone(),
        listeners,
    })
}

/// The conditions of a route for a Gateway parent; `None` when the Gateway
/// is not Trellis' (another controller writes that entry).
pub fn route_parent(
    store: &Store,
    route: &RouteSpec,
    parent: &ParentRef,
) -> Option<Vec<Condition>> {
    let gw = ours(store, &parent.target())?;
    let g = route.generation;
    let accepted = match (&route.error, attach(store, gw, route, parent)) {
        (Some(e), _) => Condition::new("Accepted", false, "UnsupportedValue", e.clone(), g),
        (None, Ok(_)) => Condition::new("Accepted", true, "Accepted", "Route is accepted", g),
        (None, Err(Refusal::NotAllowed)) => Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "no listener allows this route's namespace and kind",
            g,
        ),
        (None, Err(Refusal::NoHostname)) => Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no listener hostname intersects the route's hostnames",
            g,
        ),
        (None, Err(Refusal::NoMatchingParent)) => Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener matches the parentRef's sectionName and port",
            g,
        ),
    };
    Some(vec![
        accepted,
        crate::status::resolved_refs(store, route, Some(parent)),
    ])
}

/// Status of Trellis' GatewayClasses and Gateways.
pub fn statuses(store: &Store) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for (name, class) in store.gateway_classes.iter().filter(|(_, c)| c.ours) {
        out.push(ObjectStatus::served(
            "GatewayClass",
            name,
            "Trellis serves this class",
            class.generation,
        ));
    }
    for gw_ref in store.gateways.keys() {
        let Some(gw) = ours(store, gw_ref) else {
            continue;
        };
        let g = gw.metadata.generation;
        let mut listeners = Vec::new();
        let mut any_valid = false;
        for l in &gw.spec.listeners {
            let kinds: Vec<_> = allowed_kinds(l)
                .iter()
                .map(|k| serde_json::json!({"group": GATEWAY_GROUP, "kind": k.as_str()}))
                .collect();
            let attached = store
                .accepted_routes_of(gw_ref)
                .filter(|r| {
                    r.parents.iter().any(|p| {
                        p.is_gateway()
                            && p.target() == *gw_ref
                            && attach(store, gw, r, p)
                                .is_ok_and(|on| on.iter().any(|(x, _)| x.name == l.name))
                    })
                })
                .count();
            let mut conditions = Vec::new();
            if protocol(l).is_none() {
                conditions.push(Condition::new(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    format!("protocol {} is not supported", l.protocol),
                    g,
                ));
            } else {
                any_valid = true;
                conditions.push(Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    "Listener is accepted",
                    g,
                ));
            }
            let problem = match protocol(l) {
                Some(ListenerProtocol::Https | ListenerProtocol::Tls)
                    if tls_mode(l) == TlsMode::Terminate =>
                {
                    certificates(store, gw, l).1
                }
                _ => None,
            };
            conditions.push(match problem {
                Some((reason, message)) => {
                    Condition::new("ResolvedRefs", false, reason, message, g)
                }
                None => Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "All references are resolved",
                    g,
                ),
            });
            conditions.push(programmed(store, gw_ref, g));
            listeners.push(serde_json::json!({
                "name": l.name,
                "supportedKinds": kinds,
                "attachedRoutes": attached,
                "conditions": conditions,
            }));
        }
        let accepted = if any_valid || gw.spec.listeners.is_empty() {
            Condition::new("Accepted", true, "Accepted", "Gateway is accepted", g)
        } else {
            Condition::new(
                "Accepted",
                false,
                "ListenersNotValid",
                "no listener is valid",
                g,
            )
        };
        out.push(ObjectStatus {
            extra: Some(serde_json::json!({ "listeners": listeners })),
            ..ObjectStatus::of(
                "Gateway",
                &gw_ref.namespace,
                &gw_ref.name,
                vec![accepted, programmed(store, gw_ref, g)],
            )
        });
    }
    out
}

/// `Programmed`: true once a gateway proxy serving this Gateway reported
/// ready through [`crate::index::Index::set_programmed`].
fn programmed(store: &Store, gw: &ResourceRef, g: Option<i64>) -> Condition {
    if store.programmed.contains(gw) {
        Condition::new(
            "Programmed",
            true,
            "Programmed",
            "A gateway proxy serves this Gateway",
            g,
        )
    } else {
        Condition::new(
            "Programmed",
            false,
            "Pending",
            "waiting for a gateway proxy to report ready",
            g,
        )
    }
}
