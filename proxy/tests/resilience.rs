//! Tier 1: routing through `find`, hitless policy swaps, controller outages,
//! the policy file, readiness and draining.

mod support;

use http::StatusCode;
use std::time::Duration;
use support::*;
use trellis_policy::{
    HttpRoute, OutboundPolicy,
    build::{route, rule, service},
};
use trellis_proxy::config::SourceConfig;

fn with_routes(mut p: OutboundPolicy, routes: Vec<HttpRoute>) -> OutboundPolicy {
    p.http_routes = routes;
    p
}

#[tokio::test]
async fn requests_follow_routes_and_unmatched_ones_get_404() {
    let n = 20;
    let v1 = http_backend(addr(n, 1, 8080), "v1").await;
    let v2 = http_backend(addr(n, 1, 8081), "v2").await;
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(with_routes(
        outbound(target, service("shop", "web", 80).endpoint(&v1.to_string())),
        vec![
            route("shop", "split")
                .rule(
                    rule()
                        .prefix("/v2")
                        .backend(service("shop", "web-v2", 80).endpoint(&v2.to_string())),
                )
                .rule(
                    rule()
                        .prefix("/api")
                        .backend(service("shop", "web", 80).endpoint(&v1.to_string())),
                )
                .build(),
        ],
    ));
    let running = cp.start(pod(n, 3)).await;
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(running.addr.to_string()),
        &[target],
    )
    .await;
    let entry = client.outbound_fixed[0];
    let mut c = H1::connect(entry).await;
    let (s, _, body) = c.get("web", "/v2/items").await;
    assert_eq!((s, body.split(' ').next().unwrap()), (StatusCode::OK, "v2"));
    let (s, _, body) = c.get("web", "/api").await;
    assert_eq!((s, body.split(' ').next().unwrap()), (StatusCode::OK, "v1"));
    let (s, headers, _) = c.get("web", "/other").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        headers[trellis_proxy::http::PROXY_ERROR],
        "no route rule matches the request"
    );
    let (_, metrics) = admin(&client, "/metrics").await;
    assert!(
        metrics.contains(
            r#"route="HTTPRoute shop/split rule 0",backend="shop/web-v2:80",status="200"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_policy_swap_under_load_fails_no_request() {
    let n = 21;
    let a = http_backend(addr(n, 1, 8080), "a").await;
    let b = http_backend(addr(n, 1, 8081), "b").await;
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    let policy_a = outbound(target, service("shop", "web", 80).endpoint(&a.to_string()));
    let policy_b = outbound(target, service("shop", "web", 80).endpoint(&b.to_string()));
    cp.set(policy_a.clone());
    let running = cp.start(pod(n, 3)).await;
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(running.addr.to_string()),
        &[target],
    )
    .await;
    let entry = client.outbound_fixed[0];

    let mut load = Vec::new();
    for _ in 0..4 {
        load.push(tokio::spawn(async move {
            let mut c = H1::connect(entry).await;
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..150 {
                let (s, _, body) = c.get("web", "/").await;
                assert_eq!(s, StatusCode::OK, "{body}");
                seen.insert(body.split(' ').next().unwrap().to_string());
            }
            seen
        }));
    }
    for i in 0..20 {
        cp.set(if i % 2 == 0 {
            policy_b.clone()
        } else {
            policy_a.clone()
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in load {
        seen.extend(l.await.unwrap());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "both policies served"
    );
}

#[tokio::test]
async fn cached_policies_keep_serving_through_a_controller_outage() {
    let n = 22;
    let web = http_backend(addr(n, 1, 8080), "web").await;
    let other = http_backend(addr(n, 1, 8090), "other").await;
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(outbound(
        target,
        service("shop", "web", 80).endpoint(&web.to_string()),
    ));
    let running = cp.start(pod(n, 3)).await;
    let never_seen = trellis_policy::Target(other);
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(running.addr.to_string()),
        &[target, never_seen],
    )
    .await;
    assert_eq!(
        get(client.outbound_fixed[0], "web", "/").await.0,
        StatusCode::OK
    );

    running.stop();
    for _ in 0..5 {
        let (s, body) = get(client.outbound_fixed[0], "web", "/").await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, "web GET / HTTP/1.1 host=web")
        );
    }
    // A target first seen during the outage goes to its original destination.
    let (s, body) = get(client.outbound_fixed[1], "other", "/").await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "other GET / HTTP/1.1 host=other")
    );
    let (_, metrics) = admin(&client, "/metrics").await;
    assert!(
        metrics.contains("trellis_discovery_unavailable_forwarded_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ready_once_the_controller_answers_and_drains_on_shutdown() {
    let n = 23;
    let web = http_backend(addr(n, 1, 8080), "web").await;
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(outbound(
        target,
        service("shop", "web", 80).endpoint(&web.to_string()),
    ));
    // The controller's address is known before it runs: not ready until it does.
    let listener = std::net::TcpListener::bind(std::net::SocketAddr::new(pod(n, 3), 0)).unwrap();
    let ctl = listener.local_addr().unwrap();
    drop(listener);
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(ctl.to_string()),
        &[target],
    )
    .await;
    assert_eq!(
        admin(&client, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(admin(&client, "/live").await.0, StatusCode::OK);

    let running = cp.start_at(ctl).await;
    let mut ready = false;
    for _ in 0..100 {
        if admin(&client, "/ready").await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready once the controller is reachable");

    let mut keep_alive = H1::connect(client.outbound_fixed[0]).await;
    assert_eq!(keep_alive.get("web", "/").await.0, StatusCode::OK);
    assert_eq!(post(client.admin_addr, "/shutdown").await, StatusCode::OK);
    client.shutdown_requested().await;
    assert_eq!(
        admin(&client, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        client.drain().await,
        "an idle keep-alive connection closes at once"
    );
    running.stop();
}

/// POSTs with an empty body from the admin listener's own IP.
async fn post(admin: std::net::SocketAddr, path: &str) -> StatusCode {
    use http_body_util::Full;
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, "admin")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap().status()
}

#[tokio::test]
async fn the_policy_file_is_served_and_reloaded() {
    let n = 24;
    let a = http_backend(addr(n, 1, 8080), "a").await;
    let b = http_backend(addr(n, 1, 8081), "b").await;
    let target = cluster_ip(n, 80);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let write = |backend: std::net::SocketAddr| {
        let file = trellis_proxy::discovery::file::PolicyFile {
            outbound: vec![outbound(
                target,
                service("shop", "web", 80).endpoint(&backend.to_string()),
            )],
            inbound: vec![],
        };
        let yaml = serde_saphyr::to_string(&file).unwrap();
        std::fs::write(&path, yaml).unwrap();
    };
    write(a);
    let client = sidecar(pod(n, 2), SourceConfig::File(path.clone()), &[target]).await;
    assert_eq!(admin(&client, "/ready").await.0, StatusCode::OK);
    let (_, body) = get(client.outbound_fixed[0], "web", "/").await;
    assert!(body.starts_with("a "), "{body}");

    // Make sure the modification time differs from the first write.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(b);
    let mut switched = false;
    for _ in 0..50 {
        let (_, body) = get(client.outbound_fixed[0], "web", "/").await;
        if body.starts_with("b ") {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the reloaded file applies");
}

#[tokio::test]
async fn the_inbound_policy_names_the_protocol_of_a_port() {
    use trellis_policy::{InboundPolicy, Protocol, ResourceRef};
    let n = 25;
    let app = http_backend(addr(n, 1, 8080), "app").await;
    let cp = ControlPlane::default();
    cp.set_inbound(InboundPolicy {
        workload: ResourceRef::new("test", "client-0"),
        port: 8080,
        protocol: Protocol::Opaque,
        ..InboundPolicy::default()
    });
    let running = cp.start(pod(n, 3)).await;
    let config = trellis_proxy::config::Config {
        inbound_addr: addr(n, 1, 0),
        inbound_fixed: vec![(addr(n, 1, 0), app)],
        ..sidecar_config(
            pod(n, 1),
            SourceConfig::Controller(running.addr.to_string()),
        )
    };
    let server = trellis_proxy::Sidecar::start(&config).await.unwrap();
    // The application still answers: opaque forwarding carries HTTP too.
    let (s, body) = get(server.inbound_fixed[0], "app", "/x").await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "app GET /x HTTP/1.1 host=app")
    );
    let (_, metrics) = admin(&server, "/metrics").await;
    assert!(
        metrics.contains(
            r#"trellis_connections_detected_total{direction="inbound",protocol="opaque"} 1"#
        ),
        "the hint, not detection, decided: {metrics}"
    );
    running.stop();
}
