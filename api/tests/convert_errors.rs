//! Every way a message can fail to be a model value, each named by its field
//! path and bad value. Each case starts from a valid message, breaks one
//! field and checks the whole error line.

mod support;

use std::time::Duration;
use support::fixtures::*;
use trellis_api::{
    ConvertError, GatewayTarget, InboundTarget, OutboundTarget,
    convert::ErrorKind,
    proto::{discovery as dpb, policy as pb},
};
use trellis_policy::{
    Backend, Fraction, GatewayPolicy, HeaderMatch, HttpFilter, HttpMatch, InboundPolicy,
    OutboundPolicy, QueryParamMatch, RequestMirror, RequestRedirect, ResourceRef,
    SessionPersistence, SessionPersistenceKind, ValueMatch,
};

/// Three routes of one rule with two matches (the first with header and
/// query conditions), a mirror and a redirect; a gRPC route; a TLS route;
/// a meshed and an unmeshed endpoint.
fn shop_web() -> OutboundPolicy {
    let web = svc("shop", "web", 80);
    let first_match = HttpMatch {
        headers: vec![HeaderMatch {
            name: "x-user".into(),
            value: ValueMatch::Exact("alice".into()),
        }],
        query_params: vec![QueryParamMatch {
            name: "debug".into(),
            value: ValueMatch::Exact("1".into()),
        }],
        ..prefix("/a")
    };
    let mut rule = rule()
        .matching(first_match)
        .matching(prefix("/b"))
        .filter(HttpFilter::RequestMirror(RequestMirror {
            backend: svc("shop", "web-shadow", 80),
            fraction: Fraction::ALL,
        }))
        .filter(HttpFilter::RequestRedirect(RequestRedirect {
            scheme: Some("https".into()),
            hostname: None,
            path: None,
            port: Some(443),
            status: 301,
        }))
        .to(web.clone())
        .timeout(Duration::from_secs(5))
        .retry(&[502, 503], 2);
    rule.session_persistence = Some(SessionPersistence {
        name: None,
        kind: SessionPersistenceKind::Cookie,
        absolute_timeout: None,
        permanent: false,
    });
    let mut policy = outbound("shop", "web", "198.19.0.7:80").endpoints(vec![
        endpoint("198.18.0.5:8080").meshed("shop", "web"),
        endpoint("[2001:db8::5]:8080"),
    ]);
    for name in ["r0", "r1", "r2"] {
        policy = policy.http_route(
            route("shop", name)
                .host("web.shop.svc.cluster.local")
                .rule(rule.clone()),
        );
    }
    policy
        .grpc_route(grpc_route("shop", "echo"))
        .tls_route(tls_route("shop", "tls", "*.example.com", web))
}

/// One way to break a valid message, and the error line it must produce.
type Case<P> = (fn(&mut P), &'static str);

/// `expected` is the whole error line, or its beginning when it ends with `…`
/// (regular expression errors carry the `regex` crate's multi-line reason).
fn check<P, T>(base: &T, cases: &[Case<P>])
where
    P: for<'a> From<&'a T>,
    T: TryFrom<P, Error = ConvertError> + std::fmt::Debug,
{
    for (i, (breaks, expected)) in cases.iter().enumerate() {
        let mut message = P::from(base);
        breaks(&mut message);
        let got = match T::try_from(message) {
            Ok(value) => panic!("case {i} ({expected}) converted: {value:?}"),
            Err(e) => e.to_string(),
        };
        match expected.strip_suffix('…') {
            Some(start) => assert!(got.starts_with(start), "case {i}: {got:?}"),
            None => assert_eq!(&got, expected, "case {i}"),
        }
    }
}

fn service(p: &mut pb::OutboundPolicy) -> &mut pb::ServiceBackend {
    match p.backend.as_mut().and_then(|b| b.kind.as_mut()) {
        Some(pb::backend::Kind::Service(s)) => s,
        other => panic!("the sample's backend is a Service, not {other:?}"),
    }
}

fn first_rule(p: &mut pb::OutboundPolicy) -> &mut pb::HttpRule {
    &mut p.http_routes[0].rules[0]
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

#[test]
fn the_sample_is_valid() {
    let policy = shop_web();
    assert_eq!(
        OutboundPolicy::try_from(pb::OutboundPolicy::from(&policy)),
        Ok(policy)
    );
}

#[test]
fn outbound_errors() {
    use pb::{
        grpc_method_match::Kind as Method, host_match::Kind as Host, http_filter::Kind as Filter,
        path_match::Kind as Path, value_match::Kind as Value,
    };
    let cases: &[Case<pb::OutboundPolicy>] = &[
        (
            |p| {
                p.http_routes[2].rules[0].matches[1].path = Some(pb::PathMatch {
                    kind: Some(Path::Regex("(".into())),
                })
            },
            "outbound.http_routes[2].rules[0].matches[1].path.regex: invalid regular expression \"(\": …",
        ),
        (
            |p| p.target = None,
            "outbound.target: required field is missing",
        ),
        (
            |p| p.target.as_mut().unwrap().ip = "300.1.1.1".into(),
            "outbound.target.ip: invalid IP address \"300.1.1.1\"",
        ),
        (
            |p| p.target.as_mut().unwrap().ip = "198.19.0.7:80".into(),
            "outbound.target.ip: invalid IP address \"198.19.0.7:80\"",
        ),
        (
            |p| p.target.as_mut().unwrap().port = 70_000,
            "outbound.target.port: 70000 is out of range (at most 65535)",
        ),
        (
            |p| p.port = 65_536,
            "outbound.port: 65536 is out of range (at most 65535)",
        ),
        (
            |p| p.protocol = 42,
            "outbound.protocol: unknown enum value 42",
        ),
        (
            |p| p.protocol = -1,
            "outbound.protocol: unknown enum value -1",
        ),
        (
            |p| p.service = None,
            "outbound.service: required field is missing",
        ),
        (
            |p| p.backend = None,
            "outbound.backend: required field is missing",
        ),
        (
            |p| p.backend = Some(pb::Backend { kind: None }),
            "outbound.backend: none of the variants of the oneof is set",
        ),
        (
            |p| service(p).endpoints[0].identity = Some("spiffe://Upper/x".into()),
            "outbound.backend.service.endpoints[0].identity: invalid SPIFFE id \"spiffe://Upper/x\": trust domain has characters other than [a-z0-9-._]",
        ),
        (
            |p| service(p).endpoints[1].addr.as_mut().unwrap().ip = String::new(),
            "outbound.backend.service.endpoints[1].addr.ip: invalid IP address \"\"",
        ),
        (
            |p| service(p).endpoints[1].addr = None,
            "outbound.backend.service.endpoints[1].addr: required field is missing",
        ),
        (
            |p| service(p).protocol = 6,
            "outbound.backend.service.protocol: unknown enum value 6",
        ),
        (
            |p| service(p).retry_budget.as_mut().unwrap().interval = None,
            "outbound.backend.service.retry_budget.interval: required field is missing",
        ),
        (
            |p| service(p).retry_budget.as_mut().unwrap().min_retry_interval = duration(-1, 0),
            "outbound.backend.service.retry_budget.min_retry_interval: invalid duration -1s 0ns: negative",
        ),
        (
            |p| p.http_routes[0].meta = None,
            "outbound.http_routes[0].meta: required field is missing",
        ),
        (
            |p| p.http_routes[1].meta.as_mut().unwrap().kind = 9,
            "outbound.http_routes[1].meta.kind: unknown enum value 9",
        ),
        (
            |p| p.http_routes[0].hostnames[0].kind = Some(Host::Exact("bad_host".into())),
            "outbound.http_routes[0].hostnames[0].exact: invalid hostname \"bad_host\"",
        ),
        (
            |p| p.http_routes[0].hostnames[0].kind = Some(Host::Exact("*.a.b".into())),
            "outbound.http_routes[0].hostnames[0].exact: wildcard hostname \"*.a.b\" where an exact hostname is expected",
        ),
        (
            |p| p.http_routes[0].hostnames[0].kind = Some(Host::Wildcard("-a.b".into())),
            "outbound.http_routes[0].hostnames[0].wildcard: invalid hostname \"-a.b\"",
        ),
        (
            |p| p.http_routes[0].hostnames[0].kind = Some(Host::Wildcard("*.a.b".into())),
            "outbound.http_routes[0].hostnames[0].wildcard: wildcard hostname \"*.a.b\" where an exact hostname is expected",
        ),
        (
            |p| p.http_routes[0].hostnames[0].kind = None,
            "outbound.http_routes[0].hostnames[0]: none of the variants of the oneof is set",
        ),
        (
            |p| first_rule(p).timeouts.as_mut().unwrap().request = duration(0, 1_000_000_000),
            "outbound.http_routes[0].rules[0].timeouts.request: invalid duration 0s 1000000000ns: nanos must be in 0..1000000000",
        ),
        (
            |p| first_rule(p).timeouts.as_mut().unwrap().backend_request = duration(-5, 0),
            "outbound.http_routes[0].rules[0].timeouts.backend_request: invalid duration -5s 0ns: negative",
        ),
        (
            |p| first_rule(p).timeouts.as_mut().unwrap().request = duration(1, -1),
            "outbound.http_routes[0].rules[0].timeouts.request: invalid duration 1s -1ns: nanos must be in 0..1000000000",
        ),
        (
            |p| first_rule(p).retry.as_mut().unwrap().codes[1] = 70_000,
            "outbound.http_routes[0].rules[0].retry.codes[1]: 70000 is out of range (at most 65535)",
        ),
        (
            |p| first_rule(p).retry.as_mut().unwrap().backoff = duration(i64::MIN, 0),
            "outbound.http_routes[0].rules[0].retry.backoff: invalid duration -9223372036854775808s 0ns: negative",
        ),
        (
            |p| first_rule(p).session_persistence.as_mut().unwrap().kind = 5,
            "outbound.http_routes[0].rules[0].session_persistence.kind: unknown enum value 5",
        ),
        (
            |p| first_rule(p).matches[0].headers[0].value = None,
            "outbound.http_routes[0].rules[0].matches[0].headers[0].value: required field is missing",
        ),
        (
            |p| {
                first_rule(p).matches[0].query_params[0].value = Some(pb::ValueMatch {
                    kind: Some(Value::Regex("[".into())),
                })
            },
            "outbound.http_routes[0].rules[0].matches[0].query_params[0].value.regex: invalid regular expression \"[\": …",
        ),
        (
            |p| first_rule(p).matches[0].path = Some(pb::PathMatch { kind: None }),
            "outbound.http_routes[0].rules[0].matches[0].path: none of the variants of the oneof is set",
        ),
        (
            |p| match &mut first_rule(p).filters[0].kind {
                Some(Filter::RequestMirror(m)) => m.fraction = None,
                other => panic!("{other:?}"),
            },
            "outbound.http_routes[0].rules[0].filters[0].request_mirror.fraction: required field is missing",
        ),
        (
            |p| match &mut first_rule(p).filters[0].kind {
                Some(Filter::RequestMirror(m)) => m.backend = None,
                other => panic!("{other:?}"),
            },
            "outbound.http_routes[0].rules[0].filters[0].request_mirror.backend: required field is missing",
        ),
        (
            |p| match &mut first_rule(p).filters[1].kind {
                Some(Filter::RequestRedirect(r)) => r.port = Some(65_536),
                other => panic!("{other:?}"),
            },
            "outbound.http_routes[0].rules[0].filters[1].request_redirect.port: 65536 is out of range (at most 65535)",
        ),
        (
            |p| match &mut first_rule(p).filters[1].kind {
                Some(Filter::RequestRedirect(r)) => r.status = 1_000_000,
                other => panic!("{other:?}"),
            },
            "outbound.http_routes[0].rules[0].filters[1].request_redirect.status: 1000000 is out of range (at most 65535)",
        ),
        (
            |p| match &mut first_rule(p).filters[1].kind {
                Some(Filter::RequestRedirect(r)) => r.path = Some(pb::PathModifier { kind: None }),
                other => panic!("{other:?}"),
            },
            "outbound.http_routes[0].rules[0].filters[1].request_redirect.path: none of the variants of the oneof is set",
        ),
        (
            |p| first_rule(p).filters[1].kind = None,
            "outbound.http_routes[0].rules[0].filters[1]: none of the variants of the oneof is set",
        ),
        (
            |p| first_rule(p).backends[0].backend = None,
            "outbound.http_routes[0].rules[0].backends[0].backend: required field is missing",
        ),
        (
            |p| {
                let m = p.grpc_routes[0].rules[0].matches[0]
                    .method
                    .as_mut()
                    .unwrap();
                m.kind = Method::Regex.into();
                m.service = Some("(".into());
            },
            "outbound.grpc_routes[0].rules[0].matches[0].method.service: invalid regular expression \"(\": …",
        ),
        (
            |p| {
                p.grpc_routes[0].rules[0].matches[0]
                    .method
                    .as_mut()
                    .unwrap()
                    .kind = 7
            },
            "outbound.grpc_routes[0].rules[0].matches[0].method.kind: unknown enum value 7",
        ),
        (
            |p| p.tls_routes[0].rules[0].backends[0].backend = None,
            "outbound.tls_routes[0].rules[0].backends[0].backend: required field is missing",
        ),
        (
            |p| p.tls_routes[0].hostnames[0].kind = Some(Host::Wildcard("example..com".into())),
            "outbound.tls_routes[0].hostnames[0].wildcard: invalid hostname \"example..com\"",
        ),
    ];
    check(&shop_web(), cases);
}

#[test]
fn inbound_errors() {
    use pb::authz_source::Kind as Source;
    let cases: &[Case<pb::InboundPolicy>] = &[
        (
            |p| p.workload = None,
            "inbound.workload: required field is missing",
        ),
        (
            |p| p.port = 65_536,
            "inbound.port: 65536 is out of range (at most 65535)",
        ),
        (
            |p| p.protocol = 100,
            "inbound.protocol: unknown enum value 100",
        ),
        (|p| p.mtls = 3, "inbound.mtls: unknown enum value 3"),
        (
            |p| p.authorization = None,
            "inbound.authorization: required field is missing",
        ),
        (
            |p| p.authorization.as_mut().unwrap().policies[0].meta = None,
            "inbound.authorization.policies[0].meta: required field is missing",
        ),
        (
            |p| {
                p.authorization.as_mut().unwrap().policies[0].rules[0].sources[0].kind =
                    Some(Source::Identity("spiffe://td/../x".into()))
            },
            "inbound.authorization.policies[0].rules[0].sources[0].identity: invalid SPIFFE id \"spiffe://td/../x\": path segment is empty, a dot segment, or has characters other than [a-zA-Z0-9-._]",
        ),
        (
            |p| p.authorization.as_mut().unwrap().policies[0].rules[0].sources[0].kind = None,
            "inbound.authorization.policies[0].rules[0].sources[0]: none of the variants of the oneof is set",
        ),
        (
            |p| p.authorization.as_mut().unwrap().policies[0].rules[0].ports[0] = 1 << 20,
            "inbound.authorization.policies[0].rules[0].ports[0]: 1048576 is out of range (at most 65535)",
        ),
    ];
    check::<pb::InboundPolicy, InboundPolicy>(&inbound("shop", "web-0", 8080), cases);
}

#[test]
fn gateway_errors() {
    use pb::host_match::Kind as Host;
    let cases: &[Case<pb::GatewayPolicy>] = &[
        (
            |g| g.gateway = None,
            "gateway.gateway: required field is missing",
        ),
        (
            |g| g.listeners[0].port = 100_000,
            "gateway.listeners[0].port: 100000 is out of range (at most 65535)",
        ),
        (
            |g| g.listeners[0].protocol = 9,
            "gateway.listeners[0].protocol: unknown enum value 9",
        ),
        (
            |g| {
                g.listeners[0].hostname = Some(pb::HostMatch {
                    kind: Some(Host::Exact("a b".into())),
                })
            },
            "gateway.listeners[0].hostname.exact: invalid hostname \"a b\"",
        ),
        (
            |g| g.listeners[0].tls.as_mut().unwrap().mode = 4,
            "gateway.listeners[0].tls.mode: unknown enum value 4",
        ),
        (
            |g| g.listeners[0].http_routes[0].hostnames[0].kind = Some(Host::Exact(String::new())),
            "gateway.listeners[0].http_routes[0].hostnames[0].exact: invalid hostname \"\"",
        ),
    ];
    check::<pb::GatewayPolicy, GatewayPolicy>(&gateway("edge", "public"), cases);
}

#[test]
fn discovery_errors() {
    let outbound_target = OutboundTarget {
        target: trellis_policy::Target("198.19.0.7:80".parse().unwrap()),
        client_namespace: "shop".into(),
        client_workload: "web-0".into(),
    };
    let cases: &[Case<dpb::OutboundTarget>] = &[
        (|t| t.target = None, "target: required field is missing"),
        (
            |t| t.target.as_mut().unwrap().port = 65_536,
            "target.port: 65536 is out of range (at most 65535)",
        ),
        (
            |t| t.target.as_mut().unwrap().ip = "localhost".into(),
            "target.ip: invalid IP address \"localhost\"",
        ),
    ];
    check(&outbound_target, cases);

    let inbound_target = InboundTarget {
        workload: ResourceRef::new("shop", "web-0"),
        port: 8080,
    };
    let cases: &[Case<dpb::InboundTarget>] = &[
        (|t| t.workload = None, "workload: required field is missing"),
        (
            |t| t.port = u32::MAX,
            "port: 4294967295 is out of range (at most 65535)",
        ),
    ];
    check(&inbound_target, cases);

    let gateway_target = GatewayTarget {
        gateway: ResourceRef::new("edge", "public"),
    };
    let cases: &[Case<dpb::GatewayTarget>] =
        &[(|t| t.gateway = None, "gateway: required field is missing")];
    check(&gateway_target, cases);

    let empty = dpb::OutboundUpdate { kind: None };
    assert_eq!(
        Option::<OutboundPolicy>::try_from(empty)
            .unwrap_err()
            .to_string(),
        "none of the variants of the oneof is set"
    );
    let mut update = dpb::OutboundUpdate::from(&shop_web());
    if let Some(dpb::outbound_update::Kind::Policy(p)) = &mut update.kind {
        p.port = 70_000;
    }
    assert_eq!(
        Option::<OutboundPolicy>::try_from(update)
            .unwrap_err()
            .to_string(),
        "outbound.port: 70000 is out of range (at most 65535)"
    );
}

/// The parts of an error are there for code, not only for people.
#[test]
fn errors_expose_path_and_kind() {
    let mut message = pb::OutboundPolicy::from(&shop_web());
    message.http_routes[1].rules[0]
        .retry
        .as_mut()
        .unwrap()
        .codes[0] = 1 << 16;
    let e = OutboundPolicy::try_from(message).unwrap_err();
    assert_eq!(e.path(), "outbound.http_routes[1].rules[0].retry.codes[0]");
    assert_eq!(
        e.kind(),
        &ErrorKind::OutOfRange {
            value: 65_536,
            max: 65_535
        }
    );

    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("outbound.http_routes[1]"));
}

/// An invalid backend is a value of the model, not a conversion error: only
/// its share of requests fails, in the proxy.
#[test]
fn invalid_backends_and_filters_are_values() {
    let policy = outbound("shop", "web", "198.19.0.7:80").http_route(
        route("shop", "r").rule(
            rule()
                .filter(HttpFilter::Invalid {
                    message: "unknown ExtensionRef".into(),
                })
                .to(Backend::Invalid {
                    name: "Service shop/gone:80".into(),
                    message: "service shop/gone not found".into(),
                }),
        ),
    );
    assert_eq!(
        OutboundPolicy::try_from(pb::OutboundPolicy::from(&policy)),
        Ok(policy)
    );
}
