//! Test support: an in-process fake control plane (a tonic server on
//! loopback serving from watch channels the test controls), small backends
//! (HTTP/1+2 echo with WebSocket and gRPC streaming, TCP echo, a
//! server-speaks-first banner), proxies started in-process, and clients.
//!
//! Each test uses its own loopback addresses (`127.77.<n>.x`), so tests run
//! in parallel and every "pod" can listen on the mesh port 15106.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use trellis_api::contract::port;
use trellis_api::{
    InboundTarget, OutboundTarget,
    proto::{
        discovery::{
            self as pb,
            inbound_policies_server::{InboundPolicies, InboundPoliciesServer},
            outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer},
        },
        policy as policy_pb,
    },
};
use trellis_policy::{
    Backend, InboundPolicy, OutboundPolicy, Protocol, ResourceRef, Target, build::BackendBuilder,
};
use trellis_proxy::{
    Sidecar,
    config::{Config, SourceConfig},
};

/// The address of "pod" `host` of test `n`.
pub fn pod(n: u8, host: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 77, n, host])
}

pub fn addr(n: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(pod(n, host), port)
}

/// A Service ClusterIP of test `n` (never dialled: the key of a policy).
pub fn cluster_ip(n: u8, port: u16) -> Target {
    Target(SocketAddr::from(([198, 19, n, 1], port)))
}

/// An outbound policy for `target` with the Service `backend` (built with
/// `trellis_policy::build::service`) and no routes.
pub fn outbound(target: Target, backend: BackendBuilder) -> OutboundPolicy {
    let backend: Backend = backend.into();
    let (service, port) = match &backend {
        Backend::Service(s) => (s.service.clone(), s.port),
        Backend::Invalid { .. } => (ResourceRef::new("test", "invalid"), target.0.port()),
    };
    OutboundPolicy {
        target,
        service,
        port,
        port_name: None,
        protocol: Protocol::Detect,
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        tcp_routes: Vec::new(),
        tls_routes: Vec::new(),
        backend,
    }
}

type PolicyTx = watch::Sender<Option<Arc<OutboundPolicy>>>;

type ResponseStream<M> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<M, tonic::Status>> + Send + 'static>>;

/// The current value of `rx` and then every new one, as messages.
fn serve<T, M>(rx: watch::Receiver<T>, to_message: fn(&T) -> M) -> ResponseStream<M>
where
    T: Clone + Send + Sync + 'static,
    M: Send + 'static,
{
    Box::pin(tokio_stream::wrappers::WatchStream::new(rx).map(move |v| Ok(to_message(&v))))
}

/// The fake control plane: state plus watch channels.
#[derive(Clone, Default)]
pub struct ControlPlane {
    outbound: Arc<Mutex<HashMap<Target, PolicyTx>>>,
    inbound: Arc<Mutex<HashMap<u16, watch::Sender<InboundPolicy>>>>,
    /// Every outbound watch request received.
    pub requests: Arc<Mutex<Vec<OutboundTarget>>>,
}

impl ControlPlane {
    fn sender(&self, target: Target) -> PolicyTx {
        self.outbound
            .lock()
            .unwrap()
            .entry(target)
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Publishes the policy of `target` (to current and future watchers).
    pub fn set(&self, policy: OutboundPolicy) {
        self.sender(policy.target)
            .send_replace(Some(Arc::new(policy)));
    }

    pub fn set_inbound(&self, policy: InboundPolicy) {
        let port = policy.port;
        self.inbound
            .lock()
            .unwrap()
            .entry(port)
            .or_insert_with(|| watch::channel(policy.clone()).0)
            .send_replace(policy);
    }

    /// Serves on loopback until the returned handle is stopped.
    pub async fn start(&self, ip: std::net::IpAddr) -> RunningControlPlane {
        self.start_at(SocketAddr::new(ip, 0)).await
    }

    /// Serves on its own runtime (in its own thread), so stopping it closes
    /// every connection and stream at once, as a crashed controller would.
    pub async fn start_at(&self, addr: SocketAddr) -> RunningControlPlane {
        self.serve(addr, None).await
    }

    /// Serves over mTLS under `identity`, as the controller does when it
    /// has a mesh identity of its own.
    pub async fn start_mtls(
        &self,
        ip: std::net::IpAddr,
        identity: trellis_identity_client::Identity,
    ) -> RunningControlPlane {
        self.serve(SocketAddr::new(ip, 0), Some(identity)).await
    }

    async fn serve(
        &self,
        addr: SocketAddr,
        identity: Option<trellis_identity_client::Identity>,
    ) -> RunningControlPlane {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = self.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let router = tonic::transport::Server::builder()
                    .add_service(OutboundPoliciesServer::new(svc.clone()))
                    .add_service(InboundPoliciesServer::new(svc));
                let server: std::pin::Pin<Box<dyn Future<Output = _>>> = match identity {
                    None => Box::pin(router.serve_with_incoming(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                    )),
                    Some(id) => Box::pin(router.serve_with_incoming(
                        trellis_identity_client::serve::incoming(listener, &id),
                    )),
                };
                tokio::select! {
                    r = server => r.unwrap(),
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        RunningControlPlane { addr, stop }
    }
}

pub struct RunningControlPlane {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningControlPlane {
    /// An outage: the server and every connection and stream it served are
    /// gone.
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

#[tonic::async_trait]
impl OutboundPolicies for ControlPlane {
    type WatchStream = ResponseStream<pb::OutboundUpdate>;

    async fn watch(
        &self,
        request: tonic::Request<pb::OutboundTarget>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let target = OutboundTarget::try_from(request.into_inner())?;
        self.requests.lock().unwrap().push(target.clone());
        let rx = self.sender(target.target).subscribe();
        Ok(tonic::Response::new(serve(
            rx,
            |p: &Option<Arc<OutboundPolicy>>| pb::OutboundUpdate::from(p.as_deref()),
        )))
    }
}

#[tonic::async_trait]
impl InboundPolicies for ControlPlane {
    type WatchStream = ResponseStream<policy_pb::InboundPolicy>;

    async fn watch(
        &self,
        request: tonic::Request<pb::InboundTarget>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let target = InboundTarget::try_from(request.into_inner())?;
        let rx = self
            .inbound
            .lock()
            .unwrap()
            .get(&target.port)
            .map(|tx| tx.subscribe());
        match rx {
            Some(rx) => Ok(tonic::Response::new(serve(rx, |p: &InboundPolicy| {
                policy_pb::InboundPolicy::from(p)
            }))),
            None => Err(tonic::Status::not_found("no inbound policy for this port")),
        }
    }
}

/// The configuration of a test sidecar for "pod" `ip`: inbound on the mesh
/// port, outbound and admin on free ports, workload `test/client-0`,
/// plaintext, no fixed listeners; tests override fields with `..`.
pub fn sidecar_config(ip: std::net::IpAddr, source: SourceConfig) -> Config {
    Config {
        outbound_addr: SocketAddr::new(ip, 0),
        inbound_addr: SocketAddr::new(ip, port::PROXY_INBOUND),
        admin_addr: SocketAddr::new(ip, 0),
        outbound_fixed: Vec::new(),
        inbound_fixed: Vec::new(),
        source,
        workload: Some(ResourceRef::new("test", "client-0")),
        mesh_port: port::PROXY_INBOUND,
        worker_threads: 1,
        detect_timeout: trellis_proxy::detect::DEFAULT_TIMEOUT,
        idle_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(5),
        identity: None,
        controller_identity: None,
    }
}

/// Starts a sidecar for "pod" `ip` ([`sidecar_config`]) with the fixed
/// outbound listeners `fixed` (targets).
pub async fn sidecar(ip: std::net::IpAddr, source: SourceConfig, fixed: &[Target]) -> Sidecar {
    let config = Config {
        outbound_fixed: fixed
            .iter()
            .map(|t| (SocketAddr::new(ip, 0), t.0))
            .collect(),
        ..sidecar_config(ip, source)
    };
    Sidecar::start(&config).await.unwrap()
}

type EchoBody = BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> EchoBody {
    Full::new(s.into()).boxed()
}

/// An HTTP/1.1 + h2c backend named `name` on `addr`. Plain requests get
/// `"<name> <method> <path> <version> host=<host>"`; WebSocket upgrades
/// echo bytes; gRPC calls echo each message as it arrives and end with
/// trailers `grpc-status: 0` and `x-echo: done`.
pub async fn http_backend(addr: SocketAddr, name: &'static str) -> SocketAddr {
    serve_http(TcpListener::bind(addr).await.unwrap(), name)
}

/// Serves the echo backend on a bound listener (which may live in another
/// network namespace).
pub fn serve_http(listener: TcpListener, name: &'static str) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| echo(req, name));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn echo(
    mut req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<EchoBody>, Infallible> {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?").to_string())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if req.headers().contains_key(header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "upgrade")
            .body(full(""))
            .unwrap());
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(Frame::data(data))).await.is_err()
                {
                    return;
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-echo", "done".parse().unwrap());
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    let text = format!(
        "{name} {} {} {:?} host={host}",
        req.method(),
        req.uri().path(),
        req.version()
    );
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("x-backend", name)
        .body(full(text))
        .unwrap())
}

/// A TCP echo server.
pub async fn tcp_echo(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that speaks first (like SMTP or MySQL): a banner, then echo.
pub async fn banner_server(addr: SocketAddr, banner: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if tcp.write_all(banner).await.is_ok() {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

/// An HTTP/1.1 client connection (keep-alive: send several requests).
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let rsp = self.sender.send_request(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// One GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let (status, _, body) = H1::connect(addr).await.get(host, path).await;
    (status, body)
}

/// An h2c (prior knowledge) client connection.
pub async fn h2(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<BoxBody<Bytes, Infallible>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A body the test feeds frame by frame.
pub type FrameTx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

pub fn channel_body() -> (FrameTx, BoxBody<Bytes, Infallible>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, BodyExt::boxed(body))
}

/// Reads exactly `n` bytes, failing the test after 10 s rather than hanging.
pub async fn read_n(io: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut buf))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    buf
}

/// The admin endpoint's answer.
pub async fn admin(sidecar: &Sidecar, path: &str) -> (StatusCode, String) {
    get(sidecar.admin_addr, "admin", path).await
}

pub fn version_name(v: Version) -> String {
    format!("{v:?}")
}

/// Drains a stream into a vector, for readability in tests.
pub async fn collect<S: futures::Stream + Unpin>(mut s: S) -> Vec<S::Item> {
    let mut out = Vec::new();
    while let Some(x) = s.next().await {
        out.push(x);
    }
    out
}
