//! The inbound side: connections to the workload, redirected to the proxy,
//! and mesh connections from peer proxies.
//!
//! ```text
//!  accept ──► original destination
//!     ├─ the inbound port itself: a peer proxy ──► Accept (mTLS: client id, ALPN) ──► preamble
//!     │      ├─ multiplexed: HTTP/2; per request the port and protocol from
//!     │      │  the mesh headers, restored ──► admit ──► app
//!     │      └─ opaque: the preamble's port ──┐
//!     └─ another port: a plain client ────────┴─► strict port and plaintext? closed
//!            ──► protocol (inbound policy hint, else detect)
//!            ──► HTTP: per request admit (denied: 403) ──► app at pod IP:port
//!            └─► TCP: admit (denied: closed) ──► app at pod IP:port
//! ```
//!
//! [`admit`] judges the port's mTLS mode and authorization against the
//! verified client identity. Requests reach the application with
//! `x-trellis-client-id` set to that identity (any value the client sent is
//! removed). The application is always reached at the pod's own IP (the
//! address the client dialled), never 127.0.0.1, so a port bound to
//! localhost stays private. The proxy's uid is exempt from capture, so this
//! never loops.

pub mod admit;

pub use self::admit::AdmitMetrics;

use self::admit::{Carried, Refusal, admit};
use crate::{
    Drain,
    body::Body,
    detect::{self, Detected},
    discovery::{Discovery, InboundWatch},
    http::{error_response, forward_upgrade, is_upgrade, upstream_error},
    mesh::{self, Accept, Kind, Preamble},
    metrics::{self, Direction, Metrics, Name, RouteLabels, RouteMetrics, TcpLabels},
    outbound::protocol_name,
    transport,
    upstream::{self, Upstream, Upstreams},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::{body::Incoming, service::service_fn};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::Duration,
};
use tokio::{net::TcpListener, time::Instant};
use tokio_util::sync::CancellationToken;
use trellis_api::contract::header::CLIENT_ID;
use trellis_policy::{InboundPolicy, Protocol, SpiffeId};

/// [`CLIENT_ID`] parsed once for the per-request header map operations.
static CLIENT_ID_NAME: http::HeaderName = http::HeaderName::from_static(CLIENT_ID);

/// How long a first connection to a port waits for its inbound policy
/// before detecting the protocol itself.
const HINT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Inbound {
    pub discovery: Arc<Discovery>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub admit: AdmitMetrics,
    pub acceptor: Arc<dyn Accept>,
    pub detect_timeout: Duration,
}

impl Inbound {
    /// Accepts until drained. `fixed` replaces the original destination (an
    /// application address, for running without iptables).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        fixed: Option<SocketAddr>,
        drain: Drain,
    ) {
        let local = listener.local_addr().ok();
        while let Some(tcp) = transport::accept(&listener, &drain.token).await {
            let orig = match transport::orig_dst_or(&tcp, fixed) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "no original destination");
                    continue;
                }
            };
            let from_peer = fixed.is_none() && local.map(|l| l.port()) == Some(orig.0.port());
            let this = self.clone();
            let token = drain.token.clone();
            drain.tracker.spawn(async move {
                if from_peer {
                    this.mesh(tcp, orig.0.ip(), token).await;
                } else {
                    this.app_connection(Box::new(tcp), orig.0, None, token)
                        .await;
                }
            });
        }
    }

    /// A connection from a peer proxy.
    async fn mesh(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        pod_ip: IpAddr,
        token: CancellationToken,
    ) {
        let accepted = match self.acceptor.accept(tcp).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "mesh handshake failed");
                return;
            }
        };
        let mut io = accepted.io;
        let preamble = match Preamble::read(&mut io).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "refused a connection to the inbound port");
                return;
            }
        };
        if accepted.kind.is_some_and(|k| k != preamble.kind) {
            tracing::debug!(client = ?accepted.client_id, ?preamble, "preamble contradicts ALPN");
            return;
        }
        match preamble.kind {
            Kind::Opaque => {
                let app = SocketAddr::new(pod_ip, preamble.port);
                self.app_connection(io, app, accepted.client_id, token)
                    .await;
            }
            Kind::Multiplexed => {
                self.metrics.detected(Direction::Inbound, "mesh");
                let svc = Arc::new(InboundHttp {
                    apps: Apps::new(pod_ip, self.upstreams.clone(), self.discovery.clone()),
                    client_header: client_header(accepted.client_id.as_ref()),
                    client_id: accepted.client_id,
                    metrics: self.metrics.clone(),
                    admit: self.admit.clone(),
                    mesh: true,
                    connection: token.child_token(),
                });
                let service = service_fn(move |req| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(svc.handle(req).await) }
                });
                crate::http::serve(io, Detected::Http2, service, token).await;
            }
        }
    }

    /// A connection for one application port: plain from a client, or an
    /// opaque mesh stream.
    async fn app_connection(
        self: Arc<Self>,
        mut io: mesh::BoxIo,
        app: SocketAddr,
        client_id: Option<SpiffeId>,
        token: CancellationToken,
    ) {
        let port = app.port();
        let watch = self.discovery.inbound(port);
        watch.settled(HINT_TIMEOUT).await;
        let policy = watch.load_full();
        let policy: Option<&InboundPolicy> = policy.as_ref().as_ref();
        // A strict port closes plaintext before reading a byte.
        if client_id.is_none() {
            let outcome = admit(policy, None, port);
            if outcome == Err(Refusal::Plaintext) {
                self.admit.record(policy, port, Carried::Tcp, &outcome);
                tracing::debug!(port, "closed a plaintext connection to a strict port");
                return;
            }
        }
        let hint = policy.map(|p| p.protocol);
        let (proto, prefix) = match hint {
            Some(Protocol::Http1) => (Detected::Http1, Bytes::new()),
            Some(Protocol::Http2 | Protocol::Grpc) => (Detected::Http2, Bytes::new()),
            Some(Protocol::Opaque | Protocol::Tls) => (Detected::Opaque, Bytes::new()),
            Some(Protocol::Detect) | None => {
                match detect::detect(&mut io, self.detect_timeout).await {
                    Ok(d) => d,
                    Err(_) => return,
                }
            }
        };
        self.metrics
            .detected(Direction::Inbound, protocol_name(proto));
        match proto {
            Detected::Http1 | Detected::Http2 => {
                let connection = token.child_token();
                let svc = Arc::new(InboundHttp {
                    apps: Apps::new(app.ip(), self.upstreams.clone(), self.discovery.clone()),
                    client_header: client_header(client_id.as_ref()),
                    client_id,
                    metrics: self.metrics.clone(),
                    admit: self.admit.clone(),
                    mesh: false,
                    connection: connection.clone(),
                });
                let service = service_fn(move |req| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(svc.handle_port(req, port).await) }
                });
                crate::http::serve(
                    transport::Rewind::new(prefix, io),
                    proto,
                    service,
                    connection,
                )
                .await;
            }
            Detected::Opaque => {
                // The policy of the moment, which may have changed during detection.
                let policy = watch.load_full();
                let policy = policy.as_ref().as_ref();
                let outcome = admit(policy, client_id.as_ref(), port);
                self.admit.record(policy, port, Carried::Tcp, &outcome);
                if let Err(refusal) = outcome {
                    tracing::debug!(client = ?client_id, reason = refusal.reason(port), "closed a TCP connection");
                    return;
                }
                let guard = self.metrics.tcp_open(TcpLabels {
                    direction: Direction::Inbound,
                    service: Name::from(app.port().to_string()),
                });
                match transport::connect(app).await {
                    Ok(mut server) => {
                        match transport::splice(&mut io, &prefix, &mut server).await {
                            Ok(m) => guard.bytes(m.sent, m.received),
                            Err(e) => tracing::debug!(error = %e, "inbound opaque connection"),
                        }
                    }
                    Err(e) => tracing::debug!(%app, error = %e, "application refused"),
                }
            }
        }
    }
}

/// One application port of this pod: its connections, metric series and
/// inbound policy.
#[derive(Debug)]
struct AppPort {
    port: u16,
    upstream: Arc<Upstream>,
    series: RouteMetrics,
    /// Requests allowed with no AuthorizationPolicy to name.
    allowed: OnceLock<Counter>,
    policy: Arc<InboundWatch>,
}

/// The application's ports on this pod, as one connection meets them.
#[derive(Debug)]
struct Apps {
    ip: IpAddr,
    upstreams: Arc<Upstreams>,
    discovery: Arc<Discovery>,
    ports: Mutex<Vec<Arc<AppPort>>>,
}

impl Apps {
    fn new(ip: IpAddr, upstreams: Arc<Upstreams>, discovery: Arc<Discovery>) -> Self {
        Self {
            ip,
            upstreams,
            discovery,
            ports: Mutex::new(Vec::new()),
        }
    }

    fn get(&self, port: u16, metrics: &Arc<Metrics>) -> Arc<AppPort> {
        let mut ports = self.ports.lock();
        if let Some(a) = ports.iter().find(|a| a.port == port) {
            return a.clone();
        }
        let name = Name::from(port.to_string());
        let labels = RouteLabels {
            direction: Direction::Inbound,
            service: name.clone(),
            route: metrics::fixed::empty(),
            backend: name,
        };
        let a = Arc::new(AppPort {
            port,
            upstream: self.upstreams.direct(SocketAddr::new(self.ip, port)),
            series: RouteMetrics::new(metrics, labels),
            allowed: OnceLock::new(),
            policy: self.discovery.inbound(port),
        });
        ports.push(a.clone());
        a
    }
}

/// Serves requests for the application.
#[derive(Debug)]
struct InboundHttp {
    apps: Apps,
    client_id: Option<SpiffeId>,
    /// `client_id` as the header the application gets, rendered once.
    client_header: Option<http::HeaderValue>,
    metrics: Arc<Metrics>,
    admit: AdmitMetrics,
    mesh: bool,
    /// Closes this client connection gracefully (a plaintext client on a
    /// port that turned strict).
    connection: CancellationToken,
}

impl InboundHttp {
    /// A request off a multiplexed mesh connection: its port and protocol
    /// come from the mesh headers.
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        if !self.mesh {
            return error_response(StatusCode::BAD_REQUEST, "not a mesh connection");
        }
        match upstream::from_mesh(&mut req) {
            Some(port) => self.handle_port(req, port).await,
            None => error_response(
                StatusCode::BAD_REQUEST,
                "mesh request without its destination headers",
            ),
        }
    }

    async fn handle_port(&self, mut req: Request<Incoming>, port: u16) -> Response<Body> {
        let start = Instant::now();
        let app_port = self.apps.get(port, &self.metrics);
        let AppPort {
            upstream: app,
            series,
            allowed,
            policy,
            ..
        } = &*app_port;
        policy.settled(HINT_TIMEOUT).await;
        let guard = policy.load();
        let current = Option::as_ref(&**guard);
        let outcome = admit(current, self.client_id.as_ref(), port);
        self.admit
            .record_cached(current, port, Carried::Http, &outcome, allowed);
        if let Err(refusal) = outcome {
            if refusal == Refusal::Plaintext && !self.mesh {
                self.connection.cancel();
            }
            let rsp = error_response(StatusCode::FORBIDDEN, &refusal.reason(port));
            series.request(rsp.status().as_u16(), start.elapsed());
            return rsp;
        }
        // Only the proxy may say who the client is.
        req.headers_mut().remove(&CLIENT_ID_NAME);
        if let Some(v) = &self.client_header {
            req.headers_mut().insert(&CLIENT_ID_NAME, v.clone());
        }
        let result = if is_upgrade(&req) {
            forward_upgrade(req, |req| app.send_upgrade(req)).await
        } else {
            app.send(req).await
        };
        let rsp = result.unwrap_or_else(|e| upstream_error(&e));
        series.request(rsp.status().as_u16(), start.elapsed());
        rsp
    }
}

/// The `x-trellis-client-id` value for a verified client.
fn client_header(id: Option<&SpiffeId>) -> Option<http::HeaderValue> {
    id.and_then(|id| http::HeaderValue::from_str(id.as_str()).ok())
}
