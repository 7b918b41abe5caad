//! GRPCRoute precedence and TLSRoute / TCPRoute selection.

mod common;

use common::check_grpc;
use trellis_policy::{build::*, find};

const ECHO: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

fn v(n: u8) -> BackendBuilder {
    service(
        "gateway-conformance-infra",
        &format!("grpc-infra-backend-v{n}"),
        8080,
    )
}

fn call(service: &str, method: &str) -> RequestBuilder {
    request("POST", &format!("/{service}/{method}")).header("content-type", "application/grpc")
}

/// `GRPCExactMethodMatching` and `GRPCRouteNamedRule`.
#[test]
fn conformance_exact_method_matching() {
    let routes = vec![
        grpc_route("infra", "exact-matching")
            .rule(
                grpc_rule()
                    .named("named-rule")
                    .service(ECHO)
                    .method("Echo")
                    .backend(v(1)),
            )
            .rule(grpc_rule().service(ECHO).method("EchoTwo").backend(v(2)))
            .build(),
    ];
    check_grpc(
        &routes,
        vec![
            (call(ECHO, "Echo"), Some("grpc-infra-backend-v1")),
            (call(ECHO, "EchoTwo"), Some("grpc-infra-backend-v2")),
            (call(ECHO, "EchoThree"), None),
            (call("other.Service", "Echo"), None),
        ],
    );
}

/// `GRPCRouteHeaderMatching`.
#[test]
fn conformance_header_matching() {
    let routes = vec![
        grpc_route("infra", "grpc-header-matching")
            .rule(grpc_rule().header("version", "one").backend(v(1)))
            .rule(grpc_rule().header("version", "two").backend(v(2)))
            .rule(
                grpc_rule()
                    .header("version", "two")
                    .header("color", "orange")
                    .backend(v(1)),
            )
            .rule(
                grpc_rule()
                    .header("color", "blue")
                    .or()
                    .header("color", "green")
                    .backend(v(1)),
            )
            .rule(
                grpc_rule()
                    .header("color", "red")
                    .or()
                    .header("color", "yellow")
                    .backend(v(2)),
            )
            .build(),
    ];
    let v1 = Some("grpc-infra-backend-v1");
    let v2 = Some("grpc-infra-backend-v2");
    check_grpc(
        &routes,
        vec![
            (call(ECHO, "Echo").header("version", "one"), v1),
            (call(ECHO, "Echo").header("version", "two"), v2),
            (
                call(ECHO, "Echo")
                    .header("version", "two")
                    .header("color", "orange"),
                v1,
            ),
            (
                call(ECHO, "Echo")
                    .header("version", "two")
                    .header("color", "blue"),
                v2,
            ),
            (call(ECHO, "Echo").header("color", "orange"), None),
            (call(ECHO, "Echo").header("some-other-header", "one"), None),
            (call(ECHO, "Echo").header("color", "blue"), v1),
            (call(ECHO, "Echo").header("color", "green"), v1),
            (call(ECHO, "Echo").header("color", "red"), v2),
            (call(ECHO, "Echo").header("color", "yellow"), v2),
            (call(ECHO, "Echo").header("color", "purple"), None),
        ],
    );
}

/// GRPCRoute precedence: characters of a matching service, then of a
/// matching method (exact before pattern), then header conditions, then
/// the oldest route, then `namespace/name`, then rule order.
#[test]
fn precedence() {
    let routes = vec![
        grpc_route("ns", "young")
            .created(20)
            .rule(
                grpc_rule()
                    .service("pkg.Svc")
                    .method("Get")
                    .backend(service("ns", "young", 80)),
            )
            .rule(
                grpc_rule()
                    .service("pkg.Svc")
                    .backend(service("ns", "service-only", 80)),
            )
            .rule(
                grpc_rule()
                    .method("Get")
                    .backend(service("ns", "method-only", 80)),
            )
            .rule(
                grpc_rule()
                    .service_regex("pkg\\..*")
                    .method_regex("List")
                    .backend(service("ns", "regex-service", 80)),
            )
            .rule(grpc_rule().method("List").header("x", "1").backend(service(
                "ns",
                "list-header",
                80,
            )))
            .rule(grpc_rule().backend(service("ns", "catch-all", 80)))
            .rule(
                grpc_rule()
                    .service("pkg.LongerSvc")
                    .backend(service("ns", "longer", 80)),
            )
            .rule(
                grpc_rule()
                    .service("pkg.LongerSvc")
                    .header("x", "1")
                    .backend(service("ns", "longer-header", 80)),
            )
            .build(),
        grpc_route("ns", "old")
            .created(10)
            .rule(
                grpc_rule()
                    .service("pkg.Svc")
                    .method("Get")
                    .backend(service("ns", "old", 80)),
            )
            .build(),
    ];
    check_grpc(
        &routes,
        vec![
            (call("pkg.Svc", "Get"), Some("old")),
            (call("pkg.Svc", "Put"), Some("service-only")),
            (call("other.Svc", "Get"), Some("method-only")),
            (call("pkg.Other", "List"), Some("regex-service")),
            (
                call("pkg.Other", "List").header("x", "1"),
                Some("regex-service"),
            ),
            (
                call("zzz.Other", "List").header("x", "1"),
                Some("list-header"),
            ),
            (call("zzz.Other", "Nothing"), Some("catch-all")),
            (request("GET", "/not-grpc"), Some("catch-all")),
            (call("pkg.LongerSvc", "Get"), Some("longer")),
            (
                call("pkg.LongerSvc", "Get").header("x", "1"),
                Some("longer-header"),
            ),
        ],
    );
}

/// Hostnames rank GRPCRoutes the same way as HTTPRoutes.
#[test]
fn hostnames() {
    let routes = vec![
        grpc_route("ns", "any")
            .rule(
                grpc_rule()
                    .service("pkg.Svc")
                    .method("Get")
                    .backend(service("ns", "any", 80)),
            )
            .build(),
        grpc_route("ns", "wild")
            .host("*.example.com")
            .rule(grpc_rule().backend(service("ns", "wild", 80)))
            .build(),
        grpc_route("ns", "exact")
            .host("grpc.example.com")
            .rule(
                grpc_rule()
                    .service("pkg.Svc")
                    .backend(service("ns", "exact", 80)),
            )
            .build(),
    ];
    check_grpc(
        &routes,
        vec![
            (
                call("pkg.Svc", "Get").host("grpc.example.com:443"),
                Some("exact"),
            ),
            (
                call("pkg.Other", "Get").host("grpc.example.com"),
                Some("wild"),
            ),
            (call("pkg.Svc", "Get").host("x.example.com"), Some("wild")),
            (call("pkg.Svc", "Get").host("example.org"), Some("any")),
            (call("pkg.Other", "Get").host("example.org"), None),
        ],
    );
}

#[test]
fn grpc_paths() {
    let cases = [
        ("/pkg.Svc/Get", Some(("pkg.Svc", "Get"))),
        ("/Svc/M", Some(("Svc", "M"))),
        ("/pkg.Svc/", None),
        ("//Get", None),
        ("/pkg.Svc", None),
        ("/a/b/c", None),
        ("pkg.Svc/Get", None),
        ("", None),
    ];
    for (path, want) in cases {
        assert_eq!(find::service_and_method(path), want, "{path:?}");
    }
}

/// TLSRoute by SNI: exact over wildcard, longer over shorter, then the
/// oldest, then the name; a route without hostnames takes the rest.
#[test]
fn tls_routes_by_sni() {
    let routes = vec![
        tls_route("ns", "catch-all")
            .created(1)
            .backend(service("ns", "all", 443))
            .tls(),
        tls_route("ns", "wild")
            .created(5)
            .host("*.example.com")
            .backend(service("ns", "w", 443))
            .tls(),
        tls_route("ns", "deep-wild")
            .created(6)
            .host("*.db.example.com")
            .backend(service("ns", "dw", 443))
            .tls(),
        tls_route("ns", "exact-young")
            .created(9)
            .host("db.example.com")
            .backend(service("ns", "ey", 443))
            .tls(),
        tls_route("ns", "exact-old")
            .created(2)
            .host("db.example.com")
            .backend(service("ns", "eo", 443))
            .tls(),
    ];
    let cases = [
        (Some("db.example.com"), "exact-old"),
        (Some("DB.Example.com"), "exact-old"),
        (Some("x.db.example.com"), "deep-wild"),
        (Some("api.example.com"), "wild"),
        (Some("example.com"), "catch-all"),
        (Some("other.org"), "catch-all"),
        (None, "catch-all"),
    ];
    for (sni, want) in cases {
        let got = find::tls(&routes, sni).map(|r| r.meta.name.as_str());
        assert_eq!(got, Some(want), "{sni:?}");
    }
    let only_named = &routes[1..];
    assert_eq!(find::tls(only_named, None), None);
    assert_eq!(find::tls(only_named, Some("other.org")), None);
}

#[test]
fn tcp_route_conflicts_go_to_the_oldest() {
    let routes = vec![
        tcp_route("ns", "b")
            .created(10)
            .backend(service("ns", "b", 5432))
            .tcp(),
        tcp_route("ns", "a")
            .created(10)
            .backend(service("ns", "a", 5432))
            .tcp(),
        tcp_route("ns", "young")
            .created(11)
            .backend(service("ns", "y", 5432))
            .tcp(),
    ];
    assert_eq!(find::tcp(&routes).map(|r| r.meta.name.as_str()), Some("a"));
    assert_eq!(find::tcp(&[]), None);
}
