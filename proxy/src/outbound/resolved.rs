//! A target's policy prepared for the hot path: route tables sorted once,
//! one balancer per backend Service (kept across updates, so endpoint loads,
//! failure records and pooled connections survive a policy change), the
//! backend's retry budget (kept while its configuration is unchanged), and
//! metric labels rendered once, with the series of each (rule, backend)
//! resolved at its first request.

use crate::{
    balance::Balancer,
    metrics::{Direction, Name, RouteMetrics},
    mirror,
    retry::Budget,
    upstream::Upstreams,
};
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};
use tokio::sync::Semaphore;
use trellis_policy::{
    Backend, HttpBackend, HttpFilter, OutboundPolicy, ServiceBackend, Target,
    find::{GrpcRouteTable, HttpRouteTable},
};

/// A backend Service with its balancer, retry budget and label.
#[derive(Debug)]
pub struct BackendState {
    pub name: Name,
    pub balancer: Arc<Balancer>,
    pub budget: Arc<Budget>,
    /// Mirrored requests in flight to this backend, when it is a mirror.
    pub mirrors: Arc<Semaphore>,
}

/// Per rule: its metrics label and, per backend of the rule, the balancer
/// (`None` for an invalid backend, which answers 500).
#[derive(Debug)]
pub struct RuleState {
    pub label: Name,
    pub backends: Vec<Option<Arc<BackendState>>>,
    /// Per backend, the metric series of requests the rule sends there.
    pub metrics: Vec<OnceLock<RouteMetrics>>,
}

/// Whom a policy's requests were sent to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frontend {
    /// A Service port in the mesh: traffic no route governs goes to the
    /// Service itself, redirects keep `http` (the mesh leg is plaintext to
    /// the application).
    #[default]
    Service,
    /// A Gateway listener: a request no route governs is answered 404,
    /// redirects keep the listener's scheme, and requests reach each backend
    /// in the HTTP version its port speaks.
    Listener { https: bool },
}

impl Frontend {
    /// The metrics direction of its requests.
    pub fn direction(&self) -> Direction {
        match self {
            Frontend::Service => Direction::Outbound,
            Frontend::Listener { .. } => Direction::Gateway,
        }
    }

    /// The scheme the client used, which redirects keep.
    pub fn scheme(&self) -> &'static str {
        match self {
            Frontend::Listener { https: true } => "https",
            Frontend::Service | Frontend::Listener { https: false } => "http",
        }
    }
}

/// The resolved policy of one target.
#[derive(Debug)]
pub struct Resolved {
    pub target: Target,
    pub frontend: Frontend,
    /// `None`: not a Service (or nothing known); forward to the original
    /// destination.
    pub policy: Option<Arc<OutboundPolicy>>,
    pub service: Name,
    pub http: HttpRouteTable,
    pub grpc: GrpcRouteTable,
    /// `[route][rule]` of `http` and `grpc`.
    pub http_rules: Vec<Vec<RuleState>>,
    pub grpc_rules: Vec<Vec<RuleState>>,
    /// The Service itself, for traffic no route governs.
    pub default: Option<Arc<BackendState>>,
    /// The metric series of requests no route governs.
    pub default_metrics: OnceLock<RouteMetrics>,
    /// Every backend by name, to carry balancers over to the next policy.
    by_name: HashMap<String, Arc<BackendState>>,
}

impl Resolved {
    pub fn no_policy(target: Target) -> Self {
        Self {
            target,
            frontend: Frontend::Service,
            policy: None,
            service: Name::from(""),
            http: HttpRouteTable::new(Vec::new()),
            grpc: GrpcRouteTable::new(Vec::new()),
            http_rules: Vec::new(),
            grpc_rules: Vec::new(),
            default: None,
            default_metrics: OnceLock::new(),
            by_name: HashMap::new(),
        }
    }

    /// Prepares `policy`, reusing balancers and endpoints of `prev`.
    pub fn build(
        target: Target,
        policy: Option<Arc<OutboundPolicy>>,
        prev: Option<&Resolved>,
        upstreams: &Upstreams,
    ) -> Self {
        let Some(p) = policy else {
            return Self::no_policy(target);
        };
        let mut by_name = HashMap::new();
        let empty = HashMap::new();
        let prev = prev.map_or(&empty, |r| &r.by_name);
        let mut backend = |b: &Backend| match b {
            Backend::Service(s) => Some(backend_state(s, prev, &mut by_name, upstreams)),
            Backend::Invalid { .. } => None,
        };
        let default = backend(&p.backend);
        let http_rules = p
            .http_routes
            .iter()
            .map(|r| {
                let rules = r
                    .rules
                    .iter()
                    .map(|u| (u.name.as_deref(), &u.filters, &u.backends));
                route_rules(&r.meta, rules, &mut backend)
            })
            .collect();
        let grpc_rules = p
            .grpc_routes
            .iter()
            .map(|r| {
                let rules = r
                    .rules
                    .iter()
                    .map(|u| (u.name.as_deref(), &u.filters, &u.backends));
                route_rules(&r.meta, rules, &mut backend)
            })
            .collect();
        for tcp in p
            .tcp_routes
            .iter()
            .flat_map(|r| &r.rules)
            .chain(p.tls_routes.iter().flat_map(|r| &r.rules))
        {
            for b in &tcp.backends {
                backend(&b.backend);
            }
        }
        Self {
            target,
            frontend: Frontend::Service,
            service: Name::from(format!("{}:{}", p.service, p.port)),
            http: HttpRouteTable::new(p.http_routes.clone()),
            grpc: GrpcRouteTable::new(p.grpc_routes.clone()),
            http_rules,
            grpc_rules,
            default,
            default_metrics: OnceLock::new(),
            by_name,
            policy: Some(p),
        }
    }

    /// The balancer of a backend of this policy.
    pub fn backend(&self, b: &Backend) -> Option<&Arc<BackendState>> {
        match b {
            Backend::Service(s) => self.by_name.get(&backend_key(s)),
            Backend::Invalid { .. } => None,
        }
    }

    /// Every backend's endpoints with their load, for `/config`.
    pub fn endpoints_json(&self) -> serde_json::Value {
        let backends: serde_json::Map<String, serde_json::Value> = self
            .by_name
            .iter()
            .map(|(name, b)| {
                let eps: Vec<_> = b
                    .balancer
                    .endpoints()
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "addr": u.addr.to_string(),
                            "identity": u.identity.as_ref().map(|i| i.as_str()),
                            "pending": u.load.pending(),
                            "ewmaMs": u.load.ewma_ns() / 1e6,
                        })
                    })
                    .collect();
                (name.clone(), serde_json::Value::Array(eps))
            })
            .collect();
        serde_json::Value::Object(backends)
    }
}

/// The state of each rule of one HTTP or gRPC route (given as name,
/// filters and backends): its metric label and the balancer of each
/// backend, with the backends of its mirrors prepared too.
fn route_rules<'r>(
    meta: &trellis_policy::RouteRef,
    rules: impl Iterator<Item = (Option<&'r str>, &'r Vec<HttpFilter>, &'r Vec<HttpBackend>)>,
    backend: &mut dyn FnMut(&Backend) -> Option<Arc<BackendState>>,
) -> Vec<RuleState> {
    rules
        .enumerate()
        .map(|(i, (name, filters, backends))| {
            let mirrors = filters
                .iter()
                .chain(backends.iter().flat_map(|b| &b.filters));
            for f in mirrors {
                if let HttpFilter::RequestMirror(m) = f {
                    backend(&m.backend);
                }
            }
            RuleState {
                label: Name::from(rule_label(meta, name, i)),
                backends: backends.iter().map(|b| backend(&b.backend)).collect(),
                metrics: backends.iter().map(|_| OnceLock::new()).collect(),
            }
        })
        .collect()
}

fn rule_label(meta: &trellis_policy::RouteRef, name: Option<&str>, index: usize) -> String {
    match name {
        Some(n) => format!("{meta} rule {n}"),
        None => format!("{meta} rule {index}"),
    }
}

fn backend_key(s: &ServiceBackend) -> String {
    format!("{}:{}", s.service, s.port)
}

/// The backend's state, reusing the previous balancer and the endpoints
/// that did not change (same address and identity).
fn backend_state(
    s: &ServiceBackend,
    prev: &HashMap<String, Arc<BackendState>>,
    next: &mut HashMap<String, Arc<BackendState>>,
    upstreams: &Upstreams,
) -> Arc<BackendState> {
    let key = backend_key(s);
    if let Some(b) = next.get(&key) {
        return b.clone();
    }
    let old = prev.get(&key);
    let old_eps = old.map(|b| b.balancer.endpoints()).unwrap_or_default();
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| {
            old_eps
                .iter()
                .find(|u| u.addr == e.addr && u.identity == e.identity)
                .cloned()
                .unwrap_or_else(|| upstreams.endpoint(e.addr, e.identity.as_ref()))
        })
        .collect();
    let budget_config = s.retry_budget.clone().unwrap_or_default();
    let state = match old {
        Some(b) => {
            b.balancer.update(endpoints);
            Arc::new(BackendState {
                name: b.name.clone(),
                balancer: b.balancer.clone(),
                budget: if *b.budget.config() == budget_config {
                    b.budget.clone()
                } else {
                    Arc::new(Budget::new(budget_config))
                },
                mirrors: b.mirrors.clone(),
            })
        }
        None => Arc::new(BackendState {
            name: Name::from(key.as_str()),
            balancer: Arc::new(Balancer::new(endpoints)),
            budget: Arc::new(Budget::new(budget_config)),
            mirrors: Arc::new(Semaphore::new(mirror::MAX_IN_FLIGHT)),
        }),
    };
    next.insert(key, state.clone());
    state
}
