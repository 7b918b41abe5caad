//! Tier 1, the gateway (`trellis-proxy gateway`) against a fake controller
//! serving `GatewayConfig.Watch`: HTTP listeners routing by host and path
//! (HTTP/1.1 and h2c), 404 for a host no listener serves, redirects keeping
//! the listener's port and scheme, HTTPS termination with the certificate
//! the SNI selects, 421 for a request misdirected to another listener,
//! TLS passthrough by SNI, a TCP route, sockets added and removed as the
//! listeners change (an open connection keeps working), metrics by
//! gateway, listener and route, mTLS to a meshed endpoint under the
//! gateway's own identity, GRPCRoutes, and draining.

mod edge;
mod support;
mod traffic;

use bytes::Bytes;
use edge::*;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::{net::SocketAddr, time::Duration};
use support::{H1, addr, get, http_backend, pod, tcp_echo};
use tokio::io::AsyncWriteExt;
use trellis_identity_client::{Identity, TlsMetrics, testing::TestCa};
use trellis_policy::{
    SpiffeId,
    build::{grpc_route, grpc_rule, redirect, route, rule, service, tcp_route, tls_route},
};

fn backend(name: &str, addr: SocketAddr) -> trellis_policy::build::BackendBuilder {
    service("shop", name, 80).endpoint(&addr.to_string())
}

#[tokio::test]
async fn http_listeners_route_by_host_and_path() {
    let n = 200;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let b = http_backend(addr(n, 3, 8080), "b").await;
    let plane = Plane::new(vec![
        listener("http", 8080)
            .route(
                route("edge", "shop")
                    .host("shop.example.com")
                    .rule(rule().prefix("/cart").backend(backend("b", b)))
                    .rule(rule().prefix("/").backend(backend("a", a))),
            )
            .route(
                route("edge", "any")
                    .host("*.example.org")
                    .rule(rule().exact("/only").backend(backend("b", b))),
            )
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    assert_eq!(plane.asked.lock().unwrap()[0], gateway_ref());
    let entry = gw.ports()[&8080];
    let cases = [
        ("shop.example.com", "/", StatusCode::OK, "a GET / "),
        (
            "shop.example.com:8080",
            "/cart/1",
            StatusCode::OK,
            "b GET /cart/1 ",
        ),
        ("www.example.org", "/only", StatusCode::OK, "b GET /only "),
        ("www.example.org", "/other", StatusCode::NOT_FOUND, ""),
        ("unknown.test", "/", StatusCode::NOT_FOUND, ""),
    ];
    for (host, path, status, body) in cases {
        let (got, text) = get(entry, host, path).await;
        assert_eq!(got, status, "{host}{path}: {text}");
        assert!(text.starts_with(body), "{host}{path}: {text}");
    }
    // h2c with prior knowledge reaches the backend in the version it speaks.
    let mut h2 = support::h2(entry).await;
    let req = Request::get("http://shop.example.com/cart")
        .body(http_body_util::combinators::BoxBody::new(Full::new(
            Bytes::new(),
        )))
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let text = rsp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("b GET /cart HTTP/1.1 host=shop.example.com"),
        "{text}"
    );
}

#[tokio::test]
async fn a_host_no_listener_serves_is_404() {
    let n = 201;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let plane = Plane::new(vec![
        listener("shop", 8080)
            .hostname("*.example.com")
            .route(route("edge", "shop").rule(rule().backend(backend("a", a))))
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let entry = gw.ports()[&8080];
    let (status, _) = get(entry, "www.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = H1::connect(entry).await.get("other.org", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        headers["x-trellis-proxy-error"]
            .to_str()
            .unwrap()
            .contains("no listener on port 8080 serves host other.org"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn redirects_keep_the_listener_port_and_scheme() {
    let n = 202;
    let pki = Pki::new();
    let cert = pki.certificate(&["*.example.com"]);
    let redirects = || {
        route("edge", "moved")
            .rule(
                rule()
                    .prefix("/old")
                    .filter(redirect().hostname("new.example.com").prefix_path("/new")),
            )
            .rule(rule().prefix("/secure").filter(redirect().scheme("https")))
    };
    let plane = Plane::new(vec![
        listener("http", 8080).route(redirects()).into(),
        listener("https", 8443)
            .https(&[cert])
            .route(redirects())
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let (status, headers, _) = H1::connect(gw.ports()[&8080])
        .await
        .get("www.example.com:8080", "/old/x?q=1")
        .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        "http://new.example.com:8080/new/x?q=1"
    );
    let (_, headers, _) = H1::connect(gw.ports()[&8080])
        .await
        .get("www.example.com", "/secure")
        .await;
    assert_eq!(
        headers[header::LOCATION],
        "https://www.example.com/secure",
        "a changed scheme takes its well-known port"
    );
    let tls = pki
        .connect(gw.ports()[&8443], "www.example.com", &[b"http/1.1"])
        .await
        .unwrap();
    let a = get_over(tls, "www.example.com", "/old/y").await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(
        a.headers[header::LOCATION],
        "https://new.example.com:8443/new/y"
    );
}

#[tokio::test]
async fn https_listeners_terminate_with_the_certificate_the_sni_selects() {
    let n = 203;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let w = http_backend(addr(n, 3, 8080), "w").await;
    let d = http_backend(addr(n, 4, 8080), "d").await;
    let pki = Pki::new();
    let all =
        |name: &str, b: SocketAddr| route("edge", name).rule(rule().backend(backend(name, b)));
    let plane = Plane::new(vec![
        listener("default", 8443)
            .https(&[pki.certificate(&["fallback.test", "plain.test"])])
            .route(all("d", d))
            .into(),
        listener("wild", 8443)
            .hostname("*.example.com")
            .https(&[pki.certificate(&["*.example.com"])])
            .route(all("w", w))
            .into(),
        listener("api", 8443)
            .hostname("api.example.com")
            .https(&[
                pki.certificate(&["unrelated.test"]),
                pki.certificate(&["api.example.com"]),
            ])
            .route(all("a", a))
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let entry = gw.ports()[&8443];
    let cases: [(&str, &[u8], &str, &str); 3] = [
        (
            "api.example.com",
            b"h2",
            "api.example.com",
            "a GET / HTTP/1.1",
        ),
        (
            "www.example.com",
            b"http/1.1",
            "*.example.com",
            "w GET / HTTP/1.1",
        ),
        ("plain.test", b"h2", "fallback.test", "d GET / HTTP/1.1"),
    ];
    for (sni, alpn, cert_name, body) in cases {
        let tls = pki.connect(entry, sni, &[alpn]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "{sni}");
        assert_eq!(presented_names(&tls)[0], cert_name, "{sni}");
        let answer = get_over(tls, sni, "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{sni}: {answer:?}");
        assert!(answer.body.starts_with(body), "{sni}: {}", answer.body);
    }
    // A request for another listener's host on this TLS session: 421.
    let tls = pki
        .connect(entry, "api.example.com", &[b"h2"])
        .await
        .unwrap();
    let answer = get_over(tls, "www.example.com", "/").await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST, "{answer:?}");
    // The catch-all listener's session, a host of no listener but its own.
    let tls = pki
        .connect(entry, "plain.test", &[b"http/1.1"])
        .await
        .unwrap();
    let answer = get_over(tls, "who.knows", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni_without_terminating() {
    let n = 204;
    let pki = Pki::new();
    let (one, two) = sni_backends(n, &pki, &["two.example.com"]).await;
    let plane = Plane::new(vec![
        listener("tls", 9443)
            .passthrough()
            .tls_route(
                tls_route("edge", "one")
                    .host("one.example.com")
                    .backend(backend("one", one))
                    .tls(),
            )
            .tls_route(
                tls_route("edge", "two")
                    .host("*.example.com")
                    .backend(backend("two", two))
                    .tls(),
            )
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let entry = gw.ports()[&9443];
    for (sni, who) in [("one.example.com", "one"), ("two.example.com", "two")] {
        // The backend's own certificate verifies: the bytes went through.
        let mut tls = pki.connect(entry, sni, &[]).await.unwrap();
        assert_eq!(presented_names(&tls), [sni]);
        let greeting = read_some(&mut tls, who.len() + 1).await;
        assert_eq!(greeting, format!("{who}:").as_bytes());
        tls.write_all(b"ping").await.unwrap();
        assert_eq!(read_some(&mut tls, 4).await, b"ping");
    }
    // No route for the SNI: the connection is closed, nothing answers.
    assert!(pki.connect(entry, "other.org", &[]).await.is_err());
}

#[tokio::test]
async fn tcp_listeners_forward_to_their_route() {
    let n = 205;
    let echo = tcp_echo(addr(n, 2, 7000)).await;
    let plane = Plane::new(vec![
        listener("db", 7000)
            .tcp()
            .tcp_route(tcp_route("edge", "db").backend(backend("db", echo)).tcp())
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let mut c = tokio::net::TcpStream::connect(gw.ports()[&7000])
        .await
        .unwrap();
    c.write_all(b"hello gateway").await.unwrap();
    assert_eq!(read_some(&mut c, 13).await, b"hello gateway");
}

#[tokio::test]
async fn sockets_follow_the_listeners_and_open_connections_keep_working() {
    let n = 206;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let b = http_backend(addr(n, 3, 8080), "b").await;
    let to =
        |name: &str, be: SocketAddr| route("edge", name).rule(rule().backend(backend(name, be)));
    let plane = Plane::new(vec![listener("one", 8080).route(to("a", a)).into()]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let first = gw.ports()[&8080];
    let mut open = H1::connect(first).await;
    assert!(open.get("x", "/").await.2.starts_with("a "));

    // Port 8080 goes, 8081 comes; the route of a kept listener changes.
    plane.set(vec![listener("two", 8081).route(to("b", b)).into()]);
    applied(&gw, 2).await;
    assert_eq!(gw.ports().keys().copied().collect::<Vec<_>>(), [8081]);
    let (status, text) = get(gw.ports()[&8081], "x", "/").await;
    assert_eq!((status, &text[..2]), (StatusCode::OK, "b "));
    closed(first).await;
    let (status, _, text) = open.get("x", "/again").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a connection accepted before goes on"
    );
    assert!(text.starts_with("a GET /again"), "{text}");

    // Changing a listener's routes is hitless for its connections.
    let mut kept = H1::connect(gw.ports()[&8081]).await;
    plane.set(vec![listener("two", 8081).route(to("a", a)).into()]);
    applied(&gw, 3).await;
    let (_, _, text) = kept.get("x", "/").await;
    assert!(
        text.starts_with("a "),
        "the new routes apply to the open connection: {text}"
    );
}

#[tokio::test]
async fn metrics_name_the_gateway_listener_and_route() {
    let n = 207;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let plane = Plane::new(vec![
        listener("web", 8080)
            .route(route("edge", "site").rule(rule().backend(backend("a", a))))
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    get(gw.ports()[&8080], "x", "/").await;
    let (status, text) = get(gw.admin_addr, "admin", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let want = r#"trellis_requests_total{direction="gateway",service="edge/web/web",route="HTTPRoute edge/site rule 0",backend="shop/a:80",status="200"} 1"#;
    assert!(text.contains(want), "{text}");
    let (_, config) = get(gw.admin_addr, "admin", "/config").await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["gateway"], "edge/web");
    assert_eq!(config["ports"][0]["port"], 8080);
    assert_eq!(config["ports"][0]["listeners"][0]["name"], "web");
    let (status, _) = get(gw.admin_addr, "admin", "/ready").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_gateway_speaks_mtls_to_meshed_endpoints_as_itself() {
    let n = 208;
    let ca = TestCa::new("cluster.local");
    let id = |ns: &str, sa: &str| SpiffeId::for_service_account("cluster.local", ns, sa);
    let certified = |ns: &str, sa: &str| {
        Identity::fixed(
            ca.certificate(&id(ns, sa), Duration::from_secs(3600)),
            ca.bundle(),
            TlsMetrics::default(),
        )
    };
    // The meshed pod: its sidecar on the mesh port, its app behind it.
    let app = addr(n, 2, 8080);
    who_app(app).await;
    let peer = meshed_sidecar(pod(n, 2), certified("shop", "web")).await;
    let meshed = service("shop", "web", 80).meshed_endpoint(&app.to_string(), "shop", "web");
    let plane = Plane::new(vec![
        listener("http", 8080)
            .route(route("edge", "site").rule(rule().backend(meshed)))
            .into(),
    ]);
    let gw = gateway(
        pod(n, 1),
        plane.start(pod(n, 1)).await,
        Some(certified("edge", "web-trellis")),
    )
    .await;
    let (status, headers, text) = H1::connect(gw.ports()[&8080])
        .await
        .get("www.example.com", "/")
        .await;
    assert_eq!(status, StatusCode::OK, "{headers:?} {text}");
    assert_eq!(
        text,
        id("edge", "web-trellis").as_str(),
        "the app learns the gateway's identity"
    );
    let handshakes = peer.identity.as_ref().unwrap().metrics().handshakes(
        trellis_identity_client::Direction::Inbound,
        trellis_identity_client::HandshakeOutcome::Ok,
    );
    assert_eq!(handshakes, 1, "one mTLS connection from the gateway");
}

#[tokio::test]
async fn draining_stops_the_listeners_and_lets_open_connections_finish() {
    let n = 209;
    let a = http_backend(addr(n, 2, 8080), "a").await;
    let plane = Plane::new(vec![
        listener("web", 8080)
            .route(route("edge", "site").rule(rule().backend(backend("a", a))))
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let entry = gw.ports()[&8080];
    let admin_addr = gw.admin_addr;
    let mut open = H1::connect(entry).await;
    assert_eq!(open.get("x", "/").await.0, StatusCode::OK);
    let finished = tokio::time::timeout(Duration::from_secs(10), gw.drain())
        .await
        .expect("an idle keep-alive connection is closed, not waited for");
    assert!(finished, "everything finished within the grace period");
    closed(entry).await;
    closed(admin_addr).await;
}

/// Waits until nothing accepts connections at `addr` (a stopped accept
/// loop drops its socket when it next runs), failing after 5 s.
async fn closed(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} still accepts connections");
}

#[tokio::test]
async fn grpc_routes_route_calls_by_service_and_method() {
    let n = 210;
    let get = traffic::backend(addr(n, 2, 8080), |_| async { traffic::grpc_ok(b"get") }).await;
    let rest = traffic::backend(addr(n, 3, 8080), |_| async { traffic::grpc_ok(b"rest") }).await;
    let plane = Plane::new(vec![
        listener("grpc", 8080)
            .grpc_route(
                grpc_route("edge", "calls")
                    .rule(
                        grpc_rule()
                            .service("pkg.Svc")
                            .method("Get")
                            .backend(service("shop", "get", 80).endpoint(&get.endpoint())),
                    )
                    .rule(
                        grpc_rule()
                            .service("pkg.Svc")
                            .backend(service("shop", "rest", 80).endpoint(&rest.endpoint())),
                    ),
            )
            .into(),
    ]);
    let gw = gateway(pod(n, 1), plane.start(pod(n, 1)).await, None).await;
    let mut c = traffic::Client::h2(gw.ports()[&8080]).await;
    let a = c.send(traffic::grpc_call("/pkg.Svc/Get", &[])).await;
    assert_eq!(a.body.as_bytes(), b"get");
    let a = c.send(traffic::grpc_call("/pkg.Svc/List", &[])).await;
    assert_eq!(a.body.as_bytes(), b"rest");
    let a = c.send(traffic::grpc_call("/other.Svc/Get", &[])).await;
    assert_eq!(a.status, StatusCode::OK, "gRPC errors travel as a status");
    assert_eq!(a.headers["grpc-status"], "12", "UNIMPLEMENTED: no route");
    assert_eq!((get.hits(), rest.hits()), (1, 1));
}
