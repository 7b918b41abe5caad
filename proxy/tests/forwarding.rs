//! Tier 1: two sidecars ("client pod" and "server pod") against an
//! in-process fake control plane, carrying every kind of traffic over the
//! mesh transport and back to its original protocol.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use std::time::Duration;
use support::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use trellis_policy::build::service;
use trellis_proxy::config::SourceConfig;

/// A client pod and a meshed server pod of test `n`; the Service at
/// `cluster_ip(n, 80)` has the server pod's `backend_port` as endpoint.
struct Mesh {
    client: trellis_proxy::Sidecar,
    server: trellis_proxy::Sidecar,
    /// Where the "application" of the client pod connects (the fixed
    /// outbound listener standing in for iptables).
    entry: std::net::SocketAddr,
    cp: ControlPlane,
}

async fn mesh(n: u8, backend_port: u16) -> Mesh {
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(outbound(
        target,
        service("shop", "web", 80).meshed_endpoint(
            &addr(n, 1, backend_port).to_string(),
            "shop",
            "web",
        ),
    ));
    let running = cp.start(pod(n, 3)).await;
    let source = SourceConfig::Controller(running.addr.to_string());
    std::mem::forget(running);
    let server = sidecar(pod(n, 1), source.clone(), &[]).await;
    let client = sidecar(pod(n, 2), source, &[target]).await;
    Mesh {
        entry: client.outbound_fixed[0],
        client,
        server,
        cp,
    }
}

#[tokio::test]
async fn http1_keep_alive_crosses_the_mesh_and_arrives_as_http1() {
    let n = 1;
    http_backend(addr(n, 1, 8080), "web").await;
    let m = mesh(n, 8080).await;
    let mut c = H1::connect(m.entry).await;
    for path in ["/a", "/b/c", "/d?x=1"] {
        let (status, headers, body) = c.get("web.shop:80", path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-backend"], "web");
        let want_path = path.split('?').next().unwrap();
        assert_eq!(
            body,
            format!("web GET {want_path} HTTP/1.1 host=web.shop:80")
        );
    }
    let (_, metrics) = admin(&m.client, "/metrics").await;
    assert!(
        metrics.contains(r#"trellis_requests_total{direction="outbound",service="shop/web:80",route="default",backend="shop/web:80",status="200"} 3"#),
        "{metrics}"
    );
    let (_, metrics) = admin(&m.server, "/metrics").await;
    assert!(
        metrics.contains(r#"trellis_requests_total{direction="inbound",service="8080",route="",backend="8080",status="200"} 3"#),
        "the requests went through the server's proxy: {metrics}"
    );
    assert!(
        metrics.contains(
            r#"trellis_connections_detected_total{direction="inbound",protocol="mesh"} 1"#
        ),
        "one multiplexed connection: {metrics}"
    );
    let requests = m.cp.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0].client_namespace, "test",
        "the watch names the client namespace"
    );
}

#[tokio::test]
async fn http2_crosses_the_mesh_and_keeps_its_authority() {
    let n = 2;
    http_backend(addr(n, 1, 8080), "web").await;
    let m = mesh(n, 8080).await;
    let mut c = h2(m.entry).await;
    for i in 0..3 {
        let req = Request::get(format!("http://web.shop:80/h2/{i}"))
            .body(BodyExt::boxed(Full::new(Bytes::new())))
            .unwrap();
        let rsp = c.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            format!("web GET /h2/{i} HTTP/2.0 host=web.shop:80").as_bytes()
        );
    }
}

#[tokio::test]
async fn grpc_streams_both_ways_and_keeps_its_trailers() {
    let n = 3;
    http_backend(addr(n, 1, 9090), "grpc").await;
    let m = mesh(n, 9090).await;
    let mut c = h2(m.entry).await;
    let (tx, body) = channel_body();
    let req = Request::post("http://grpc.shop:80/echo.Echo/Chat")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut rsp_body = rsp.into_body();
    // A bidirectional stream: each message comes back before the next is sent.
    for i in 0u8..3 {
        let msg = Bytes::from(vec![0, 0, 0, 0, 1, i]);
        tx.send(Ok(Frame::data(msg.clone()))).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), rsp_body.frame())
            .await
            .expect("the echo streams back")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), msg);
    }
    drop(tx);
    let trailers = loop {
        let frame = rsp_body.frame().await.unwrap().unwrap();
        if let Ok(t) = frame.into_trailers() {
            break t;
        }
    };
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo"], "done");
}

#[tokio::test]
async fn websocket_upgrade_gets_a_connection_of_its_own() {
    let n = 4;
    http_backend(addr(n, 1, 8080), "ws").await;
    let m = mesh(n, 8080).await;
    let mut tcp = TcpStream::connect(m.entry).await.unwrap();
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until_blank_line(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"frames after the upgrade").await.unwrap();
    assert_eq!(read_n(&mut tcp, 24).await, b"frames after the upgrade");
}

async fn read_until_blank_line(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(tcp, 1).await);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn opaque_tcp_crosses_the_mesh() {
    let n = 5;
    tcp_echo(addr(n, 1, 6379)).await;
    let m = mesh(n, 6379).await;
    let mut tcp = TcpStream::connect(m.entry).await.unwrap();
    tcp.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    assert_eq!(read_n(&mut tcp, 14).await, b"*1\r\n$4\r\nPING\r\n");
    tcp.write_all(b"more").await.unwrap();
    assert_eq!(read_n(&mut tcp, 4).await, b"more");
}

#[tokio::test]
async fn a_server_that_speaks_first_greets_a_silent_client() {
    let n = 6;
    banner_server(addr(n, 1, 25), b"220 mail.shop ESMTP\r\n").await;
    let m = mesh(n, 25).await;
    let mut tcp = TcpStream::connect(m.entry).await.unwrap();
    // The client sends nothing: the proxy must give up detection and
    // forward so the server's greeting arrives.
    assert_eq!(read_n(&mut tcp, 21).await, b"220 mail.shop ESMTP\r\n");
    tcp.write_all(b"EHLO me\r\n").await.unwrap();
    assert_eq!(read_n(&mut tcp, 9).await, b"EHLO me\r\n");
}

#[tokio::test]
async fn a_target_without_policy_goes_to_its_original_destination() {
    let n = 7;
    let backend = http_backend(addr(n, 1, 8080), "plain").await;
    let cp = ControlPlane::default();
    let running = cp.start(pod(n, 3)).await;
    let target = trellis_policy::Target(backend);
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(running.addr.to_string()),
        &[target],
    )
    .await;
    let (status, body) = get(client.outbound_fixed[0], "plain", "/direct").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "plain GET /direct HTTP/1.1 host=plain");
    running.stop();
}

#[tokio::test]
async fn unmeshed_endpoints_get_the_request_as_the_application_sent_it() {
    let n = 8;
    let backend = http_backend(addr(n, 1, 8080), "legacy").await;
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(outbound(
        target,
        service("shop", "legacy", 80).endpoint(&backend.to_string()),
    ));
    let running = cp.start(pod(n, 3)).await;
    let client = sidecar(
        pod(n, 2),
        SourceConfig::Controller(running.addr.to_string()),
        &[target],
    )
    .await;
    let mut c = h2(client.outbound_fixed[0]).await;
    let req = Request::get("http://legacy.shop/x")
        .version(Version::HTTP_2)
        .body(BodyExt::boxed(Full::new(Bytes::new())))
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "legacy GET /x HTTP/2.0 host=legacy.shop".as_bytes());
    let (_, config) = admin(&client, "/config").await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["outbound"][0]["endpoints"]["shop/legacy:80"][0]["addr"],
        backend.to_string()
    );
}
