//! Tier 1, resilience policy: retries (status codes, connection errors,
//! body replay and its limit, gRPC codes, over the mesh), the retry budget
//! against a retry storm, request and per-attempt timeouts with retries,
//! `grpc-timeout`, and failure accrual. Timeouts run on paused time.

mod support;
mod traffic;

use bytes::Bytes;
use http::StatusCode;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use support::{addr, pod, sidecar};
use tokio::time::Instant;
use traffic::*;
use trellis_policy::{
    GrpcRetry, HttpRetry, OutboundPolicy, RetryBudget, Target,
    build::{grpc_route, grpc_rule, route, rule, service},
};
use trellis_proxy::config::SourceConfig;

/// A backend that answers `code` to the first `failures` attempts of each
/// request (told apart by `x-id`), then `200 ok`.
async fn flaky(addr: std::net::SocketAddr, failures: usize, code: u16) -> Backend {
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    backend(addr, move |seen| {
        let id = seen
            .headers
            .get("x-id")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let n = {
            let mut a = attempts.lock().unwrap();
            let n = a.entry(id).or_default();
            *n += 1;
            *n
        };
        async move {
            if n <= failures {
                text(code, "failed")
            } else {
                text(200, "ok")
            }
        }
    })
    .await
}

/// The Service `shop/web:80` (the rule's first backend, as the controller
/// resolves it) with one HTTPRoute rule `r`.
fn with_rule(t: Target, r: trellis_policy::HttpRule) -> OutboundPolicy {
    let mut p = policy(t, service("shop", "web", 80));
    p.backend = r.backends[0].backend.clone();
    p.http_routes = vec![route("shop", "web").rule(r).build()];
    p
}

fn retry(attempts: u32, codes: &[u16], backoff: Option<Duration>) -> HttpRetry {
    HttpRetry {
        codes: codes.to_vec(),
        attempts,
        backoff,
    }
}

const LABELS: &str = r#"{direction="outbound",service="shop/web:80",route="HTTPRoute shop/web rule 0",backend="shop/web:80"}"#;

#[tokio::test]
async fn retries_follow_the_rule_codes_and_attempts() {
    let n = 110;
    let web = flaky(addr(n, 1, 8080), 2, 503).await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .retry(2, &[503])
                .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let a = c.send(request("GET", "/", &[("x-id", "1")], "")).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(web.hits(), 3, "two retries");
    let text = metrics(&h.client).await;
    assert_eq!(
        metric(&text, &format!("trellis_retries_total{LABELS}")),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"trellis_responses_total{direction="outbound",service="shop/web:80",route="HTTPRoute shop/web rule 0",backend="shop/web:80",kind="success"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn when_attempts_run_out_the_last_answer_is_returned() {
    let n = 111;
    let web = flaky(addr(n, 1, 8080), 10, 503).await;
    let other = flaky(addr(n, 1, 8081), 10, 500).await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .retry(2, &[503])
                .backend(
                    service("shop", "web", 80)
                        .endpoint(&web.endpoint())
                        .endpoint(&other.endpoint()),
                )
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    for i in 0..10 {
        let id = i.to_string();
        let a = c.send(request("GET", "/", &[("x-id", &id)], "")).await;
        assert!(
            [
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::INTERNAL_SERVER_ERROR
            ]
            .contains(&a.status),
            "{a:?}"
        );
        assert!(
            !a.headers.contains_key(trellis_proxy::http::PROXY_ERROR),
            "the backend's own answer"
        );
    }
    let hits = web.hits() + other.hits();
    assert!(hits <= 30, "at most three attempts each: {hits}");
    assert!(hits > 10, "503s were retried");
}

#[tokio::test]
async fn connection_errors_are_retried_on_another_endpoint() {
    let n = 112;
    let web = named(addr(n, 1, 8080), "web").await;
    let dead = addr(n, 9, 1).to_string();
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .retry(3, &[])
                .backend(
                    service("shop", "web", 80)
                        .endpoint(&dead)
                        .endpoint(&web.endpoint()),
                )
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    for _ in 0..30 {
        let a = c.send(request("POST", "/", &[], "body")).await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "web"));
    }
    assert!(web.seen().iter().all(|s| s.body == "body"));
}

#[tokio::test]
async fn bodies_up_to_64_kib_are_replayed_and_larger_ones_are_not_retried() {
    let n = 113;
    let web = flaky(addr(n, 1, 8080), 1, 503).await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .retry(2, &[503])
                .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    let small = "s".repeat(60 * 1024);
    let a = c
        .send(request("PUT", "/a", &[("x-id", "small")], &small))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = web.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.body.len() == small.len() && s.body == small.as_bytes())
    );

    let large = "l".repeat(100 * 1024);
    let a = c
        .send(request("PUT", "/b", &[("x-id", "large")], &large))
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "not retried");
    let seen = web.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].body.len(), large.len(), "but sent whole once");
}

#[tokio::test]
async fn a_retry_crosses_the_mesh_with_its_body() {
    let n = 114;
    let web = flaky(addr(n, 1, 8080), 1, 503).await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .retry(1, &[503])
                .backend(service("shop", "web", 80).meshed_endpoint(&web.endpoint(), "shop", "web"))
                .build(),
        )
    })
    .await;
    let cp = h.cp.clone();
    let running = cp.start(pod(n, 4)).await;
    let _server = sidecar(
        pod(n, 1),
        SourceConfig::Controller(running.addr.to_string()),
        &[],
    )
    .await;
    let mut c = Client::h2(h.entry).await;
    let a = c
        .send(request(
            "POST",
            "http://web/x",
            &[("x-id", "m")],
            "over the mesh",
        ))
        .await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    let seen = web.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.body == "over the mesh" && s.path == "/x")
    );
}

#[tokio::test]
async fn a_failing_backend_never_sees_a_retry_storm() {
    let n = 115;
    let web = flaky(addr(n, 1, 8080), usize::MAX, 503).await;
    let h = harness(n, |t| {
        let mut r = rule()
            .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
            .build();
        r.retry = Some(retry(3, &[503], Some(Duration::from_millis(1))));
        with_rule(t, r)
    })
    .await;
    let start = Instant::now();
    let clients = 8;
    let per_client = 50;
    let mut load = Vec::new();
    for i in 0..clients {
        let entry = h.entry;
        load.push(tokio::spawn(async move {
            let mut c = Client::h1(entry).await;
            let mut refused = 0;
            for j in 0..per_client {
                let id = format!("{i}-{j}");
                let a = c.send(request("GET", "/", &[("x-id", &id)], "")).await;
                assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
                if a.headers.contains_key(trellis_proxy::http::PROXY_ERROR) {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for l in load {
        refused += l.await.unwrap();
    }
    let requests = clients * per_client;
    let elapsed = start.elapsed().as_secs_f64();
    let budget = RetryBudget::default();
    // 20 % of the requests, plus the minimum rate of 10 per second over the
    // run (its bucket starts full).
    let allowed = (requests as f64 * f64::from(budget.percent) / 100.0).ceil()
        + f64::from(budget.min_retry_count) * (elapsed + 1.0);
    let retries = web.hits() - requests;
    assert!(
        (retries as f64) <= allowed,
        "{retries} retries for {requests} requests in {elapsed:.1}s: more than the budget's {allowed}"
    );
    assert!(
        retries < 3 * requests / 2,
        "without a budget there would be {} retries",
        3 * requests
    );
    assert!(refused > 0, "budget refusals answer 503 themselves");
    let text = metrics(&h.client).await;
    assert_eq!(
        metric(
            &text,
            &format!("trellis_retry_budget_exhausted_total{LABELS}")
        ) as usize,
        refused
    );
    assert_eq!(
        metric(&text, &format!("trellis_retries_total{LABELS}")) as usize,
        retries
    );
}

/// A backend whose every answer takes `delay`, counting its calls.
async fn slow(addr: std::net::SocketAddr, delay: Duration) -> (Backend, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let b = backend(addr, move |seen| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            if seen.path != "/warm" {
                tokio::time::sleep(delay).await;
            }
            text(200, "slow")
        }
    })
    .await;
    (b, calls)
}

#[tokio::test]
async fn the_request_timeout_bounds_every_retry() {
    let n = 116;
    let (web, calls) = slow(addr(n, 1, 8080), Duration::from_secs(30)).await;
    let h = harness(n, |t| {
        let mut r = rule()
            .timeout(Duration::from_secs(1))
            .backend_timeout(Duration::from_millis(300))
            .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
            .build();
        r.retry = Some(retry(10, &[503], Some(Duration::from_millis(50))));
        with_rule(t, r)
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    assert_eq!(c.get("/warm").await.status, StatusCode::OK);
    calls.store(0, Ordering::Relaxed);
    tokio::time::pause();
    let start = Instant::now();
    let a = c.get("/slow").await;
    let took = start.elapsed();
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        a.headers[trellis_proxy::http::PROXY_ERROR],
        "the request timed out"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        took < Duration::from_millis(1100),
        "no attempt outlives the request: {took:?}"
    );
    let text = metrics(&h.client).await;
    assert_eq!(
        metric(
            &text,
            &format!("trellis_timeouts_total{}", kind_labels("request"))
        ),
        1.0
    );
    // Every attempt but the one the request timeout cut ended at its own
    // 300 ms bound; retries start 50 ms+ apart, all within 1 s.
    let cut = metric(
        &text,
        &format!("trellis_timeouts_total{}", kind_labels("backend_request")),
    ) as usize;
    assert!((1..=3).contains(&cut), "{cut} attempts cut at 300 ms");
    assert!(calls.load(Ordering::Relaxed) <= cut + 1);
    assert_eq!(
        metric(&text, &format!("trellis_retries_total{LABELS}")) as usize,
        cut
    );
}

fn kind_labels(kind: &str) -> String {
    format!(
        r#"{{direction="outbound",service="shop/web:80",route="HTTPRoute shop/web rule 0",backend="shop/web:80",kind="{kind}"}}"#
    )
}

#[tokio::test]
async fn an_attempt_cut_by_the_backend_timeout_is_retried() {
    let n = 117;
    let first = Arc::new(AtomicBool::new(true));
    let web = backend(addr(n, 1, 8080), move |seen| {
        let stall = seen.path == "/x" && first.swap(false, Ordering::Relaxed);
        async move {
            if stall {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            text(200, "fast")
        }
    })
    .await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .backend_timeout(Duration::from_millis(500))
                .retry(3, &[])
                .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    assert_eq!(c.get("/warm").await.status, StatusCode::OK);
    tokio::time::pause();
    let a = c.get("/x").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "fast"));
    let hits = web.hits();
    assert!(
        hits >= 3,
        "the warm-up, the stalled attempt and its retry: {hits}"
    );
}

#[tokio::test]
async fn without_retries_a_slow_backend_gets_504() {
    let n = 118;
    let (web, _) = slow(addr(n, 1, 8080), Duration::from_secs(30)).await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .timeout(Duration::from_secs(2))
                .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    assert_eq!(c.get("/warm").await.status, StatusCode::OK);
    tokio::time::pause();
    assert_eq!(c.get("/slow").await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        c.get("/warm").await.status,
        StatusCode::OK,
        "the connection lives on"
    );
}

#[tokio::test]
async fn grpc_timeout_is_honoured_and_propagated() {
    let n = 119;
    let web = backend(addr(n, 1, 8080), |seen| async move {
        if seen.path.ends_with("/Slow") {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        grpc_ok(b"ok")
    })
    .await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        let mut r = grpc_rule()
            .service("pkg.Svc")
            .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
            .build();
        r.timeouts.request = Some(Duration::from_secs(5));
        p.grpc_routes = vec![grpc_route("shop", "grpc").rule(r).build()];
        p
    })
    .await;
    let mut c = Client::h2(h.entry).await;
    let a = c.send(grpc_call("/pkg.Svc/Fast", &[])).await;
    assert_eq!(a.trailers.unwrap()["grpc-status"], "0");
    let propagated = |i: usize| {
        let v = web.seen()[i].headers["grpc-timeout"].clone();
        trellis_proxy::grpc::parse_timeout(&v).unwrap()
    };
    assert!(
        propagated(0) <= Duration::from_secs(5),
        "the route's timeout"
    );
    let a = c
        .send(grpc_call("/pkg.Svc/Fast", &[("grpc-timeout", "200m")]))
        .await;
    assert_eq!(a.trailers.unwrap()["grpc-status"], "0");
    assert!(
        propagated(1) <= Duration::from_millis(200),
        "the client's, shorter"
    );

    tokio::time::pause();
    let start = Instant::now();
    let a = c
        .send(grpc_call("/pkg.Svc/Slow", &[("grpc-timeout", "1S")]))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn grpc_calls_are_retried_on_the_codes_the_route_names() {
    let n = 120;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let web = backend(addr(n, 1, 8080), move |_| {
        let k = counted.fetch_add(1, Ordering::Relaxed);
        async move {
            match k {
                0 => grpc_error(14),
                1 => grpc_error(3),
                _ => grpc_ok(b"ok"),
            }
        }
    })
    .await;
    let h = harness(n, |t| {
        let mut p = policy(t, service("shop", "web", 80).endpoint(&web.endpoint()));
        let mut r = grpc_rule()
            .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
            .build();
        r.retry = Some(GrpcRetry {
            codes: vec![14],
            attempts: 3,
            backoff: None,
        });
        p.grpc_routes = vec![grpc_route("shop", "grpc").rule(r).build()];
        p
    })
    .await;
    let mut c = Client::h2(h.entry).await;
    let a = c.send(grpc_call("/pkg.Svc/Get", &[])).await;
    assert_eq!(
        a.headers["grpc-status"], "3",
        "INVALID_ARGUMENT is not retried"
    );
    assert_eq!(web.hits(), 2);
    let a = c.send(grpc_call("/pkg.Svc/Get", &[])).await;
    assert_eq!(a.trailers.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn failure_accrual_ejects_a_failing_endpoint_and_probes_it_back() {
    let n = 121;
    let healthy = Arc::new(AtomicBool::new(false));
    let state = healthy.clone();
    let bad = backend(addr(n, 1, 8080), move |_| {
        let ok = state.load(Ordering::Relaxed);
        async move {
            if ok {
                text(200, "bad")
            } else {
                text(500, "bad")
            }
        }
    })
    .await;
    // Slower than the failing endpoint, so balancing alone would prefer
    // the failing one (a fast failure looks cheap).
    let good = backend(addr(n, 1, 8081), |_| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text(200, "good")
    })
    .await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .backend(
                    service("shop", "web", 80)
                        .endpoint(&bad.endpoint())
                        .endpoint(&good.endpoint()),
                )
                .build(),
        )
    })
    .await;
    let mut c = Client::h1(h.entry).await;
    // The first request settles the policy before time is paused.
    c.get("/").await;
    tokio::time::pause();
    let threshold = trellis_proxy::accrual::CONSECUTIVE_FAILURES as usize;
    let mut sent = 0;
    while bad.hits() < threshold {
        c.get("/").await;
        sent += 1;
        assert!(sent < 1000, "the bad endpoint is picked now and then");
    }
    // Each answer of the good endpoint takes 50 ms: 10 stay within the
    // shortest backoff.
    for _ in 0..10 {
        assert_eq!(c.get("/").await.body, "good", "ejected");
    }
    assert_eq!(bad.hits(), threshold);
    let text = metrics(&h.client).await;
    assert_eq!(
        metric(
            &text,
            r#"trellis_endpoint_ejections_total{backend="shop/web:80"}"#
        ),
        1.0
    );
    // After the backoff it is tried again: one failure puts it out again.
    tokio::time::advance(trellis_proxy::accrual::MIN_BACKOFF * 2).await;
    while bad.hits() == threshold {
        c.get("/").await;
    }
    for _ in 0..30 {
        assert_eq!(c.get("/").await.body, "good", "ejected again, for longer");
    }
    assert_eq!(bad.hits(), threshold + 1);
    // Healed: after the (doubled) backoff one success brings it back.
    healthy.store(true, Ordering::Relaxed);
    tokio::time::advance(trellis_proxy::accrual::MIN_BACKOFF * 4).await;
    let mut bad_answers = 0;
    for _ in 0..200 {
        if c.get("/").await.body == "bad" {
            bad_answers += 1;
        }
    }
    assert!(bad_answers > 40, "balanced again: {bad_answers} of 200");
}

#[tokio::test]
async fn the_body_of_a_late_response_is_cut_at_the_request_timeout() {
    let n = 122;
    let web = backend(addr(n, 1, 8080), |seen| async move {
        if seen.path == "/warm" {
            return text(200, "warm");
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"head "))))
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"tail"))))
                .await;
        });
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        http::Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await;
    let h = harness(n, |t| {
        with_rule(
            t,
            rule()
                .timeout(Duration::from_secs(2))
                .backend(service("shop", "web", 80).endpoint(&web.endpoint()))
                .build(),
        )
    })
    .await;
    let mut c = Client::h2(h.entry).await;
    assert_eq!(c.get("http://web/warm").await.status, StatusCode::OK);
    tokio::time::pause();
    assert!(
        c.try_send(get("http://web/stream")).await.is_none(),
        "the stream is reset at the deadline"
    );
}
