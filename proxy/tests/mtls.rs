//! Tier 1: mesh mTLS between sidecars with certificates of an in-process
//! test CA (`trellis-identity-client`'s `TestCa`), against the fake control
//! plane: the application learns the verified caller, a server that is not
//! the announced identity is refused, a client of a foreign CA is refused,
//! strict mode closes plaintext, and authorization allows or denies HTTP
//! requests (403) and TCP connections (closed) by the verified identity.

mod support;

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use trellis_api::contract::header::CLIENT_ID;
use trellis_identity_client::{
    Direction, HandshakeOutcome, Identity, TlsMetrics, TrustBundle, testing::TestCa,
};
use trellis_policy::{
    AuthorizationPolicy, AuthzRule, AuthzSource, InboundPolicy, MtlsMode, Protocol, ResourceRef,
    SpiffeId, Target, build::service,
};
use trellis_proxy::{
    Sidecar,
    config::{Config, SourceConfig},
    inbound::admit::Carried,
};

const HOUR: Duration = Duration::from_secs(3600);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", ns, sa)
}

/// A fixed identity `ns/sa` issued by `ca`, trusting `ca`.
fn certified(ca: &TestCa, ns: &str, sa: &str) -> Identity {
    Identity::fixed(
        ca.certificate(&id(ns, sa), HOUR),
        ca.bundle(),
        TlsMetrics::default(),
    )
}

/// A sidecar for "pod" `ip` with mTLS under `identity`: inbound on the mesh
/// port, the fixed outbound listeners `outbound` (targets) and the fixed
/// plaintext inbound listeners to the application ports `inbound`.
async fn sidecar(
    ip: std::net::IpAddr,
    source: &SourceConfig,
    controller: Option<SpiffeId>,
    outbound: &[Target],
    inbound: &[u16],
    identity: Identity,
) -> Sidecar {
    let config = Config {
        outbound_fixed: outbound
            .iter()
            .map(|t| (SocketAddr::new(ip, 0), t.0))
            .collect(),
        inbound_fixed: inbound
            .iter()
            .map(|p| (SocketAddr::new(ip, 0), SocketAddr::new(ip, *p)))
            .collect(),
        workload: Some(ResourceRef::new("shop", "web-0")),
        controller_identity: controller,
        ..sidecar_config(ip, source.clone())
    };
    Sidecar::start_with_identity(&config, identity)
        .await
        .unwrap()
}

/// An application that answers with the `x-trellis-client-id` it was
/// given (`-` for none) and counts the requests that reached it.
async fn who_app(addr: SocketAddr) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let hits = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let ids: Vec<String> = req
                        .headers()
                        .get_all(CLIENT_ID)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .collect();
                    let body = if ids.is_empty() {
                        "-".to_string()
                    } else {
                        ids.join(",")
                    };
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from(body))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    hits
}

/// One GET with a forged client id; (status, proxy error header, body).
async fn get_as(entry: SocketAddr) -> (StatusCode, Option<String>, String) {
    let tcp = TcpStream::connect(entry).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header(header::HOST, "web.shop")
        .header(CLIENT_ID, "spiffe://cluster.local/ns/kube-system/sa/admin")
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status();
    let why = rsp
        .headers()
        .get(trellis_proxy::http::PROXY_ERROR)
        .map(|v| v.to_str().unwrap().to_string());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, why, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `ping` on a fresh connection: `Some(echo)` or `None` when the
/// connection was closed without an answer.
async fn ping(entry: SocketAddr) -> Option<Vec<u8>> {
    let mut tcp = TcpStream::connect(entry).await.unwrap();
    tcp.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf.to_vec()),
        Ok(Err(_)) => None,
        Err(_) => panic!("neither an answer nor a close within 10 s"),
    }
}

/// The world of test `n`: a server pod `.1` (app HTTP on 8080, TCP echo on
/// 9000) behind Services at `cluster_ip(n, 80)` (HTTP) and
/// `cluster_ip(n, 90)` (opaque TCP), announced as `shop/web`.
struct World {
    n: u8,
    ca: TestCa,
    cp: ControlPlane,
    source: SourceConfig,
    /// The controller's SPIFFE id when the control plane serves mTLS.
    controller: Option<SpiffeId>,
    http: Target,
    tcp: Target,
    hits: Arc<AtomicUsize>,
}

async fn world(n: u8) -> World {
    world_with(n, None).await
}

/// The world of [`world`], with the control plane serving mTLS as
/// `trellis/<sa>` of the mesh's CA when `controller_sa` is given.
async fn world_with(n: u8, controller_sa: Option<&str>) -> World {
    let ca = TestCa::new("cluster.local");
    let cp = ControlPlane::default();
    let http = cluster_ip(n, 80);
    let tcp = cluster_ip(n, 90);
    cp.set(outbound(
        http,
        service("shop", "web", 80).meshed_endpoint(&addr(n, 1, 8080).to_string(), "shop", "web"),
    ));
    let mut opaque = outbound(
        tcp,
        service("shop", "web", 90).meshed_endpoint(&addr(n, 1, 9000).to_string(), "shop", "web"),
    );
    opaque.protocol = Protocol::Opaque;
    cp.set(opaque);
    let hits = who_app(addr(n, 1, 8080)).await;
    tcp_echo(addr(n, 1, 9000)).await;
    let running = match controller_sa {
        None => cp.start(pod(n, 9)).await,
        Some(sa) => {
            cp.start_mtls(pod(n, 9), certified(&ca, "trellis", sa))
                .await
        }
    };
    let source = SourceConfig::Controller(running.addr.to_string());
    std::mem::forget(running);
    World {
        n,
        ca,
        cp,
        source,
        controller: controller_sa.map(|_| id("trellis", "trellis-controller")),
        http,
        tcp,
        hits,
    }
}

impl World {
    /// Pod 1, the Service's endpoint, as `shop/<sa>` of the mesh's CA, with
    /// fixed plaintext inbound listeners to the application ports `inbound`.
    async fn server(&self, sa: &str, inbound: &[u16]) -> Sidecar {
        let identity = certified(&self.ca, "shop", sa);
        let controller = self.controller.clone();
        sidecar(
            pod(self.n, 1),
            &self.source,
            controller,
            &[],
            inbound,
            identity,
        )
        .await
    }

    /// Pod `i`, a client as `shop/<sa>` of the mesh's CA, with fixed
    /// outbound listeners for the HTTP target, then the opaque one.
    async fn client(&self, i: u8, sa: &str) -> Sidecar {
        let identity = certified(&self.ca, "shop", sa);
        let targets = [self.http, self.tcp];
        let controller = self.controller.clone();
        sidecar(
            pod(self.n, i),
            &self.source,
            controller,
            &targets,
            &[],
            identity,
        )
        .await
    }
}

fn inbound(port: u16, mtls: MtlsMode, allowed: &[AuthzSource]) -> InboundPolicy {
    let mut p = InboundPolicy {
        workload: ResourceRef::new("shop", "web-0"),
        port,
        mtls,
        ..InboundPolicy::default()
    };
    if !allowed.is_empty() {
        p.authorization.policies.push(AuthorizationPolicy {
            meta: ResourceRef::new("shop", "allow-client"),
            rules: vec![AuthzRule {
                sources: allowed.to_vec(),
                ports: vec![],
            }],
        });
    }
    p
}

fn handshakes(s: &Sidecar, direction: Direction, outcome: HandshakeOutcome) -> u64 {
    s.identity
        .as_ref()
        .expect("an mTLS sidecar")
        .metrics()
        .handshakes(direction, outcome)
}

#[tokio::test]
async fn mtls_between_sidecars_tells_the_app_the_verified_caller() {
    let n = 60;
    let w = world(n).await;
    let server = w.server("web", &[]).await;
    let client = w.client(2, "client").await;
    let (status, _, body) = get_as(client.outbound_fixed[0]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, "spiffe://cluster.local/ns/shop/sa/client",
        "the forged header was replaced by the verified identity"
    );
    assert_eq!(
        ping(client.outbound_fixed[1]).await.as_deref(),
        Some(&b"ping"[..])
    );

    // One multiplexed and one opaque connection, both mTLS.
    assert_eq!(
        handshakes(&client, Direction::Outbound, HandshakeOutcome::Ok),
        2
    );
    assert_eq!(
        handshakes(&server, Direction::Inbound, HandshakeOutcome::Ok),
        2
    );
    let (status, metrics) = admin(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for want in [
        r#"trellis_tls_handshakes_total{direction="inbound",outcome="ok"} 2"#,
        r#"trellis_inbound_authorization_decisions_total{port="8080",protocol="http",decision="allow",policy=""} 1"#,
        "trellis_identity_certificate_expiry_timestamp_seconds ",
        r#"trellis_requests_total{direction="inbound""#,
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("trellis_identity_certificate_expiry_timestamp_seconds 0\n"),
        "{metrics}"
    );
    assert_eq!(admin(&client, "/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_server_that_is_not_the_announced_identity_is_refused() {
    let n = 61;
    let w = world(n).await;
    // The controller announced shop/web; this pod holds shop/impostor.
    let server = w.server("impostor", &[]).await;
    let client = w.client(2, "client").await;
    let (status, why, _) = get_as(client.outbound_fixed[0]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{why:?}");
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("spiffe://cluster.local/ns/shop/sa/web")),
        "the error names the expected identity: {why:?}"
    );
    assert_eq!(ping(client.outbound_fixed[1]).await, None);
    assert!(
        handshakes(
            &client,
            Direction::Outbound,
            HandshakeOutcome::WrongIdentity
        ) >= 2
    );
    assert_eq!(
        handshakes(&server, Direction::Inbound, HandshakeOutcome::Ok),
        0
    );
    assert_eq!(w.hits.load(Ordering::SeqCst), 0, "nothing reached the app");
}

#[tokio::test]
async fn a_client_of_a_foreign_ca_is_refused() {
    let n = 62;
    let w = world(n).await;
    let foreign = TestCa::new("cluster.local");
    let server = w.server("web", &[]).await;
    // It trusts the mesh's anchor, but its own certificate is not the mesh's.
    let both =
        TrustBundle::from_der(vec![w.ca.anchor().clone(), foreign.anchor().clone()]).unwrap();
    let stranger = Identity::fixed(
        foreign.certificate(&id("shop", "client"), HOUR),
        both,
        TlsMetrics::default(),
    );
    let client = sidecar(pod(n, 2), &w.source, None, &[w.http], &[], stranger).await;
    let (status, _, _) = get_as(client.outbound_fixed[0]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(handshakes(&server, Direction::Inbound, HandshakeOutcome::UnknownCa) >= 1);
    assert_eq!(w.hits.load(Ordering::SeqCst), 0);
}

/// Polls `f` until it holds (a policy update travels through the fake
/// control plane's stream), failing after 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn strict_mode_closes_plaintext_and_keeps_mtls() {
    let n = 63;
    let w = world(n).await;
    w.cp.set_inbound(inbound(8080, MtlsMode::Strict, &[]));
    // The fixed inbound listener stands for a plaintext client redirected
    // to the proxy (an unmeshed pod calling this one).
    let server = w.server("web", &[8080]).await;
    let client = w.client(2, "client").await;
    let plaintext = server.inbound_fixed[0];

    let mut tcp = TcpStream::connect(plaintext).await.unwrap();
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
        .await
        .expect("the connection is closed, not left open");
    assert!(
        buf.is_empty(),
        "nothing is answered on a strict port: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(server.admit.plaintext_refused(8080), 1);
    let (_, metrics) = admin(&server, "/metrics").await;
    assert!(
        metrics.contains(r#"trellis_inbound_plaintext_refused_total{port="8080"} 1"#),
        "{metrics}"
    );
    assert_eq!(w.hits.load(Ordering::SeqCst), 0);

    // mTLS from a meshed client still gets through.
    let (status, _, body) = get_as(client.outbound_fixed[0]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "spiffe://cluster.local/ns/shop/sa/client")
    );

    // Back to permissive: plaintext is served, and carries no identity.
    w.cp.set_inbound(inbound(8080, MtlsMode::Permissive, &[]));
    eventually("plaintext accepted again", || async {
        let mut tcp = TcpStream::connect(plaintext).await.unwrap();
        let _ = tcp
            .write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf);
        text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n-")
    })
    .await;
}

#[tokio::test]
async fn authorization_allows_matching_sources_for_http_and_tcp() {
    let n = 64;
    let w = world(n).await;
    let allowed = [AuthzSource::ServiceAccount(ResourceRef::new(
        "shop", "client",
    ))];
    w.cp.set_inbound(inbound(8080, MtlsMode::Permissive, &allowed));
    w.cp.set_inbound(inbound(9000, MtlsMode::Permissive, &allowed));
    let server = w.server("web", &[8080]).await;
    let friend = w.client(2, "client").await;
    let other = w.client(3, "other").await;

    let (status, _, body) = get_as(friend.outbound_fixed[0]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "spiffe://cluster.local/ns/shop/sa/client")
    );
    let (status, why, _) = get_as(other.outbound_fixed[0]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(why.as_deref(), Some("not authorized on port 8080"));
    // Plaintext has no identity to match.
    let (status, _, _) = get_as(server.inbound_fixed[0]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        w.hits.load(Ordering::SeqCst),
        1,
        "only the allowed request arrived"
    );

    assert_eq!(
        ping(friend.outbound_fixed[1]).await.as_deref(),
        Some(&b"ping"[..])
    );
    assert_eq!(
        ping(other.outbound_fixed[1]).await,
        None,
        "denied TCP is closed"
    );

    let a = &server.admit;
    assert_eq!(
        a.decisions(8080, Carried::Http, true, "shop/allow-client"),
        1
    );
    assert_eq!(a.decisions(8080, Carried::Http, false, ""), 2);
    assert_eq!(
        a.decisions(9000, Carried::Tcp, true, "shop/allow-client"),
        1
    );
    assert_eq!(a.decisions(9000, Carried::Tcp, false, ""), 1);
    let (_, metrics) = admin(&server, "/metrics").await;
    assert!(
        metrics.contains(r#"trellis_inbound_authorization_decisions_total{port="9000",protocol="tcp",decision="deny",policy=""} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn policies_come_over_mtls_from_the_named_controller_only() {
    // The controller serves mTLS as trellis/trellis-controller: the sidecars
    // get their policies and the request goes through.
    let w = world_with(66, Some("trellis-controller")).await;
    let _server = w.server("web", &[]).await;
    let client = w.client(2, "client").await;
    let (status, _, body) = get_as(client.outbound_fixed[0]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "spiffe://cluster.local/ns/shop/sa/client")
    );
    assert_eq!(admin(&client, "/ready").await.0, StatusCode::OK);

    // Whatever answers on the controller's address as another identity of
    // the same mesh is refused: no policy, never ready.
    let w = world_with(67, Some("impostor")).await;
    let client = w.client(2, "client").await;
    eventually("a refused controller handshake", || async {
        handshakes(
            &client,
            Direction::Outbound,
            HandshakeOutcome::WrongIdentity,
        ) >= 1
    })
    .await;
    assert_eq!(
        admin(&client, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        w.cp.requests.lock().unwrap().is_empty(),
        "no policy was asked for"
    );
}
