//! Model values that read like sentences:
//! `outbound("shop", "web", "198.19.0.7:80").http_route(route("shop", "a").rule(rule().matching(prefix("/")).to(svc("shop", "web", 80))))`.

use std::time::Duration;
use trellis_policy::{
    Authorization, AuthorizationPolicy, AuthzRule, AuthzSource, Backend, Endpoint, GatewayPolicy,
    GrpcMatch, GrpcMethodMatch, GrpcRoute, GrpcRule, HostMatch, HttpBackend, HttpFilter, HttpMatch,
    HttpRetry, HttpRoute, HttpRule, InboundPolicy, Listener, ListenerProtocol, ListenerTls,
    MtlsMode, OutboundPolicy, PathMatch, Protocol, ResourceRef, RetryBudget, RouteKind, RouteRef,
    ServiceBackend, SpiffeId, Target, TcpRule, TlsMode, TlsRoute, WeightedBackend,
};

/// The policy of a Service port whose routes are still to be added.
pub fn outbound(namespace: &str, service: &str, target: &str) -> OutboundPolicy {
    let target: std::net::SocketAddr = target.parse().expect("a socket address");
    OutboundPolicy {
        target: Target(target),
        service: ResourceRef::new(namespace, service),
        port: target.port(),
        port_name: Some("http".into()),
        protocol: Protocol::Http1,
        http_routes: vec![],
        grpc_routes: vec![],
        tcp_routes: vec![],
        tls_routes: vec![],
        backend: svc(namespace, service, target.port()),
    }
}

/// A Service port with no endpoints yet.
pub fn svc(namespace: &str, name: &str, port: u16) -> Backend {
    Backend::Service(ServiceBackend {
        service: ResourceRef::new(namespace, name),
        port,
        authority: format!("{name}.{namespace}.svc.cluster.local:{port}"),
        protocol: Protocol::Http1,
        endpoints: vec![],
        retry_budget: None,
    })
}

/// A pod endpoint, unmeshed until [`EndpointExt::meshed`].
pub fn endpoint(addr: &str) -> Endpoint {
    Endpoint {
        addr: addr.parse().expect("a socket address"),
        identity: None,
        pod: None,
        zone: None,
    }
}

pub fn id(namespace: &str, service_account: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", namespace, service_account)
}

pub fn route(namespace: &str, name: &str) -> HttpRoute {
    HttpRoute {
        meta: RouteRef {
            kind: RouteKind::HttpRoute,
            namespace: namespace.into(),
            name: name.into(),
            creation_timestamp: 1_700_000_000,
        },
        hostnames: vec![],
        rules: vec![],
    }
}

pub fn grpc_route(namespace: &str, name: &str) -> GrpcRoute {
    GrpcRoute {
        meta: RouteRef {
            kind: RouteKind::GrpcRoute,
            namespace: namespace.into(),
            name: name.into(),
            creation_timestamp: 1_700_000_000,
        },
        hostnames: vec![],
        rules: vec![GrpcRule {
            matches: vec![GrpcMatch {
                method: Some(GrpcMethodMatch::Exact {
                    service: Some("echo.Echo".into()),
                    method: None,
                }),
                headers: vec![],
            }],
            ..GrpcRule::default()
        }],
    }
}

pub fn tls_route(namespace: &str, name: &str, host: &str, to: Backend) -> TlsRoute {
    TlsRoute {
        meta: RouteRef {
            kind: RouteKind::TlsRoute,
            namespace: namespace.into(),
            name: name.into(),
            creation_timestamp: 1_700_000_000,
        },
        hostnames: vec![HostMatch::parse(host).expect("a hostname")],
        rules: vec![TcpRule {
            name: None,
            backends: vec![WeightedBackend {
                backend: to,
                weight: 1,
            }],
        }],
    }
}

pub fn rule() -> HttpRule {
    HttpRule::default()
}

pub fn prefix(path: &str) -> HttpMatch {
    HttpMatch {
        path: Some(PathMatch::Prefix(path.into())),
        ..HttpMatch::default()
    }
}

pub fn inbound(namespace: &str, pod: &str, port: u16) -> InboundPolicy {
    InboundPolicy {
        workload: ResourceRef::new(namespace, pod),
        port,
        protocol: Protocol::Http1,
        mtls: MtlsMode::Strict,
        authorization: Authorization {
            policies: vec![AuthorizationPolicy {
                meta: ResourceRef::new(namespace, "allow-web"),
                rules: vec![AuthzRule {
                    sources: vec![AuthzSource::Identity(id(namespace, "web"))],
                    ports: vec![port],
                }],
            }],
        },
    }
}

pub fn gateway(namespace: &str, name: &str) -> GatewayPolicy {
    GatewayPolicy {
        gateway: ResourceRef::new(namespace, name),
        listeners: vec![Listener {
            name: "https".into(),
            port: 443,
            protocol: ListenerProtocol::Https,
            hostname: Some(HostMatch::parse("*.example.com").expect("a hostname")),
            tls: Some(ListenerTls {
                mode: TlsMode::Terminate,
                certificates: vec![],
            }),
            http_routes: vec![route(namespace, "site").host("www.example.com")],
            grpc_routes: vec![],
            tls_routes: vec![],
            tcp_routes: vec![],
        }],
    }
}

pub trait OutboundExt {
    fn http_route(self, route: HttpRoute) -> Self;
    fn grpc_route(self, route: GrpcRoute) -> Self;
    fn tls_route(self, route: TlsRoute) -> Self;
    /// Replaces the Service's endpoints.
    fn endpoints(self, endpoints: Vec<Endpoint>) -> Self;
}

impl OutboundExt for OutboundPolicy {
    fn http_route(mut self, route: HttpRoute) -> Self {
        self.http_routes.push(route);
        self
    }
    fn grpc_route(mut self, route: GrpcRoute) -> Self {
        self.grpc_routes.push(route);
        self
    }
    fn tls_route(mut self, route: TlsRoute) -> Self {
        self.tls_routes.push(route);
        self
    }
    fn endpoints(mut self, endpoints: Vec<Endpoint>) -> Self {
        if let Backend::Service(s) = &mut self.backend {
            s.endpoints = endpoints;
            s.retry_budget = Some(RetryBudget::default());
        }
        self
    }
}

pub trait EndpointExt {
    fn meshed(self, namespace: &str, service_account: &str) -> Self;
}

impl EndpointExt for Endpoint {
    fn meshed(mut self, namespace: &str, service_account: &str) -> Self {
        self.identity = Some(id(namespace, service_account));
        self
    }
}

pub trait RouteExt {
    fn host(self, host: &str) -> Self;
    fn rule(self, rule: HttpRule) -> Self;
}

impl RouteExt for HttpRoute {
    fn host(mut self, host: &str) -> Self {
        self.hostnames
            .push(HostMatch::parse(host).expect("a hostname"));
        self
    }
    fn rule(mut self, rule: HttpRule) -> Self {
        self.rules.push(rule);
        self
    }
}

pub trait RuleExt {
    fn matching(self, m: HttpMatch) -> Self;
    fn filter(self, f: HttpFilter) -> Self;
    fn to(self, backend: Backend) -> Self;
    fn timeout(self, request: Duration) -> Self;
    fn retry(self, codes: &[u16], attempts: u32) -> Self;
}

impl RuleExt for HttpRule {
    fn matching(mut self, m: HttpMatch) -> Self {
        self.matches.push(m);
        self
    }
    fn filter(mut self, f: HttpFilter) -> Self {
        self.filters.push(f);
        self
    }
    fn to(mut self, backend: Backend) -> Self {
        self.backends.push(HttpBackend {
            backend,
            weight: 1,
            filters: vec![],
        });
        self
    }
    fn timeout(mut self, request: Duration) -> Self {
        self.timeouts.request = Some(request);
        self
    }
    fn retry(mut self, codes: &[u16], attempts: u32) -> Self {
        self.retry = Some(HttpRetry {
            codes: codes.to_vec(),
            attempts,
            backoff: Some(Duration::from_millis(25)),
        });
        self
    }
}
