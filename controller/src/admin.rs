//! The admin server (`--admin-addr`, port 9990 by default):
//!
//! - `GET /status`: JSON array, one entry per object this controller owns:
//!   routes as `{kind, namespace, name, parents: [{parentRef,
//!   controllerName, conditions: [...]}]}` exactly as `status.parents` would
//!   read in the API; XMesh, AuthorizationPolicy, GatewayClass and Gateway
//!   as `{kind, namespace, name, conditions: [...]}` (Gateways add
//!   `extra.listeners`);
//! - `GET /policy?ip=IP&port=PORT&namespace=NS`: the outbound policy a
//!   client in NS receives for IP:PORT, as JSON (`{"noPolicy": true}` when
//!   IP:PORT is not a Service port);
//! - `GET /inbound?namespace=NS&pod=POD&port=PORT` and
//!   `GET /gateway?namespace=NS&name=NAME`: the same for inbound policy and
//!   Gateways;
//! - `GET /metrics` (Prometheus text), `GET /ready` (200 once the source
//!   listed everything once), `GET /live`.

use crate::index::SharedIndex;
use crate::metrics::Metrics;
use crate::resolve;
use crate::status::{self, Transitions};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;
use trellis_policy::ResourceRef;

#[derive(Clone, Debug)]
pub struct Admin {
    index: SharedIndex,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    transitions: Arc<Mutex<Transitions>>,
}

impl Admin {
    pub fn new(index: SharedIndex, metrics: Arc<Metrics>, ready: watch::Receiver<bool>) -> Self {
        Self {
            index,
            metrics,
            ready,
            transitions: Arc::default(),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/status", get(status_handler))
            .route("/policy", get(policy))
            .route("/inbound", get(inbound))
            .route("/gateway", get(gateway))
            .route("/metrics", get(metrics))
            .route("/ready", get(ready))
            .route("/live", get(|| async { "live\n" }))
            .with_state(self)
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

async fn status_handler(State(a): State<Admin>) -> Response {
    let mut statuses = status::all(a.index.lock().store());
    a.transitions
        .lock()
        .stamp(&mut statuses, &status::now_rfc3339());
    Json(statuses).into_response()
}

#[derive(Deserialize)]
struct PolicyQuery {
    ip: String,
    port: String,
    namespace: Option<String>,
}

async fn policy(State(a): State<Admin>, Query(q): Query<PolicyQuery>) -> Response {
    let Ok(ip) = q.ip.parse::<IpAddr>() else {
        return bad_request(format!("invalid ip {:?}", q.ip));
    };
    let Ok(port) = q.port.parse::<u16>() else {
        return bad_request(format!("invalid port {:?}", q.port));
    };
    let ns = q.namespace.unwrap_or_default();
    let index = a.index.lock();
    match resolve::outbound(index.store(), SocketAddr::new(ip, port), &ns) {
        Some(p) => Json(p).into_response(),
        None => Json(serde_json::json!({ "noPolicy": true })).into_response(),
    }
}

#[derive(Deserialize)]
struct InboundQuery {
    namespace: String,
    pod: String,
    port: String,
}

async fn inbound(State(a): State<Admin>, Query(q): Query<InboundQuery>) -> Response {
    let Ok(port) = q.port.parse::<u16>() else {
        return bad_request(format!("invalid port {:?}", q.port));
    };
    let index = a.index.lock();
    let workload = ResourceRef::new(q.namespace, q.pod);
    Json(resolve::inbound(index.store(), &workload, port)).into_response()
}

#[derive(Deserialize)]
struct GatewayQuery {
    namespace: String,
    name: String,
}

async fn gateway(State(a): State<Admin>, Query(q): Query<GatewayQuery>) -> Response {
    let index = a.index.lock();
    match resolve::gateway(index.store(), &ResourceRef::new(q.namespace, q.name)) {
        Some(g) => Json(g).into_response(),
        None => (StatusCode::NOT_FOUND, "no such Trellis gateway\n").into_response(),
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    a.metrics.observe(&a.index.lock());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(a): State<Admin>) -> Response {
    if *a.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
