//! Tier 1, traffic policy: GRPCRoute routing, every HTTPRoute filter
//! (redirects, rewrites, header modifiers on rules and backends, CORS,
//! mirrors), invalid filters and backends, and canary splits — through a
//! client sidecar against a fake control plane and scripted backends.

mod support;
mod traffic;

use http::{StatusCode, header};
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use support::{addr, admin};
use traffic::*;
use trellis_policy::build::{
    cors, grpc_route, grpc_rule, invalid, invalid_filter, mirror, redirect, request_headers,
    response_headers, route, rule, service, url_rewrite,
};

#[tokio::test]
async fn grpc_calls_route_by_service_and_method_and_unmatched_ones_are_unimplemented() {
    let n = 100;
    let get = backend(addr(n, 1, 8080), |_| async { grpc_ok(b"get") }).await;
    let rest = backend(addr(n, 1, 8081), |_| async { grpc_ok(b"rest") }).await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&rest.endpoint()));
        p.grpc_routes = vec![
            grpc_route("shop", "grpc")
                .rule(
                    grpc_rule()
                        .service("pkg.Svc")
                        .method("Get")
                        .backend(service("shop", "web-get", 80).endpoint(&get.endpoint())),
                )
                .rule(
                    grpc_rule()
                        .service("pkg.Svc")
                        .backend(service("shop", "web", 80).endpoint(&rest.endpoint())),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h2(h.entry).await;
    let a = c.send(grpc_call("/pkg.Svc/Get", &[])).await;
    assert_eq!(a.body.as_bytes(), b"get");
    assert_eq!(a.trailers.unwrap()["grpc-status"], "0");
    let a = c.send(grpc_call("/pkg.Svc/List", &[])).await;
    assert_eq!(a.body.as_bytes(), b"rest");
    let a = c.send(grpc_call("/other.Svc/Get", &[])).await;
    assert_eq!(a.status, StatusCode::OK, "gRPC errors travel as a status");
    assert_eq!(a.headers["grpc-status"], "12", "UNIMPLEMENTED: no route");
    assert_eq!((get.hits(), rest.hits()), (1, 1));
}

#[tokio::test]
async fn redirects_are_answered_by_the_client_proxy_with_the_exact_location() {
    let n = 101;
    let web = named(addr(n, 1, 8080), "web").await;
    let svc = || service("shop", "web", 80).endpoint(&web.endpoint());
    let h = harness(n, |t| {
        let mut p = policy(t, svc());
        p.http_routes = vec![
            route("shop", "redirects")
                .rule(rule().prefix("/scheme").filter(redirect().scheme("https")))
                .rule(
                    rule()
                        .prefix("/port")
                        .filter(redirect().port(8083).hostname("example.org")),
                )
                .rule(
                    rule()
                        .prefix("/original-prefix")
                        .filter(redirect().prefix_path("/replacement-prefix").status(303)),
                )
                .rule(
                    rule()
                        .prefix("/full")
                        .filter(redirect().full_path("/replacement-full").status(308)),
                )
                .rule(rule().prefix("/").backend(svc()))
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    for (path, status, location) in [
        ("/scheme?x=1", 302, "https://web/scheme?x=1"),
        ("/port", 302, "http://example.org:8083/port"),
        (
            "/original-prefix/lemon",
            303,
            "http://web/replacement-prefix/lemon",
        ),
        ("/full/path/original", 308, "http://web/replacement-full"),
    ] {
        let a = c.get(path).await;
        assert_eq!(a.status.as_u16(), status, "{path}");
        assert_eq!(a.headers[header::LOCATION], location, "{path}");
    }
    assert_eq!(web.hits(), 0, "no redirect reaches the backend");
    assert_eq!(c.get("/other").await.body, "web");
}

#[tokio::test]
async fn rewrites_and_header_filters_of_rules_and_backends_reach_the_backend() {
    let n = 102;
    let web = named(addr(n, 1, 8080), "web").await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        p.http_routes = vec![
            route("shop", "rewrite")
                .rule(
                    rule()
                        .prefix("/strip-prefix")
                        .filter(url_rewrite().prefix_path("/").hostname("rewritten.example"))
                        .filter(request_headers().set("x-rule", "1").remove("x-drop"))
                        .filter(response_headers().add("x-answered", "rule"))
                        .backend(
                            service("shop", "web", 80)
                                .endpoint(&web.endpoint())
                                .filter(request_headers().add("x-backend", "web"))
                                .filter(response_headers().add("x-answered", "backend")),
                        ),
                )
                .rule(
                    rule()
                        .prefix("/full")
                        .filter(url_rewrite().full_path("/one"))
                        .backend(service("shop", "web", 80).endpoint(&web.endpoint())),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let a = c
        .send(request(
            "GET",
            "/strip-prefix/three?q=1",
            &[("x-drop", "1"), ("x-backend", "client")],
            "",
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-answered"], "backend,rule");
    let a = c.get("/full/one/two").await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = web.seen();
    assert_eq!(seen[0].path, "/three?q=1");
    assert_eq!(seen[0].headers[header::HOST], "rewritten.example");
    assert_eq!(seen[0].headers["x-rule"], "1");
    assert_eq!(seen[0].headers["x-backend"], "client,web");
    assert!(seen[0].headers.get("x-drop").is_none());
    assert_eq!(seen[1].path, "/one");
    assert_eq!(seen[1].headers[header::HOST], "web");
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_proxy() {
    let n = 103;
    let web = named(addr(n, 1, 8080), "web").await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        p.http_routes = vec![
            route("shop", "cors")
                .rule(
                    rule()
                        .filter(
                            cors()
                                .origin("https://app.example")
                                .methods(&["GET", "PUT"])
                                .credentials(),
                        )
                        .backend(service("shop", "web", 80).endpoint(&web.endpoint())),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let origin = ("origin", "https://app.example");
    let pre = c
        .send(request(
            "OPTIONS",
            "/items",
            &[origin, ("access-control-request-method", "PUT")],
            "",
        ))
        .await;
    assert_eq!(pre.status, StatusCode::OK);
    assert_eq!(
        pre.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    assert_eq!(
        pre.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
        "true"
    );
    assert_eq!(web.hits(), 0, "the preflight never reaches the backend");
    let actual = c.send(request("PUT", "/items", &[origin], "x")).await;
    assert_eq!(actual.body, "web");
    assert_eq!(
        actual.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let other = c
        .send(request(
            "GET",
            "/",
            &[("origin", "https://evil.example")],
            "",
        ))
        .await;
    assert!(
        other
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn invalid_filters_and_backends_answer_500_and_only_for_their_rule() {
    let n = 104;
    let web = named(addr(n, 1, 8080), "web").await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        p.http_routes = vec![
            route("shop", "mixed")
                .rule(
                    rule()
                        .prefix("/bad-filter")
                        .filter(invalid_filter(
                            "extensionRef example.com/Auth is not supported",
                        ))
                        .backend(service("shop", "web", 80).endpoint(&web.endpoint())),
                )
                .rule(rule().prefix("/bad-backend").backend(invalid(
                    "Service shop/gone:80",
                    "service shop/gone not found",
                )))
                .rule(rule().prefix("/no-backend"))
                .rule(
                    rule()
                        .prefix("/")
                        .backend(service("shop", "web", 80).endpoint(&web.endpoint())),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    for path in ["/bad-filter", "/bad-backend", "/no-backend"] {
        let a = c.get(path).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(a.headers.contains_key(trellis_proxy::http::PROXY_ERROR));
    }
    assert_eq!(c.get("/fine").await.body, "web");
    assert_eq!(web.hits(), 1);
}

#[tokio::test]
async fn mirrors_get_a_copy_and_never_affect_the_client() {
    let n = 105;
    let web = named(addr(n, 1, 8080), "web").await;
    let copy = backend(addr(n, 1, 8081), |_| async { text(500, "ignored") }).await;
    // A mirror that never answers, and one that cannot be reached.
    let stuck = backend(addr(n, 1, 8082), |_| async {
        std::future::pending::<()>().await;
        text(200, "never")
    })
    .await;
    let unreachable = addr(n, 9, 1).to_string();
    let half = named(addr(n, 1, 8083), "half").await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        p.http_routes = vec![
            route("shop", "mirrored")
                .rule(
                    rule()
                        .filter(mirror(
                            service("shop", "copy", 80).endpoint(&copy.endpoint()),
                        ))
                        .filter(mirror(
                            service("shop", "stuck", 80).endpoint(&stuck.endpoint()),
                        ))
                        .filter(mirror(service("shop", "gone", 80).endpoint(&unreachable)))
                        .filter(
                            mirror(service("shop", "half", 80).endpoint(&half.endpoint()))
                                .percent(50),
                        )
                        .backend(service("shop", "web", 80).endpoint(&web.endpoint())),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let requests = 150;
    for i in 0..requests {
        let body = format!("payload {i}");
        let a = c
            .send(request("POST", &format!("/items/{i}"), &[], &body))
            .await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "web"));
    }
    assert_eq!(web.hits(), requests);
    // Mirrors run in the background: wait for the copies to land.
    for _ in 0..100 {
        if copy.hits() == requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copies = copy.seen();
    assert_eq!(copies.len(), requests, "every request is mirrored");
    assert!(
        copies
            .iter()
            .any(|s| s.path == "/items/7" && s.body == "payload 7"),
        "a mirror gets the path and the body"
    );
    assert!(
        (40..=110).contains(&half.hits()),
        "a 50 % mirror got {} of {requests}",
        half.hits()
    );
    let metrics = metrics(&h.client).await;
    let stuck_dropped = metric(
        &metrics,
        r#"trellis_mirror_requests_total{direction="outbound",service="shop/web:80",route="HTTPRoute shop/mirrored rule 0",backend="shop/stuck:80",kind="dropped"}"#,
    );
    assert_eq!(
        stuck_dropped as usize,
        requests - trellis_proxy::mirror::MAX_IN_FLIGHT,
        "a stuck mirror holds at most {} requests: {metrics}",
        trellis_proxy::mirror::MAX_IN_FLIGHT
    );
    assert!(
        metric(
            &metrics,
            r#"trellis_mirror_requests_total{direction="outbound",service="shop/web:80",route="HTTPRoute shop/mirrored rule 0",backend="shop/gone:80",kind="failed"}"#
        ) > 0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn weights_split_traffic_within_five_percent() {
    let n = 106;
    let v1 = named(addr(n, 1, 8080), "v1").await;
    let v2 = named(addr(n, 1, 8081), "v2").await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&v1.endpoint()));
        p.http_routes = vec![
            route("shop", "canary")
                .rule(
                    rule()
                        .backend(
                            service("shop", "v1", 80)
                                .weight(70)
                                .endpoint(&v1.endpoint()),
                        )
                        .backend(
                            service("shop", "v2", 80)
                                .weight(30)
                                .endpoint(&v2.endpoint()),
                        ),
                )
                .build(),
        ];
        p
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let mut counts = BTreeMap::new();
    for _ in 0..500 {
        *counts.entry(c.get("/").await.body).or_insert(0) += 1;
    }
    let share = f64::from(counts["v2"]) / 500.0;
    assert!((share - 0.3).abs() <= 0.05, "v2 got {share}: {counts:?}");
}

#[tokio::test]
async fn a_weight_change_under_load_applies_from_the_next_request_and_fails_none() {
    let n = 107;
    let a = named(addr(n, 1, 8080), "a").await;
    let b = named(addr(n, 1, 8081), "b").await;
    let split = |t, wa: u32, wb: u32| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&a.endpoint()));
        p.http_routes = vec![
            route("shop", "canary")
                .rule(
                    rule()
                        .backend(service("shop", "a", 80).weight(wa).endpoint(&a.endpoint()))
                        .backend(service("shop", "b", 80).weight(wb).endpoint(&b.endpoint())),
                )
                .build(),
        ];
        p
    };
    let h = harness(n, |t| split(t, 100, 0)).await;
    let entry = h.entry;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut c = Client::h1(entry).await;
            let mut answers = Vec::new();
            loop {
                let got = c.get("/").await;
                assert_eq!(got.status, StatusCode::OK, "{got:?}");
                answers.push(got.body);
                if stop.load(Ordering::Relaxed) || answers.len() > 5000 {
                    return answers;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.cp.set(split(h.target, 0, 100));
    let mut probe = Client::h1(entry).await;
    while probe.get("/").await.body != "b" {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..50 {
        assert_eq!(probe.get("/").await.body, "b", "the new weights hold");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let answers = l.await.unwrap();
        let first_b = answers.iter().position(|x| x == "b").expect("b served");
        assert!(first_b > 0, "a served before the change");
        assert!(
            answers[first_b..].iter().all(|x| x == "b"),
            "once a connection saw the new weights it never saw the old ones"
        );
    }
    let (_, config) = admin(&h.client, "/config").await;
    assert!(config.contains("shop/b:80"), "{config}");
}
