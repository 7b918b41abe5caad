//! Helpers of the traffic-policy tests: scripted backends that record what
//! they saw and answer as the test says, a client that sends any request,
//! and a client sidecar wired to a fake control plane.

#![allow(dead_code, unreachable_pub)]

use crate::support::{ControlPlane, cluster_ip, outbound, pod, sidecar};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};
use tokio::net::{TcpListener, TcpStream};
use trellis_policy::{OutboundPolicy, Target, build::BackendBuilder};
use trellis_proxy::{Sidecar, config::SourceConfig};

pub type RspBody = BoxBody<Bytes, Infallible>;

/// A request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Handler =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<RspBody>> + Send>> + Send + Sync>;

/// A backend that records every request it answers.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

/// Serves HTTP/1.1 and h2c on `addr`; each request's body is read whole,
/// recorded, then `answer` decides the response.
pub async fn backend<F, Fut>(addr: SocketAddr, answer: F) -> Backend
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RspBody>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(move |s| Box::pin(answer(s)));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let record = record.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body: body.unwrap_or_default(),
                        };
                        record.lock().unwrap().push(seen.clone());
                        Ok::<_, Infallible>(handler(seen).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Backend { addr, seen }
}

/// A response with a status and a text body.
pub fn text(status: u16, body: &str) -> Response<RspBody> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

/// A backend answering `200 <name>` to everything.
pub async fn named(addr: SocketAddr, name: &'static str) -> Backend {
    backend(addr, move |_| async move { text(200, name) }).await
}

/// A gRPC answer: one message and `grpc-status: 0` in trailers.
pub fn grpc_ok(message: &'static [u8]) -> Response<RspBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(message))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
            frames,
        ))))
        .unwrap()
}

/// A trailers-only gRPC error.
pub fn grpc_error(code: u32) -> Response<RspBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", code.to_string())
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

/// A client connection, HTTP/1.1 keep-alive or h2c.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client::H1(sender)
    }

    pub async fn h2(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client::H2(sender)
    }

    /// Sends a request; `None` when the exchange broke.
    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Option<Answer> {
        let rsp = match self {
            Client::H1(s) => {
                s.ready().await.ok()?;
                s.send_request(req).await.ok()?
            }
            Client::H2(s) => {
                s.ready().await.ok()?;
                s.send_request(req).await.ok()?
            }
        };
        let (parts, body) = rsp.into_parts();
        let collected = body.collect().await.ok()?;
        let trailers = collected.trailers().cloned();
        Some(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.try_send(req).await.expect("the exchange broke")
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send(get(path)).await
    }
}

/// A GET of `path` to host `web`.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    request("GET", path, &[], "")
}

/// Any request to host `web`.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "web");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A gRPC call of `/pkg.Svc/method` over h2c (absolute URI as HTTP/2
/// clients send it).
pub fn grpc_call(method: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method("POST")
        .uri(format!("http://web{method}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap()
}

/// The target of test `n`, a control plane serving `policy` for it, and a
/// client sidecar whose fixed outbound listener stands for the application
/// connecting to the Service.
pub struct Harness {
    pub cp: ControlPlane,
    pub target: Target,
    pub client: Sidecar,
    pub entry: SocketAddr,
}

pub async fn harness(n: u8, policy: impl FnOnce(Target) -> OutboundPolicy) -> Harness {
    let cp = ControlPlane::default();
    let target = cluster_ip(n, 80);
    cp.set(policy(target));
    let running = cp.start(pod(n, 3)).await;
    let source = SourceConfig::Controller(running.addr.to_string());
    std::mem::forget(running);
    let client = sidecar(pod(n, 2), source, &[target]).await;
    Harness {
        entry: client.outbound_fixed[0],
        cp,
        target,
        client,
    }
}

/// The Service `shop/web:80` with `backend` as the default backend.
pub fn policy(target: Target, backend: BackendBuilder) -> OutboundPolicy {
    outbound(target, backend)
}

/// The admin `/metrics` text.
pub async fn metrics(sidecar: &Sidecar) -> String {
    crate::support::admin(sidecar, "/metrics").await.1
}

/// The value of the metric line starting with `prefix` (labels included),
/// 0 when absent.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
