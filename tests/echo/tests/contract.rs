//! Tier 1: the echo server's contract (DESIGN.md, "The echo server"), served
//! in-process on loopback and read with real clients: HTTP/1.1, h2c, TLS,
//! WebSocket, gRPC (plain and TLS) and TCP.

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use trellis_echo::{
    Config, Identity, Listener, Protocol, Running,
    config::CertSource,
    grpc::pb::{EchoRequest, EchoStreamRequest, grpc_echo_client::GrpcEchoClient},
    start,
};

fn listener(protocol: Protocol, tls: bool) -> Listener {
    Listener {
        protocol,
        addr: "127.0.0.1:0".parse().unwrap(),
        tls,
    }
}

fn identity() -> Identity {
    Identity {
        namespace: "shop".into(),
        pod: "echo-v1-0".into(),
        service: "echo".into(),
        version: "v1".into(),
        cluster: String::new(),
    }
}

async fn server_with(cert: CertSource) -> Running {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listeners = [Protocol::Http, Protocol::Grpc, Protocol::Tcp]
        .into_iter()
        .flat_map(|p| [listener(p, false), listener(p, true)])
        .collect();
    start(Config {
        listeners,
        identity: identity(),
        cert,
    })
    .await
    .unwrap()
}

async fn server() -> Running {
    server_with(CertSource::SelfSigned(vec!["localhost".into()])).await
}

/// What an HTTP exchange returned.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h1(addr: SocketAddr) -> H1 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

async fn h2<T>(io: T) -> H2
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "echo.shop:80")
}

async fn send1(sender: &mut H1, req: http::request::Builder) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let res = sender
        .send_request(req.body(Full::default()).unwrap())
        .await?;
    collect(res).await
}

async fn send2(sender: &mut H2, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let res = sender.send_request(req).await?;
    collect(res).await
}

async fn collect(res: http::Response<hyper::body::Incoming>) -> Result<Answer, hyper::Error> {
    let (parts, body) = res.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn get1(addr: SocketAddr, path: &str) -> Answer {
    send1(&mut h1(addr).await, get(path)).await.unwrap()
}

fn tls_connector(running: &Running, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(running.certificate.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    running: &Running,
    protocol: Protocol,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let addr = running.addr(protocol, true).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector(running, alpn)
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn http1_echo_reads_like_the_upstream_echo() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    let answer = send1(
        &mut h1(addr).await,
        get("/a/b?c=d")
            .header("x-header-add", "a")
            .header("x-multi", "1")
            .header("x-multi", "2"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let echo = answer.json();
    assert_eq!(
        (
            &echo["path"],
            &echo["host"],
            &echo["method"],
            &echo["proto"]
        ),
        (
            &json!("/a/b?c=d"),
            &json!("echo.shop:80"),
            &json!("GET"),
            &json!("HTTP/1.1")
        )
    );
    assert_eq!(echo["headers"]["X-Header-Add"], json!(["a"]));
    assert_eq!(echo["headers"]["X-Multi"], json!(["1", "2"]));
    assert!(
        echo["headers"].get("Host").is_none(),
        "Host is the host field, as in Go"
    );
    assert_eq!(
        (
            &echo["namespace"],
            &echo["pod"],
            &echo["service"],
            &echo["version"]
        ),
        (
            &json!("shop"),
            &json!("echo-v1-0"),
            &json!("echo"),
            &json!("v1")
        )
    );
    assert_eq!(echo["httpPort"], json!(addr.port()));
    assert!(echo.get("tls").is_none());
}

#[tokio::test]
async fn a_connection_carries_requests_with_bodies() {
    let running = server().await;
    let mut sender = h1(running.addr(Protocol::Http, false).unwrap()).await;
    for i in 0..3 {
        sender.ready().await.unwrap();
        let req = Request::post(format!("/post/{i}"))
            .header("host", "echo")
            .body(Full::new(Bytes::from(vec![b'x'; 100_000])))
            .unwrap();
        let answer = collect(sender.send_request(req).await.unwrap())
            .await
            .unwrap();
        assert_eq!(answer.json()["method"], "POST");
        assert_eq!(answer.json()["path"], format!("/post/{i}"));
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_on_the_same_port() {
    let running = server().await;
    let tcp = TcpStream::connect(running.addr(Protocol::Http, false).unwrap())
        .await
        .unwrap();
    let mut sender = h2(tcp).await;
    let req = Request::get("http://echo.shop/h2?x=1")
        .header("x-header-set", "v")
        .body(Full::default())
        .unwrap();
    let echo = send2(&mut sender, req).await.unwrap().json();
    assert_eq!(echo["proto"], "HTTP/2.0");
    assert_eq!(echo["host"], "echo.shop");
    assert_eq!(echo["path"], "/h2?x=1");
    assert_eq!(echo["headers"]["X-Header-Set"], json!(["v"]));
}

#[tokio::test]
async fn status_and_health() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    assert_eq!(
        get1(addr, "/status/503").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get1(addr, "/status/204").await.status,
        StatusCode::NO_CONTENT
    );
    for bad in ["/status/5030", "/status/abc", "/status/"] {
        assert_eq!(
            get1(addr, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let health = get1(addr, "/health").await;
    assert_eq!(
        (health.status, health.body.as_ref()),
        (StatusCode::OK, b"OK".as_ref())
    );
}

#[tokio::test]
async fn echo_set_header_sets_response_headers() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    let answer = send1(
        &mut h1(addr).await,
        get("/")
            .header("X-Echo-Set-Header", "X-Foo: bar, X-Bar:baz")
            .header("X-Echo-Set-Header", "X-Foo:qux"),
    )
    .await
    .unwrap();
    assert_eq!(answer.headers["x-foo"], "bar,qux");
    assert_eq!(answer.headers["x-bar"], "baz");
    let bad = send1(
        &mut h1(addr).await,
        get("/").header("X-Echo-Set-Header", "bad name:v"),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bad.body).contains("bad name"));
}

#[tokio::test]
async fn retry_fails_with_a_status_then_echoes() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    let path = "/retry/code-503?uuid=a&succeedAfter=2&responseCode=503&delayRetry=5ms";
    assert_eq!(
        get1(addr, path).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get1(addr, "/retry/?uuid=b&succeedAfter=0").await.status,
        StatusCode::OK,
        "uuids are independent"
    );
    assert_eq!(
        get1(addr, path).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let third = get1(addr, path).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.json()["path"], path);
    assert_eq!(
        get1(addr, "/retry/").await.status,
        StatusCode::BAD_REQUEST,
        "a uuid is required"
    );
}

fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[tokio::test]
async fn retry_resets_http1_connections() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    let path = "/retry/?uuid=r&succeedAfter=1";
    let err = send1(&mut h1(addr).await, get(path)).await.unwrap_err();
    assert!(is_reset(&err), "expected a TCP reset, got {err:?}");
    assert_eq!(get1(addr, path).await.status, StatusCode::OK);
}

#[tokio::test]
async fn retry_resets_only_the_http2_stream() {
    let running = server().await;
    let tcp = TcpStream::connect(running.addr(Protocol::Http, false).unwrap())
        .await
        .unwrap();
    let mut sender = h2(tcp).await;
    let req = |path: &str| {
        Request::get(format!("http://echo{path}"))
            .body(Full::default())
            .unwrap()
    };
    let err = send2(&mut sender, req("/retry/?uuid=s&succeedAfter=1"))
        .await
        .unwrap_err();
    let reason = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::INTERNAL_ERROR), "{err:?}");
    let again = send2(&mut sender, req("/retry/?uuid=s&succeedAfter=1"))
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::OK, "the connection survives");
}

#[tokio::test]
async fn delay_waits_then_echoes() {
    let running = server().await;
    let addr = running.addr(Protocol::Http, false).unwrap();
    assert_eq!(get1(addr, "/slow?delay=10ms").await.status, StatusCode::OK);
    assert_eq!(
        get1(addr, "/slow?delay=soon").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn tls_ports_echo_the_handshake() {
    let running = server().await;
    let port = running.addr(Protocol::Http, true).unwrap().port();
    let mut sender = h2(tls_connect(&running, Protocol::Http, &[b"h2"]).await).await;
    let req = Request::get("https://localhost/tls")
        .body(Full::default())
        .unwrap();
    let echo = send2(&mut sender, req).await.unwrap().json();
    assert_eq!(echo["tls"]["version"], "TLSv1.3");
    assert_eq!(echo["tls"]["serverName"], "localhost");
    assert_eq!(echo["tls"]["negotiatedProtocol"], "h2");
    assert!(
        echo["tls"]["cipherSuite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_"),
        "{echo}"
    );
    assert_eq!(echo["httpPort"], json!(port));

    let tls = tls_connect(&running, Protocol::Http, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let echo = send1(&mut sender, get("/tls")).await.unwrap().json();
    assert_eq!(echo["proto"], "HTTP/1.1");
    assert_eq!(echo["tls"]["negotiatedProtocol"], "http/1.1");
}

#[tokio::test]
async fn certificates_come_from_crt_and_key_files() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("cert.crt"), dir.path().join("cert.key"));
    std::fs::write(&crt, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let running = server_with(CertSource::Files { crt, key }).await;
    assert_eq!(&running.certificate, generated.cert.der());
    let mut sender = h2(tls_connect(&running, Protocol::Http, &[b"h2"]).await).await;
    let req = Request::get("https://localhost/")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send2(&mut sender, req).await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn websocket_messages_come_back() {
    let running = server().await;
    let tcp = TcpStream::connect(running.addr(Protocol::Http, false).unwrap())
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://echo/ws", tcp)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    use tokio_tungstenite::tungstenite::Message;
    for msg in [Message::text("hello"), Message::binary(vec![1u8, 2, 3])] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
}

const ECHO_METHOD: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";

#[tokio::test]
async fn grpc_echo_reports_what_it_saw() {
    let running = server().await;
    let addr = running.addr(Protocol::Grpc, false).unwrap();
    let mut client = GrpcEchoClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
    });
    req.metadata_mut().insert("x-test", "1".parse().unwrap());
    let answer = client.echo(req).await.unwrap().into_inner();
    let a = answer.assertions.unwrap();
    assert_eq!(a.fully_qualified_method, ECHO_METHOD);
    assert_eq!(a.authority, addr.to_string());
    assert!(
        a.headers
            .iter()
            .any(|h| h.key == "x-test" && h.value == "1"),
        "{:?}",
        a.headers
    );
    assert_eq!(
        a.headers[0].key, ":authority",
        "listed first, as grpc-go does"
    );
    let ctx = a.context.unwrap();
    assert_eq!(
        (
            ctx.namespace.as_str(),
            ctx.pod.as_str(),
            ctx.service_name.as_str()
        ),
        ("shop", "echo-v1-0", "echo")
    );
    assert_eq!(
        (a.port, a.proto.as_str(), a.version.as_str()),
        (u32::from(addr.port()), "HTTP/2.0", "v1")
    );
    assert!(a.tls_assertions.is_none());
    assert_eq!(answer.request.unwrap().message, "hi");

    let two = client
        .echo_two(EchoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        two.assertions
            .unwrap()
            .fully_qualified_method
            .ends_with("/EchoTwo")
    );
    let three = client.echo_three(EchoRequest::default()).await.unwrap_err();
    assert_eq!(three.code(), tonic::Code::Unimplemented);

    let mut stream = client
        .echo_stream(EchoStreamRequest {
            count: 3,
            interval_ms: 1,
            message: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(item) = stream.message().await.unwrap() {
        assert_eq!(item.request.unwrap().message, "s");
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn grpc_over_tls() {
    let running = server().await;
    let tls = tls_connect(&running, Protocol::Grpc, &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(req).await }
    });
    let mut client = GrpcEchoClient::with_origin(svc, "https://localhost".parse().unwrap());
    let a = client
        .echo(EchoRequest::default())
        .await
        .unwrap()
        .into_inner()
        .assertions
        .unwrap();
    let tls = a.tls_assertions.unwrap();
    assert_eq!(
        (tls.version.as_str(), tls.server_name.as_str()),
        ("TLSv1.3", "localhost")
    );
    assert_eq!(a.fully_qualified_method, ECHO_METHOD);
}

#[tokio::test]
async fn tcp_echo_plain_and_tls() {
    let running = server().await;
    let mut tcp = TcpStream::connect(running.addr(Protocol::Tcp, false).unwrap())
        .await
        .unwrap();
    tcp.write_all(b"hello\n").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello\n");

    let mut tls = tls_connect(&running, Protocol::Tcp, &[]).await;
    tls.write_all(b"over tls").await.unwrap();
    let mut buf = [0u8; 8];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"over tls");
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    for args in [
        &["--port=http"][..],
        &["--tls=1"],
        &["--port=80", "--grpc=80"],
        &["--bogus"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis-echo"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}
