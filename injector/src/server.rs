//! The HTTPS endpoint: `POST /inject` answers AdmissionReviews, `GET /ready`
//! and `GET /live` answer the kubelet. TLS is rustls; the serving
//! configuration is swapped in place when [`crate::sync`] renews the
//! certificate, without dropping connections.

use crate::config::InjectConfig;
use crate::review;
use axum::{Json, Router, body::Bytes, extract::State, routing::get, routing::post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The path the webhook configuration points at.
pub const INJECT_PATH: &str = "/inject";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes, without TLS; each review uses the configuration current when
/// it arrives.
pub fn router(cfg: watch::Receiver<Arc<InjectConfig>>) -> Router {
    Router::new()
        .route(INJECT_PATH, post(inject))
        .route("/ready", get(|| async { "ok" }))
        .route("/live", get(|| async { "ok" }))
        .with_state(cfg)
}

async fn inject(
    State(cfg): State<watch::Receiver<Arc<InjectConfig>>>,
    body: Bytes,
) -> Json<serde_json::Value> {
    let cfg = cfg.borrow().clone();
    Json(review::respond(&body, &cfg))
}

/// Serves `router` over TLS on `listener` until the task is dropped; each
/// connection uses the TLS configuration current when it was accepted.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    app: Router,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = TowerToHyperService::new(app);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}
