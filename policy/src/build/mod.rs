//! Fixture builders that read like sentences, for this crate's tests and
//! for the tests of every crate that uses the model (enable the
//! `test-util` feature in `[dev-dependencies]`):
//!
//! ```
//! use trellis_policy::build::*;
//!
//! let routes = vec![
//!     route("shop", "web")
//!         .created(10)
//!         .host("a.example.com")
//!         .rule(rule().prefix("/v2").header("x", "y").backend(service("shop", "web-v2", 80)))
//!         .rule(rule().prefix("/").or().header("version", "one").backend(service("shop", "web", 80)))
//!         .build(),
//! ];
//! let req = get("/v2/items").host("a.example.com").header("x", "y").build();
//! let found = trellis_policy::find::http(&routes, &req).unwrap();
//! assert_eq!(found.rule_index, 0);
//! ```
//!
//! Conditions (`prefix`, `header`, ...) go to the rule's current match;
//! `or()` starts another match of the same rule. [`arbitrary`] holds
//! proptest strategies for every model type.

pub mod arbitrary;
mod filters;

pub use self::filters::*;

use crate::{
    Backend, Endpoint, GrpcMatch, GrpcMethodMatch, GrpcRoute, GrpcRule, HeaderMatch, HostMatch,
    HttpBackend, HttpFilter, HttpMatch, HttpRetry, HttpRoute, HttpRule, PathMatch, Protocol,
    QueryParamMatch, ResourceRef, RouteKind, RouteRef, ServiceBackend, SpiffeId, TcpRoute, TcpRule,
    TlsRoute, ValueMatch, WeightedBackend, regex::Regex,
};
use std::{net::SocketAddr, time::Duration};

/// The cluster domain of the fixtures' Service authorities.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

fn meta(kind: RouteKind, namespace: &str, name: &str) -> RouteRef {
    RouteRef {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        creation_timestamp: 0,
    }
}

/// A fixture is written by the test author: a bad hostname or pattern is a
/// mistake in the test, reported at once.
fn host(h: &str) -> HostMatch {
    HostMatch::parse(h).unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("fixture: {e}"))
}

/// The match that conditions go to: the last one, made when the rule has
/// none yet (HTTP and gRPC rule builders alike).
fn current<M: Default>(matches: &mut Vec<M>) -> &mut M {
    if matches.is_empty() {
        matches.push(M::default());
    }
    let last = matches.len() - 1;
    &mut matches[last]
}

/// A header condition; the model stores names lower-case.
fn header_match(name: &str, value: ValueMatch) -> HeaderMatch {
    HeaderMatch {
        name: name.to_ascii_lowercase(),
        value,
    }
}

/// An HTTPRoute: `route("ns", "name")`.
pub fn route(namespace: &str, name: &str) -> RouteBuilder {
    RouteBuilder(HttpRoute {
        meta: meta(RouteKind::HttpRoute, namespace, name),
        hostnames: Vec::new(),
        rules: Vec::new(),
    })
}

/// An HTTPRoute under construction.
#[derive(Clone, Debug)]
pub struct RouteBuilder(HttpRoute);

impl RouteBuilder {
    /// Its creation time, in seconds since the epoch.
    pub fn created(mut self, timestamp: i64) -> Self {
        self.0.meta.creation_timestamp = timestamp;
        self
    }

    /// Adds a hostname (`example.com` or `*.example.com`).
    pub fn host(mut self, hostname: &str) -> Self {
        self.0.hostnames.push(host(hostname));
        self
    }

    pub fn rule(mut self, rule: impl Into<HttpRule>) -> Self {
        self.0.rules.push(rule.into());
        self
    }

    pub fn build(self) -> HttpRoute {
        self.0
    }
}

impl From<RouteBuilder> for HttpRoute {
    fn from(r: RouteBuilder) -> HttpRoute {
        r.0
    }
}

/// An HTTPRoute rule: `rule().prefix("/v2").backend(service("ns", "web", 80))`.
pub fn rule() -> RuleBuilder {
    RuleBuilder(HttpRule::default())
}

/// An HTTPRoute rule under construction.
#[derive(Clone, Debug)]
pub struct RuleBuilder(HttpRule);

impl RuleBuilder {
    pub fn named(mut self, name: &str) -> Self {
        self.0.name = Some(name.to_string());
        self
    }

    fn current(&mut self) -> &mut HttpMatch {
        current(&mut self.0.matches)
    }

    /// Starts another match: the rule matches if any of its matches does.
    pub fn or(mut self) -> Self {
        self.0.matches.push(HttpMatch::default());
        self
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.current().path = Some(PathMatch::Prefix(prefix.to_string()));
        self
    }

    pub fn exact(mut self, path: &str) -> Self {
        self.current().path = Some(PathMatch::Exact(path.to_string()));
        self
    }

    pub fn path_regex(mut self, pattern: &str) -> Self {
        self.current().path = Some(PathMatch::Regex(regex(pattern)));
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.current().method = Some(method.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.current()
            .headers
            .push(header_match(name, ValueMatch::Exact(value.to_string())));
        self
    }

    pub fn header_regex(mut self, name: &str, pattern: &str) -> Self {
        self.current()
            .headers
            .push(header_match(name, ValueMatch::Regex(regex(pattern))));
        self
    }

    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.current().query_params.push(QueryParamMatch {
            name: name.to_string(),
            value: ValueMatch::Exact(value.to_string()),
        });
        self
    }

    pub fn query_regex(mut self, name: &str, pattern: &str) -> Self {
        self.current().query_params.push(QueryParamMatch {
            name: name.to_string(),
            value: ValueMatch::Regex(regex(pattern)),
        });
        self
    }

    pub fn filter(mut self, filter: impl Into<HttpFilter>) -> Self {
        self.0.filters.push(filter.into());
        self
    }

    pub fn backend(mut self, backend: impl Into<HttpBackend>) -> Self {
        self.0.backends.push(backend.into());
        self
    }

    /// `timeouts.request`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeouts.request = Some(timeout);
        self
    }

    /// `timeouts.backendRequest`.
    pub fn backend_timeout(mut self, timeout: Duration) -> Self {
        self.0.timeouts.backend_request = Some(timeout);
        self
    }

    pub fn retry(mut self, attempts: u32, codes: &[u16]) -> Self {
        self.0.retry = Some(HttpRetry {
            codes: codes.to_vec(),
            attempts,
            backoff: None,
        });
        self
    }

    pub fn build(self) -> HttpRule {
        self.0
    }
}

impl From<RuleBuilder> for HttpRule {
    fn from(r: RuleBuilder) -> HttpRule {
        r.0
    }
}

/// A Service port as a backend, weight 1:
/// `service("ns", "web", 80).weight(3).endpoint("10.0.0.1:8080")`.
pub fn service(namespace: &str, name: &str, port: u16) -> BackendBuilder {
    BackendBuilder {
        backend: Backend::Service(ServiceBackend {
            service: ResourceRef::new(namespace, name),
            port,
            authority: format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}:{port}"),
            protocol: Protocol::Detect,
            endpoints: Vec::new(),
            retry_budget: None,
        }),
        weight: 1,
        filters: Vec::new(),
    }
}

/// A backend reference the controller could not resolve, weight 1.
pub fn invalid(name: &str, message: &str) -> BackendBuilder {
    BackendBuilder {
        backend: Backend::Invalid {
            name: name.to_string(),
            message: message.to_string(),
        },
        weight: 1,
        filters: Vec::new(),
    }
}

/// A backend under construction.
#[derive(Clone, Debug)]
pub struct BackendBuilder {
    backend: Backend,
    weight: u32,
    filters: Vec<HttpFilter>,
}

impl BackendBuilder {
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Filters that apply only when this backend is chosen.
    pub fn filter(mut self, filter: impl Into<HttpFilter>) -> Self {
        self.filters.push(filter.into());
        self
    }

    /// Adds a ready, unmeshed endpoint (`"10.0.0.1:8080"`).
    pub fn endpoint(self, addr: &str) -> Self {
        self.add_endpoint(addr, None)
    }

    /// Adds a ready endpoint of a meshed pod running as `ns/sa`.
    pub fn meshed_endpoint(self, addr: &str, namespace: &str, service_account: &str) -> Self {
        let id = SpiffeId::for_service_account(CLUSTER_DOMAIN, namespace, service_account);
        self.add_endpoint(addr, Some(id))
    }

    fn add_endpoint(mut self, addr: &str, identity: Option<SpiffeId>) -> Self {
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("fixture: endpoint {addr:?}: {e}"));
        if let Backend::Service(s) = &mut self.backend {
            s.endpoints.push(Endpoint {
                addr,
                identity,
                pod: None,
                zone: None,
            });
        }
        self
    }

    /// The backend's `appProtocol`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        if let Backend::Service(s) = &mut self.backend {
            s.protocol = protocol;
        }
        self
    }
}

impl From<BackendBuilder> for HttpBackend {
    fn from(t: BackendBuilder) -> HttpBackend {
        HttpBackend {
            backend: t.backend,
            weight: t.weight,
            filters: t.filters,
        }
    }
}

impl From<BackendBuilder> for WeightedBackend {
    fn from(t: BackendBuilder) -> WeightedBackend {
        WeightedBackend {
            backend: t.backend,
            weight: t.weight,
        }
    }
}

impl From<BackendBuilder> for Backend {
    fn from(t: BackendBuilder) -> Backend {
        t.backend
    }
}

/// A GRPCRoute: `grpc_route("ns", "name")`.
pub fn grpc_route(namespace: &str, name: &str) -> GrpcRouteBuilder {
    GrpcRouteBuilder(GrpcRoute {
        meta: meta(RouteKind::GrpcRoute, namespace, name),
        hostnames: Vec::new(),
        rules: Vec::new(),
    })
}

#[derive(Clone, Debug)]
pub struct GrpcRouteBuilder(GrpcRoute);

impl GrpcRouteBuilder {
    pub fn created(mut self, timestamp: i64) -> Self {
        self.0.meta.creation_timestamp = timestamp;
        self
    }

    pub fn host(mut self, hostname: &str) -> Self {
        self.0.hostnames.push(host(hostname));
        self
    }

    pub fn rule(mut self, rule: impl Into<GrpcRule>) -> Self {
        self.0.rules.push(rule.into());
        self
    }

    pub fn build(self) -> GrpcRoute {
        self.0
    }
}

impl From<GrpcRouteBuilder> for GrpcRoute {
    fn from(r: GrpcRouteBuilder) -> GrpcRoute {
        r.0
    }
}

/// A GRPCRoute rule: `grpc_rule().service("pkg.Svc").method("Get")`.
pub fn grpc_rule() -> GrpcRuleBuilder {
    GrpcRuleBuilder(GrpcRule::default())
}

#[derive(Clone, Debug)]
pub struct GrpcRuleBuilder(GrpcRule);

impl GrpcRuleBuilder {
    pub fn named(mut self, name: &str) -> Self {
        self.0.name = Some(name.to_string());
        self
    }

    fn current(&mut self) -> &mut GrpcMatch {
        current(&mut self.0.matches)
    }

    pub fn or(mut self) -> Self {
        self.0.matches.push(GrpcMatch::default());
        self
    }

    fn exact(&mut self, set: impl FnOnce(&mut Option<String>, &mut Option<String>)) {
        let m = self.current();
        let (mut service, mut method) = match m.method.take() {
            Some(GrpcMethodMatch::Exact { service, method }) => (service, method),
            _ => (None, None),
        };
        set(&mut service, &mut method);
        m.method = Some(GrpcMethodMatch::Exact { service, method });
    }

    fn regex(&mut self, set: impl FnOnce(&mut Option<Regex>, &mut Option<Regex>)) {
        let m = self.current();
        let (mut service, mut method) = match m.method.take() {
            Some(GrpcMethodMatch::Regex { service, method }) => (service, method),
            _ => (None, None),
        };
        set(&mut service, &mut method);
        m.method = Some(GrpcMethodMatch::Regex { service, method });
    }

    // A match's `type` applies to both service and method: mixing an exact
    // service with a method pattern replaces the one with the other.

    /// An exact service (`package.Service`).
    pub fn service(mut self, service: &str) -> Self {
        self.exact(|s, _| *s = Some(service.to_string()));
        self
    }

    /// An exact method.
    pub fn method(mut self, method: &str) -> Self {
        self.exact(|_, m| *m = Some(method.to_string()));
        self
    }

    pub fn service_regex(mut self, pattern: &str) -> Self {
        self.regex(|s, _| *s = Some(regex(pattern)));
        self
    }

    pub fn method_regex(mut self, pattern: &str) -> Self {
        self.regex(|_, m| *m = Some(regex(pattern)));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.current()
            .headers
            .push(header_match(name, ValueMatch::Exact(value.to_string())));
        self
    }

    pub fn filter(mut self, filter: impl Into<HttpFilter>) -> Self {
        self.0.filters.push(filter.into());
        self
    }

    pub fn backend(mut self, backend: impl Into<HttpBackend>) -> Self {
        self.0.backends.push(backend.into());
        self
    }

    pub fn build(self) -> GrpcRule {
        self.0
    }
}

impl From<GrpcRuleBuilder> for GrpcRule {
    fn from(r: GrpcRuleBuilder) -> GrpcRule {
        r.0
    }
}

/// A TLSRoute with one rule: `tls_route("ns", "db").host("db.example.com").backend(..)`.
pub fn tls_route(namespace: &str, name: &str) -> OpaqueRouteBuilder {
    OpaqueRouteBuilder {
        meta: meta(RouteKind::TlsRoute, namespace, name),
        hostnames: Vec::new(),
        rule: TcpRule::default(),
    }
}

/// A TCPRoute with one rule.
pub fn tcp_route(namespace: &str, name: &str) -> OpaqueRouteBuilder {
    OpaqueRouteBuilder {
        meta: meta(RouteKind::TcpRoute, namespace, name),
        hostnames: Vec::new(),
        rule: TcpRule::default(),
    }
}

/// A TLSRoute or TCPRoute under construction.
#[derive(Clone, Debug)]
pub struct OpaqueRouteBuilder {
    meta: RouteRef,
    hostnames: Vec<HostMatch>,
    rule: TcpRule,
}

impl OpaqueRouteBuilder {
    pub fn created(mut self, timestamp: i64) -> Self {
        self.meta.creation_timestamp = timestamp;
        self
    }

    /// An SNI hostname (TLSRoute only).
    pub fn host(mut self, hostname: &str) -> Self {
        self.hostnames.push(host(hostname));
        self
    }

    pub fn backend(mut self, backend: impl Into<WeightedBackend>) -> Self {
        self.rule.backends.push(backend.into());
        self
    }

    pub fn tls(self) -> TlsRoute {
        TlsRoute {
            meta: self.meta,
            hostnames: self.hostnames,
            rules: vec![self.rule],
        }
    }

    pub fn tcp(self) -> TcpRoute {
        TcpRoute {
            meta: self.meta,
            rules: vec![self.rule],
        }
    }
}

/// A `GET` of `target` (a path, or an absolute URI): `get("/v2?x=1")`.
pub fn get(target: &str) -> RequestBuilder {
    request("GET", target)
}

/// A request with any method: `request("POST", "/items")`.
pub fn request(method: &str, target: &str) -> RequestBuilder {
    RequestBuilder(
        ::http::Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .unwrap_or_else(|e| panic!("fixture: {method} {target}: {e}")),
    )
}

/// A header map of name/value pairs, in order (a name may repeat):
/// `header_map(&[("origin", "https://a.example"), ("vary", "Accept")])`.
pub fn header_map(pairs: &[(&str, &str)]) -> ::http::HeaderMap {
    let mut map = ::http::HeaderMap::new();
    for (name, value) in pairs {
        let (name, value) = header_field(name, value);
        map.append(name, value);
    }
    map
}

fn header_field(name: &str, value: &str) -> (::http::HeaderName, ::http::HeaderValue) {
    let name = ::http::HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|e| panic!("fixture: header {name:?}: {e}"));
    let value = ::http::HeaderValue::from_str(value)
        .unwrap_or_else(|e| panic!("fixture: header value {value:?}: {e}"));
    (name, value)
}

/// A request under construction.
#[derive(Debug)]
pub struct RequestBuilder(::http::Request<()>);

impl RequestBuilder {
    /// Sets the `Host` header.
    pub fn host(self, host: &str) -> Self {
        self.header("host", host)
    }

    /// Adds a header field (a name may be added several times).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let (name, value) = header_field(name, value);
        self.0.headers_mut().append(name, value);
        self
    }

    pub fn build(self) -> ::http::Request<()> {
        self.0
    }
}

impl From<RequestBuilder> for ::http::Request<()> {
    fn from(r: RequestBuilder) -> Self {
        r.0
    }
}
