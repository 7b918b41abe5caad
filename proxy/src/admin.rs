//! The admin listener: `/metrics` (Prometheus text), `/ready`, `/live`,
//! `/config` (every cached policy and endpoint set, as JSON; for a gateway
//! its configuration and sockets) and `POST /shutdown` (drain, accepted
//! from loopback only).

use crate::{
    body::Body,
    discovery::{Discovery, Ready},
    metrics::Metrics,
};
use http::{Method, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{convert::Infallible, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `/config` shows and what is refreshed before a scrape: the
/// sidecar's [`Discovery`], or a gateway's configuration.
pub trait Snapshot: Send + Sync + std::fmt::Debug {
    /// The configuration in force, as JSON.
    fn snapshot(&self) -> serde_json::Value;
    /// Brings gauges computed from state up to date.
    fn refresh_metrics(&self) {}
}

impl Snapshot for Discovery {
    fn snapshot(&self) -> serde_json::Value {
        Discovery::snapshot(self)
    }

    fn refresh_metrics(&self) {
        Discovery::refresh_metrics(self);
    }
}

#[derive(Debug)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Ready>,
    pub config: Arc<dyn Snapshot>,
    /// Cancelled by `POST /shutdown`: the proxy drains and exits.
    pub shutdown: CancellationToken,
}

impl Admin {
    /// Serves until `stop` is cancelled (the admin port stays up while the
    /// proxy drains, so probes and metrics keep answering).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let (tcp, client) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                () = stop.cancelled() => return,
            };
            let this = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req, client)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                self.config.refresh_metrics();
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.encode(),
                )
            }
            (&Method::GET, "/ready") if self.ready.is_ready() && !self.shutdown.is_cancelled() => {
                text(StatusCode::OK, "text/plain", "ready\n")
            }
            (&Method::GET, "/ready") => {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
            (&Method::GET, "/live") => text(StatusCode::OK, "text/plain", "live\n"),
            (&Method::GET, "/config") => text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.config.snapshot()).unwrap_or_default(),
            ),
            (&Method::POST, "/shutdown") if client.ip().is_loopback() => {
                tracing::info!("shutdown requested through the admin port");
                self.shutdown.cancel();
                text(StatusCode::OK, "text/plain", "draining\n")
            }
            (&Method::POST, "/shutdown") => text(
                StatusCode::FORBIDDEN,
                "text/plain",
                "shutdown is accepted from loopback only\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut rsp = Response::new(Body::text(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    rsp
}
