//! Proptest strategies for every model type, for round-trip properties
//! (serde here, protobuf in `trellis-api`). Values are valid by
//! construction (hostnames, SPIFFE ids, patterns and durations parse back);
//! strings include YAML's awkward words (`null`, `~`, `yes`, `1e3`, ...).

use crate::{
    Authorization, AuthorizationPolicy, AuthzRule, AuthzSource, Backend, CertificatePem, Cors,
    Endpoint, Fraction, GatewayPolicy, GrpcMatch, GrpcMethodMatch, GrpcRetry, GrpcRoute, GrpcRule,
    HeaderMatch, HeaderModifier, HeaderValue, HostMatch, HttpBackend, HttpFilter, HttpMatch,
    HttpRetry, HttpRoute, HttpRule, InboundPolicy, Listener, ListenerProtocol, ListenerTls,
    MtlsMode, OutboundPolicy, PathMatch, PathModifier, Protocol, QueryParamMatch, RequestMirror,
    RequestRedirect, ResourceRef, RetryBudget, RouteKind, RouteRef, ServiceBackend,
    SessionPersistence, SessionPersistenceKind, SpiffeId, Target, TcpRoute, TcpRule, Timeouts,
    TlsMode, TlsRoute, UrlRewrite, ValueMatch, WeightedBackend, regex::Regex,
};
use proptest::{collection::vec, option, prelude::*};
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

/// Free text, with the words YAML would read as something else.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ._/:*-]{0,12}",
        1 => prop::sample::select(vec![
            "", "null", "~", "true", "yes", "No", "0x1F", "1e3", "0777", "- a", "a: b", " lead",
            "trail ", "#x", "'q'", "\"dq\"", "ü", "multi\nline", "tab\tbed", "[a]", "{b}", "&a",
            "*a", "!t", "%p", "@a", "`b`", "|", ">",
        ])
        .prop_map(String::from),
    ]
}

/// A DNS label-ish name (namespaces, names).
pub fn name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

pub fn resource_ref() -> impl Strategy<Value = ResourceRef> {
    (name(), name()).prop_map(|(ns, n)| ResourceRef::new(ns, n))
}

pub fn route_kind() -> impl Strategy<Value = RouteKind> {
    prop::sample::select(vec![
        RouteKind::Default,
        RouteKind::HttpRoute,
        RouteKind::GrpcRoute,
        RouteKind::TcpRoute,
        RouteKind::TlsRoute,
    ])
}

pub fn route_ref() -> impl Strategy<Value = RouteRef> {
    (route_kind(), name(), name(), -10i64..1_000_000_000).prop_map(
        |(kind, namespace, name, creation_timestamp)| RouteRef {
            kind,
            namespace,
            name,
            creation_timestamp,
        },
    )
}

pub fn host_match() -> impl Strategy<Value = HostMatch> {
    (
        any::<bool>(),
        vec("[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", 1..4),
    )
        .prop_map(|(wildcard, labels)| {
            let name = labels.join(".");
            if wildcard {
                HostMatch::Wildcard(name)
            } else {
                HostMatch::Exact(name)
            }
        })
}

pub fn regex() -> impl Strategy<Value = Regex> {
    prop_oneof![
        prop::sample::select(vec![
            "/v[0-9]+",
            "a|b",
            ".*",
            "[a-z]+\\.example",
            "foo.*bar",
            "(?i)abc",
            "/api/.+/x",
        ])
        .prop_map(String::from),
        text().prop_map(|t| ::regex::escape(&t)),
    ]
    .prop_filter_map("pattern compiles", |p| Regex::new(&p).ok())
}

pub fn path() -> impl Strategy<Value = String> {
    "(/[a-zA-Z0-9._~-]{0,6}){1,4}"
}

pub fn path_match() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        path().prop_map(PathMatch::Exact),
        path().prop_map(PathMatch::Prefix),
        regex().prop_map(PathMatch::Regex),
    ]
}

pub fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![
        text().prop_map(ValueMatch::Exact),
        regex().prop_map(ValueMatch::Regex)
    ]
}

pub fn header_match() -> impl Strategy<Value = HeaderMatch> {
    ("[a-z][a-z0-9-]{0,8}", value_match()).prop_map(|(name, value)| HeaderMatch { name, value })
}

pub fn query_param_match() -> impl Strategy<Value = QueryParamMatch> {
    (text(), value_match()).prop_map(|(name, value)| QueryParamMatch { name, value })
}

pub fn method() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ])
    .prop_map(String::from)
}

pub fn http_match() -> impl Strategy<Value = HttpMatch> {
    (
        option::of(path_match()),
        vec(header_match(), 0..3),
        vec(query_param_match(), 0..3),
        option::of(method()),
    )
        .prop_map(|(path, headers, query_params, method)| HttpMatch {
            path,
            headers,
            query_params,
            method,
        })
}

pub fn duration() -> impl Strategy<Value = Duration> {
    (0u64..400_000_000).prop_map(Duration::from_millis)
}

pub fn header_value() -> impl Strategy<Value = HeaderValue> {
    ("[A-Za-z][A-Za-z0-9-]{0,8}", text()).prop_map(|(name, value)| HeaderValue { name, value })
}

pub fn header_modifier() -> impl Strategy<Value = HeaderModifier> {
    (
        vec(header_value(), 0..3),
        vec(header_value(), 0..3),
        vec("[a-z][a-z0-9-]{0,8}", 0..3),
    )
        .prop_map(|(set, add, remove)| HeaderModifier { set, add, remove })
}

pub fn path_modifier() -> impl Strategy<Value = PathModifier> {
    prop_oneof![
        path().prop_map(PathModifier::ReplaceFullPath),
        path().prop_map(PathModifier::ReplacePrefixMatch),
    ]
}

pub fn request_redirect() -> impl Strategy<Value = RequestRedirect> {
    (
        option::of(prop::sample::select(vec!["http", "https"]).prop_map(String::from)),
        option::of(host_match().prop_map(|h| h.to_string().replace('*', "x"))),
        option::of(path_modifier()),
        option::of(1u16..),
        prop::sample::select(vec![301u16, 302, 303, 307, 308]),
    )
        .prop_map(|(scheme, hostname, path, port, status)| RequestRedirect {
            scheme,
            hostname,
            path,
            port,
            status,
        })
}

pub fn url_rewrite() -> impl Strategy<Value = UrlRewrite> {
    (
        option::of(host_match().prop_map(|h| h.to_string().replace('*', "x"))),
        option::of(path_modifier()),
    )
        .prop_map(|(hostname, path)| UrlRewrite { hostname, path })
}

pub fn fraction() -> impl Strategy<Value = Fraction> {
    (1u32..1_000_000)
        .prop_flat_map(|denominator| (0..=denominator, Just(denominator)))
        .prop_map(|(numerator, denominator)| Fraction {
            numerator,
            denominator,
        })
}

pub fn cors() -> impl Strategy<Value = Cors> {
    (
        vec(text(), 0..3),
        vec(method(), 0..3),
        vec(text(), 0..3),
        vec(text(), 0..3),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(
            |(allow_origins, allow_methods, allow_headers, expose_headers, creds, max_age)| Cors {
                allow_origins,
                allow_methods,
                allow_headers,
                expose_headers,
                allow_credentials: creds,
                max_age,
            },
        )
}

pub fn spiffe_id() -> impl Strategy<Value = SpiffeId> {
    ("[a-z0-9.-]{1,10}", name(), name())
        .prop_map(|(td, ns, sa)| SpiffeId::for_service_account(&td, &ns, &sa))
}

pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

pub fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        socket_addr(),
        option::of(spiffe_id()),
        option::of(resource_ref()),
        option::of(text()),
    )
        .prop_map(|(addr, identity, pod, zone)| Endpoint {
            addr,
            identity,
            pod,
            zone,
        })
}

pub fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(vec![
        Protocol::Detect,
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Grpc,
        Protocol::Opaque,
        Protocol::Tls,
    ])
}

pub fn retry_budget() -> impl Strategy<Value = RetryBudget> {
    (any::<u32>(), duration(), any::<u32>(), duration()).prop_map(
        |(percent, interval, min_retry_count, min_retry_interval)| RetryBudget {
            percent,
            interval,
            min_retry_count,
            min_retry_interval,
        },
    )
}

pub fn target() -> impl Strategy<Value = Target> {
    socket_addr().prop_map(Target)
}

pub fn service_backend() -> impl Strategy<Value = ServiceBackend> {
    (
        resource_ref(),
        any::<u16>(),
        text(),
        protocol(),
        vec(endpoint(), 0..3),
        option::of(retry_budget()),
    )
        .prop_map(
            |(service, port, authority, protocol, endpoints, retry_budget)| ServiceBackend {
                service,
                port,
                authority,
                protocol,
                endpoints,
                retry_budget,
            },
        )
}

pub fn backend() -> impl Strategy<Value = Backend> {
    prop_oneof![
        service_backend().prop_map(Backend::Service),
        (text(), text()).prop_map(|(name, message)| Backend::Invalid { name, message }),
    ]
}

pub fn request_mirror() -> impl Strategy<Value = RequestMirror> {
    (backend(), fraction()).prop_map(|(backend, fraction)| RequestMirror { backend, fraction })
}

pub fn http_filter() -> impl Strategy<Value = HttpFilter> {
    prop_oneof![
        header_modifier().prop_map(HttpFilter::RequestHeaderModifier),
        header_modifier().prop_map(HttpFilter::ResponseHeaderModifier),
        request_redirect().prop_map(HttpFilter::RequestRedirect),
        url_rewrite().prop_map(HttpFilter::UrlRewrite),
        request_mirror().prop_map(HttpFilter::RequestMirror),
        cors().prop_map(HttpFilter::Cors),
        text().prop_map(|message| HttpFilter::Invalid { message }),
    ]
}

pub fn http_backend() -> impl Strategy<Value = HttpBackend> {
    (backend(), any::<u32>(), vec(http_filter(), 0..2)).prop_map(|(backend, weight, filters)| {
        HttpBackend {
            backend,
            weight,
            filters,
        }
    })
}

pub fn timeouts() -> impl Strategy<Value = Timeouts> {
    (option::of(duration()), option::of(duration())).prop_map(|(request, backend_request)| {
        Timeouts {
            request,
            backend_request,
        }
    })
}

pub fn session_persistence() -> impl Strategy<Value = SessionPersistence> {
    (
        option::of(text()),
        prop::sample::select(vec![
            SessionPersistenceKind::Cookie,
            SessionPersistenceKind::Header,
        ]),
        option::of(duration()),
        any::<bool>(),
    )
        .prop_map(
            |(name, kind, absolute_timeout, permanent)| SessionPersistence {
                name,
                kind,
                absolute_timeout,
                permanent,
            },
        )
}

pub fn http_retry() -> impl Strategy<Value = HttpRetry> {
    (vec(100u16..600, 0..3), any::<u32>(), option::of(duration())).prop_map(
        |(codes, attempts, backoff)| HttpRetry {
            codes,
            attempts,
            backoff,
        },
    )
}

pub fn http_rule() -> impl Strategy<Value = HttpRule> {
    (
        option::of(text()),
        vec(http_match(), 0..3),
        vec(http_filter(), 0..3),
        vec(http_backend(), 0..3),
        timeouts(),
        option::of(http_retry()),
        option::of(session_persistence()),
    )
        .prop_map(
            |(name, matches, filters, backends, timeouts, retry, session_persistence)| HttpRule {
                name,
                matches,
                filters,
                backends,
                timeouts,
                retry,
                session_persistence,
            },
        )
}

pub fn http_route() -> impl Strategy<Value = HttpRoute> {
    (route_ref(), vec(host_match(), 0..3), vec(http_rule(), 0..3)).prop_map(
        |(meta, hostnames, rules)| HttpRoute {
            meta,
            hostnames,
            rules,
        },
    )
}

pub fn grpc_method_match() -> impl Strategy<Value = GrpcMethodMatch> {
    prop_oneof![
        (option::of(text()), option::of(text()))
            .prop_map(|(service, method)| GrpcMethodMatch::Exact { service, method }),
        (option::of(regex()), option::of(regex()))
            .prop_map(|(service, method)| GrpcMethodMatch::Regex { service, method }),
    ]
}

pub fn grpc_match() -> impl Strategy<Value = GrpcMatch> {
    (option::of(grpc_method_match()), vec(header_match(), 0..3))
        .prop_map(|(method, headers)| GrpcMatch { method, headers })
}

pub fn grpc_retry() -> impl Strategy<Value = GrpcRetry> {
    (vec(0u32..17, 0..3), any::<u32>(), option::of(duration())).prop_map(
        |(codes, attempts, backoff)| GrpcRetry {
            codes,
            attempts,
            backoff,
        },
    )
}

pub fn grpc_rule() -> impl Strategy<Value = GrpcRule> {
    (
        option::of(text()),
        vec(grpc_match(), 0..3),
        vec(http_filter(), 0..2),
        vec(http_backend(), 0..3),
        timeouts(),
        option::of(grpc_retry()),
        option::of(session_persistence()),
    )
        .prop_map(
            |(name, matches, filters, backends, timeouts, retry, session_persistence)| GrpcRule {
                name,
                matches,
                filters,
                backends,
                timeouts,
                retry,
                session_persistence,
            },
        )
}

pub fn grpc_route() -> impl Strategy<Value = GrpcRoute> {
    (route_ref(), vec(host_match(), 0..3), vec(grpc_rule(), 0..3)).prop_map(
        |(meta, hostnames, rules)| GrpcRoute {
            meta,
            hostnames,
            rules,
        },
    )
}

pub fn weighted_backend() -> impl Strategy<Value = WeightedBackend> {
    (backend(), any::<u32>()).prop_map(|(backend, weight)| WeightedBackend { backend, weight })
}

pub fn tcp_rule() -> impl Strategy<Value = TcpRule> {
    (option::of(text()), vec(weighted_backend(), 0..3))
        .prop_map(|(name, backends)| TcpRule { name, backends })
}

pub fn tcp_route() -> impl Strategy<Value = TcpRoute> {
    (route_ref(), vec(tcp_rule(), 0..2)).prop_map(|(meta, rules)| TcpRoute { meta, rules })
}

pub fn tls_route() -> impl Strategy<Value = TlsRoute> {
    (route_ref(), vec(host_match(), 0..3), vec(tcp_rule(), 0..2)).prop_map(
        |(meta, hostnames, rules)| TlsRoute {
            meta,
            hostnames,
            rules,
        },
    )
}

pub fn outbound_policy() -> impl Strategy<Value = OutboundPolicy> {
    (
        (target(), resource_ref(), any::<u16>(), option::of(name())),
        protocol(),
        vec(http_route(), 0..2),
        vec(grpc_route(), 0..2),
        vec(tcp_route(), 0..2),
        vec(tls_route(), 0..2),
        backend(),
    )
        .prop_map(
            |(
                (target, service, port, port_name),
                protocol,
                http_routes,
                grpc_routes,
                tcp_routes,
                tls_routes,
                backend,
            )| OutboundPolicy {
                target,
                service,
                port,
                port_name,
                protocol,
                http_routes,
                grpc_routes,
                tcp_routes,
                tls_routes,
                backend,
            },
        )
}

pub fn authz_source() -> impl Strategy<Value = AuthzSource> {
    prop_oneof![
        spiffe_id().prop_map(AuthzSource::Identity),
        resource_ref().prop_map(AuthzSource::ServiceAccount),
        name().prop_map(AuthzSource::Namespace),
    ]
}

pub fn authz_rule() -> impl Strategy<Value = AuthzRule> {
    (vec(authz_source(), 0..3), vec(any::<u16>(), 0..3))
        .prop_map(|(sources, ports)| AuthzRule { sources, ports })
}

pub fn authorization_policy() -> impl Strategy<Value = AuthorizationPolicy> {
    (resource_ref(), vec(authz_rule(), 0..3))
        .prop_map(|(meta, rules)| AuthorizationPolicy { meta, rules })
}

pub fn authorization() -> impl Strategy<Value = Authorization> {
    vec(authorization_policy(), 0..3).prop_map(|policies| Authorization { policies })
}

pub fn inbound_policy() -> impl Strategy<Value = InboundPolicy> {
    (
        resource_ref(),
        any::<u16>(),
        protocol(),
        prop::sample::select(vec![MtlsMode::Permissive, MtlsMode::Strict]),
        authorization(),
    )
        .prop_map(
            |(workload, port, protocol, mtls, authorization)| InboundPolicy {
                workload,
                port,
                protocol,
                mtls,
                authorization,
            },
        )
}

pub fn certificate_pem() -> impl Strategy<Value = CertificatePem> {
    (text(), text()).prop_map(|(chain_pem, key_pem)| CertificatePem { chain_pem, key_pem })
}

pub fn listener_tls() -> impl Strategy<Value = ListenerTls> {
    (
        prop::sample::select(vec![TlsMode::Terminate, TlsMode::Passthrough]),
        vec(certificate_pem(), 0..2),
    )
        .prop_map(|(mode, certificates)| ListenerTls { mode, certificates })
}

pub fn listener() -> impl Strategy<Value = Listener> {
    (
        (
            name(),
            any::<u16>(),
            prop::sample::select(vec![
                ListenerProtocol::Http,
                ListenerProtocol::Https,
                ListenerProtocol::Tls,
                ListenerProtocol::Tcp,
            ]),
            option::of(host_match()),
            option::of(listener_tls()),
        ),
        vec(http_route(), 0..2),
        vec(grpc_route(), 0..2),
        vec(tls_route(), 0..2),
        vec(tcp_route(), 0..2),
    )
        .prop_map(
            |(
                (name, port, protocol, hostname, tls),
                http_routes,
                grpc_routes,
                tls_routes,
                tcp_routes,
            )| Listener {
                name,
                port,
                protocol,
                hostname,
                tls,
                http_routes,
                grpc_routes,
                tls_routes,
                tcp_routes,
            },
        )
}

pub fn gateway_policy() -> impl Strategy<Value = GatewayPolicy> {
    (resource_ref(), vec(listener(), 0..2))
        .prop_map(|(gateway, listeners)| GatewayPolicy { gateway, listeners })
}
