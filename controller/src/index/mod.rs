//! The index: the controller's one piece of state.
//!
//! Sources (a Kubernetes watch or a manifest directory) call the synchronous
//! [`Index::apply`], [`Index::delete`] and [`Index::reset`] per object. Each
//! call converts the object once into the [`Store`]'s reduced form, works
//! out which published values it can affect, re-resolves only those and
//! sends them on their `tokio::sync::watch` channels when they differ:
//!
//! ```text
//!  source ──apply/delete/reset──► Index ──► Store (reduced objects)
//!                                   │
//!                                   └─► watch::Sender per (ClusterIP:port, client ns)  ──► gRPC OutboundPolicies
//!                                       watch::Sender per (pod, port)                  ──► gRPC InboundPolicies
//!                                       watch::Sender per Gateway                      ──► gRPC GatewayConfig
//! ```
//!
//! A channel exists while someone subscribes to it; nothing is resolved for
//! a target nobody asked about. The gRPC layer only reads the channels.

pub mod gateways;
pub mod policies;
pub mod store;

use crate::objects::{Kind, Object, ObjectKey};
use crate::resolve;
use crate::routes::{self, RouteKey, RouteSpec};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;
use trellis_policy::{GatewayPolicy, InboundPolicy, OutboundPolicy, ResourceRef};

pub use self::store::{Settings, Store};

/// What a subscriber to an outbound target holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// The target is not a Service ClusterIP and port.
    NoPolicy,
    Policy(Arc<OutboundPolicy>),
}

pub type SharedIndex = Arc<Mutex<Index>>;

/// What a change may have affected.
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    services: HashSet<ResourceRef>,
    ips: HashSet<IpAddr>,
    pods: HashSet<ResourceRef>,
    namespaces: HashSet<String>,
    gateways: bool,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        !self.all
            && !self.gateways
            && self.services.is_empty()
            && self.ips.is_empty()
            && self.pods.is_empty()
            && self.namespaces.is_empty()
    }
}

#[derive(Debug)]
pub struct Index {
    store: Store,
    outbound: HashMap<(SocketAddr, String), watch::Sender<Outbound>>,
    inbound: HashMap<(ResourceRef, u16), watch::Sender<Arc<InboundPolicy>>>,
    gateways: HashMap<ResourceRef, watch::Sender<Option<Arc<GatewayPolicy>>>>,
    /// Bumped after every change that touched the store, for the status
    /// writer and the metrics.
    changes: watch::Sender<u64>,
}

impl Index {
    pub fn new(settings: Settings) -> Self {
        Self {
            store: Store {
                settings,
                ..Store::default()
            },
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            gateways: HashMap::new(),
            changes: watch::Sender::new(0),
        }
    }

    pub fn shared(settings: Settings) -> SharedIndex {
        Arc::new(Mutex::new(Self::new(settings)))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A counter that moves whenever the store changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Numbers for `/metrics`: subscribed outbound, inbound and gateway
    /// channels.
    pub fn subscriptions(&self) -> (usize, usize, usize) {
        (self.outbound.len(), self.inbound.len(), self.gateways.len())
    }

    /// Subscribes to a target's outbound policy as seen from `client_ns`.
    pub fn outbound(&mut self, target: SocketAddr, client_ns: &str) -> watch::Receiver<Outbound> {
        let key = (target, client_ns.to_string());
        if let Some(tx) = self.outbound.get(&key) {
            return tx.subscribe();
        }
        let tx = watch::Sender::new(resolve_outbound(&self.store, target, client_ns));
        let rx = tx.subscribe();
        self.outbound.insert(key, tx);
        rx
    }

    /// Subscribes to a workload's inbound policy on `port`.
    pub fn inbound(
        &mut self,
        workload: ResourceRef,
        port: u16,
    ) -> watch::Receiver<Arc<InboundPolicy>> {
        let key = (workload, port);
        if let Some(tx) = self.inbound.get(&key) {
            return tx.subscribe();
        }
        let tx = watch::Sender::new(Arc::new(resolve::inbound(&self.store, &key.0, port)));
        let rx = tx.subscribe();
        self.inbound.insert(key, tx);
        rx
    }

    /// Subscribes to a Gateway's configuration (`None` while the Gateway
    /// does not exist or is not Trellis').
    pub fn gateway(&mut self, gateway: ResourceRef) -> watch::Receiver<Option<Arc<GatewayPolicy>>> {
        if let Some(tx) = self.gateways.get(&gateway) {
            return tx.subscribe();
        }
        let tx = watch::Sender::new(resolve_gateway(&self.store, &gateway));
        let rx = tx.subscribe();
        self.gateways.insert(gateway, tx);
        rx
    }

    /// Records whether a gateway proxy serving `gateway` is ready: the
    /// Gateway's `Programmed` condition follows it.
    pub fn set_programmed(&mut self, gateway: ResourceRef, ready: bool) {
        let changed = if ready {
            self.store.programmed.insert(gateway)
        } else {
            self.store.programmed.remove(&gateway)
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Adds or replaces an object.
    pub fn apply(&mut self, obj: Object) {
        let mut dirty = Dirty::default();
        self.update(obj.kind(), &obj.key(), Some(&obj), &mut dirty);
        self.publish(dirty);
    }

    /// Removes an object.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) {
        let mut dirty = Dirty::default();
        self.update(kind, key, None, &mut dirty);
        self.publish(dirty);
    }

    /// Replaces every object of `kind` with `objects` (after a relist, or a
    /// directory rescan); objects missing from the list are deleted.
    pub fn reset(&mut self, kind: Kind, objects: Vec<Object>) {
        let mut dirty = Dirty::default();
        let keep: HashSet<ObjectKey> = objects.iter().map(Object::key).collect();
        for key in self.keys(kind) {
            if !keep.contains(&key) {
                self.update(kind, &key, None, &mut dirty);
            }
        }
        for obj in &objects {
            self.update(kind, &obj.key(), Some(obj), &mut dirty);
        }
        self.publish(dirty);
    }

    /// The keys of every stored object of `kind`.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        let s = &self.store;
        let refs = |it: &mut dyn Iterator<Item = &ResourceRef>| {
            it.map(|r| ObjectKey::new(r.namespace.clone(), r.name.clone()))
                .collect()
        };
        match kind {
            Kind::Namespace => s
                .namespaces
                .keys()
                .map(|n| ObjectKey::new("", n.clone()))
                .collect(),
            Kind::Service => refs(&mut s.services.keys()),
            Kind::EndpointSlice => s.slices.keys().cloned().collect(),
            Kind::Pod => refs(&mut s.pods.keys()),
            Kind::Secret => refs(&mut s.secrets.keys()),
            Kind::HttpRoute | Kind::GrpcRoute | Kind::TcpRoute | Kind::TlsRoute => s
                .routes
                .keys()
                .filter(|k| k.kind == kind)
                .map(|k| ObjectKey::new(k.namespace.clone(), k.name.clone()))
                .collect(),
            Kind::Gateway => refs(&mut s.gateways.keys()),
            Kind::GatewayClass => s
                .gateway_classes
                .keys()
                .map(|n| ObjectKey::new("", n.clone()))
                .collect(),
            Kind::ReferenceGrant => s.grants.keys().cloned().collect(),
            Kind::BackendTrafficPolicy => s.traffic_policies.keys().cloned().collect(),
            Kind::Mesh => s
                .meshes
                .keys()
                .map(|n| ObjectKey::new("", n.clone()))
                .collect(),
            Kind::AuthorizationPolicy => s.authz.keys().cloned().collect(),
        }
    }

    fn update(&mut self, kind: Kind, key: &ObjectKey, obj: Option<&Object>, dirty: &mut Dirty) {
        let s = &mut self.store;
        let rref = ResourceRef::new(key.namespace.clone(), key.name.clone());
        match (kind, obj) {
            (Kind::Namespace, o) => {
                let new = match o {
                    Some(Object::Namespace(n)) => Some(store::NamespaceInfo::from_object(n)),
                    _ => None,
                };
                if replace(&mut s.namespaces, key.name.clone(), new) {
                    dirty.namespaces.insert(key.name.clone());
                    dirty.gateways = true;
                }
            }
            (Kind::Service, o) => {
                let new = match o {
                    Some(Object::Service(x)) => Some(store::ServiceInfo::from_object(x)),
                    _ => None,
                };
                let old = s.services.get(&rref).cloned();
                if old == new {
                    return;
                }
                for ip in old.iter().flat_map(|o| &o.cluster_ips) {
                    if s.by_cluster_ip.get(ip) == Some(&rref) {
                        s.by_cluster_ip.remove(ip);
                    }
                    dirty.ips.insert(*ip);
                }
                for ip in new.iter().flat_map(|n| &n.cluster_ips) {
                    s.by_cluster_ip.insert(*ip, rref.clone());
                    dirty.ips.insert(*ip);
                }
                replace(&mut s.services, rref.clone(), new);
                self.dirty_service_pods(&rref, dirty);
                dirty.services.insert(rref);
                dirty.gateways = true;
            }
            (Kind::EndpointSlice, o) => {
                let new = match o {
                    Some(Object::EndpointSlice(x)) => Some(store::SliceInfo::from_object(x)),
                    _ => None,
                };
                let old = s.slices.get(key).cloned();
                if old == new {
                    return;
                }
                for info in old.iter().chain(new.iter()) {
                    dirty.services.extend(info.service.clone());
                    dirty
                        .pods
                        .extend(info.endpoints.iter().filter_map(|e| e.pod.clone()));
                }
                if let Some(old) = &old {
                    if let Some(svc) = &old.service
                        && let Some(set) = s.service_slices.get_mut(svc)
                    {
                        set.remove(key);
                        if set.is_empty() {
                            s.service_slices.remove(svc);
                        }
                    }
                    for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                        if let Some(set) = s.pod_slices.get_mut(pod) {
                            set.remove(key);
                            if set.is_empty() {
                                s.pod_slices.remove(pod);
                            }
                        }
                    }
                }
                if let Some(new) = &new {
                    if let Some(svc) = &new.service {
                        s.service_slices
                            .entry(svc.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                    for pod in new.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                        s.pod_slices
                            .entry(pod.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                }
                replace(&mut s.slices, key.clone(), new);
                dirty.gateways = true;
            }
            (Kind::Pod, o) => {
                let new = match o {
                    Some(Object::Pod(x)) => Some(store::PodInfo::from_object(x)),
                    _ => None,
                };
                if replace(&mut s.pods, rref.clone(), new) {
                    dirty
                        .services
                        .extend(resolve::inbound::services_of(s, &rref));
                    dirty.pods.insert(rref);
                    dirty.gateways = true;
                }
            }
            (Kind::Secret, o) => {
                let new = match o {
                    Some(Object::Secret(x)) => gateways::SecretInfo::from_object(x),
                    _ => None,
                };
                if replace(&mut s.secrets, rref, new) {
                    dirty.gateways = true;
                }
            }
            (Kind::HttpRoute | Kind::GrpcRoute | Kind::TcpRoute | Kind::TlsRoute, o) => {
                let new = match o {
                    Some(Object::HttpRoute(r)) => Some(routes::http_route(r)),
                    Some(Object::GrpcRoute(r)) => Some(routes::grpc_route(r)),
                    Some(Object::TcpRoute(r)) => Some(routes::tcp_route(r)),
                    Some(Object::TlsRoute(r)) => Some(routes::tls_route(r)),
                    _ => None,
                };
                let rkey = RouteKey {
                    kind,
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                };
                self.update_route(rkey, new, dirty);
            }
            (Kind::Gateway, o) => {
                let new = match o {
                    Some(Object::Gateway(g)) => Some(gateways::GatewayInfo { object: g.clone() }),
                    _ => None,
                };
                if replace(&mut s.gateways, rref, new) {
                    dirty.gateways = true;
                }
            }
            (Kind::GatewayClass, o) => {
                let new = match o {
                    Some(Object::GatewayClass(c)) => Some(gateways::ClassInfo::from_object(c)),
                    _ => None,
                };
                if replace(&mut s.gateway_classes, key.name.clone(), new) {
                    dirty.gateways = true;
                }
            }
            (Kind::ReferenceGrant, o) => {
                let new = match o {
                    Some(Object::ReferenceGrant(g)) => Some(store::GrantInfo {
                        from: g
                            .spec
                            .from
                            .iter()
                            .map(|f| (f.group.clone(), f.kind.clone(), f.namespace.clone()))
                            .collect(),
                        to: g
                            .spec
                            .to
                            .iter()
                            .map(|t| (t.group.clone(), t.kind.clone(), t.name.clone()))
                            .collect(),
                    }),
                    _ => None,
                };
                if replace(&mut s.grants, key.clone(), new) {
                    // Grants are rare and may unlock any route: re-resolve all.
                    dirty.all = true;
                }
            }
            (Kind::BackendTrafficPolicy, o) => {
                let new = match o {
                    Some(Object::BackendTrafficPolicy(p)) => {
                        Some(policies::TrafficPolicy::from_object(p))
                    }
                    _ => None,
                };
                let old = s.traffic_policies.get(key).cloned();
                if replace(&mut s.traffic_policies, key.clone(), new.clone()) {
                    for p in old.iter().chain(new.iter()) {
                        for name in &p.services {
                            dirty
                                .services
                                .insert(ResourceRef::new(key.namespace.clone(), name.clone()));
                        }
                    }
                    dirty.gateways = true;
                }
            }
            (Kind::Mesh, o) => {
                let new = match o {
                    Some(Object::Mesh(m)) => Some(policies::MeshInfo::from_object(m)),
                    _ => None,
                };
                replace(&mut s.meshes, key.name.clone(), new);
                self.changes.send_modify(|n| *n += 1);
            }
            (Kind::AuthorizationPolicy, o) => {
                let new = match o {
                    Some(Object::AuthorizationPolicy(p)) => {
                        Some(policies::AuthzInfo::from_object(p))
                    }
                    _ => None,
                };
                if replace(&mut s.authz, key.clone(), new) {
                    dirty.namespaces.insert(key.namespace.clone());
                }
            }
        }
    }

    fn update_route(&mut self, key: RouteKey, new: Option<RouteSpec>, dirty: &mut Dirty) {
        let s = &mut self.store;
        let old = s.routes.get(&key).cloned();
        if old == new {
            return;
        }
        for route in old.iter() {
            for p in &route.parents {
                remove_from(&mut s.routes_by_parent, &p.target(), &key);
            }
            for b in route.backend_refs() {
                remove_from(&mut s.routes_by_backend, &b.target(), &key);
            }
        }
        for route in old.iter().chain(new.iter()) {
            dirty.services.extend(
                route
                    .parents
                    .iter()
                    .filter(|p| p.is_service())
                    .map(|p| p.target()),
            );
        }
        if let Some(route) = &new {
            for p in &route.parents {
                s.routes_by_parent
                    .entry(p.target())
                    .or_default()
                    .insert(key.clone());
            }
            for b in route.backend_refs() {
                s.routes_by_backend
                    .entry(b.target())
                    .or_default()
                    .insert(key.clone());
            }
        }
        replace(&mut s.routes, key, new);
        dirty.gateways = true;
    }

    fn dirty_service_pods(&self, service: &ResourceRef, dirty: &mut Dirty) {
        for key in self.store.service_slices.get(service).into_iter().flatten() {
            if let Some(slice) = self.store.slices.get(key) {
                dirty
                    .pods
                    .extend(slice.endpoints.iter().filter_map(|e| e.pod.clone()));
            }
        }
    }

    /// Re-resolves what `dirty` may have changed and sends what differs.
    fn publish(&mut self, dirty: Dirty) {
        if dirty.is_empty() {
            return;
        }
        self.changes.send_modify(|n| *n += 1);
        let store = &self.store;

        // A Service's policy also changes when a backend of one of its
        // routes changes.
        let mut services: HashSet<ResourceRef> = dirty.services.clone();
        for svc in &dirty.services {
            for rk in store.routes_by_backend.get(svc).into_iter().flatten() {
                if let Some(route) = store.routes.get(rk) {
                    services.extend(
                        route
                            .parents
                            .iter()
                            .filter(|p| p.is_service())
                            .map(|p| p.target()),
                    );
                }
            }
        }
        self.outbound.retain(|(target, ns), tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            let svc = store.by_cluster_ip.get(&target.ip());
            if dirty.all
                || dirty.ips.contains(&target.ip())
                || svc.is_some_and(|s| services.contains(s))
            {
                send_changed(tx, resolve_outbound(store, *target, ns));
            }
            true
        });
        self.inbound.retain(|(workload, port), tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            if dirty.all
                || dirty.pods.contains(workload)
                || dirty.namespaces.contains(&workload.namespace)
            {
                send_changed(tx, Arc::new(resolve::inbound(store, workload, *port)));
            }
            true
        });
        if dirty.all || dirty.gateways || !dirty.services.is_empty() {
            self.gateways.retain(|gw, tx| {
                if tx.receiver_count() == 0 {
                    return false;
                }
                send_changed(tx, resolve_gateway(store, gw));
                true
            });
        }
    }
}

/// Publishes `new` when it differs from what `tx` holds, so watchers wake
/// only for a change.
fn send_changed<T: PartialEq>(tx: &watch::Sender<T>, new: T) {
    tx.send_if_modified(|old| {
        if *old == new {
            false
        } else {
            *old = new;
            true
        }
    });
}

fn resolve_outbound(store: &Store, target: SocketAddr, client_ns: &str) -> Outbound {
    match resolve::outbound(store, target, client_ns) {
        Some(p) => Outbound::Policy(Arc::new(p)),
        None => Outbound::NoPolicy,
    }
}

fn resolve_gateway(store: &Store, gateway: &ResourceRef) -> Option<Arc<GatewayPolicy>> {
    resolve::gateway(store, gateway).map(Arc::new)
}

/// Replaces (or removes) a map entry; whether anything changed.
fn replace<K, V, M: MapLike<K, V>>(map: &mut M, key: K, new: Option<V>) -> bool {
    match new {
        Some(v) => map.put(key, v),
        None => map.take(&key),
    }
}

trait MapLike<K, V> {
    /// Inserts; whether the value differs from before.
    fn put(&mut self, key: K, value: V) -> bool;
    /// Removes; whether there was a value.
    fn take(&mut self, key: &K) -> bool;
}

/// `HashMap` and `BTreeMap` share no trait for `get`/`insert`/`remove`.
macro_rules! map_like {
    ($map:ident, $($key_bound:tt)+) => {
        impl<K: $($key_bound)+, V: PartialEq> MapLike<K, V> for $map<K, V> {
            fn put(&mut self, key: K, value: V) -> bool {
                match self.get(&key) {
                    Some(old) if *old == value => false,
                    _ => {
                        self.insert(key, value);
                        true
                    }
                }
            }
            fn take(&mut self, key: &K) -> bool {
                self.remove(key).is_some()
            }
        }
    };
}

map_like!(HashMap, std::hash::Hash + Eq);
map_like!(BTreeMap, Ord);

fn remove_from(
    map: &mut HashMap<ResourceRef, BTreeSet<RouteKey>>,
    at: &ResourceRef,
    key: &RouteKey,
) {
    if let Some(set) = map.get_mut(at) {
        set.remove(key);
        if set.is_empty() {
            map.remove(at);
        }
    }
}
