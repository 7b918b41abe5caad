//! One socket of the gateway and the listeners it serves.
//!
//! ```text
//!  accept ──► the port's kind (loaded per connection)
//!    ├─ http: h2 preface? ──► HTTP/1.1 or h2c ──► per request: Host ──► listener (see [`super::http`])
//!    ├─ tls:  ClientHello (peeked) ──► SNI ──► listener
//!    │          ├─ Passthrough ──► TLSRoute by SNI ──► backend ──► splice (ClientHello replayed)
//!    │          └─ Terminate ──► handshake (listener's certificates)
//!    │                ├─ HTTPS ──► HTTP/1.1 or h2 by ALPN ──► per request: Host ──► listener or 421
//!    │                └─ TLS ──► TLSRoute by SNI ──► backend ──► splice of the plaintext
//!    └─ tcp:  the listener's TCPRoute ──► backend ──► splice
//! ```
//!
//! A port's listeners sit in an `ArcSwap`: a configuration change swaps
//! them for the next connection and the next request, connections already
//! open keep their socket, and each listener's routes are a
//! [`Watch`] of [`Resolved`] that the outbound HTTP stages read per
//! request, exactly as a sidecar's target policy.

use super::{
    http::HttpFront,
    plan::{PortKind, PortPlan},
    tls,
};
use crate::{
    Drain,
    detect::{self, Detected},
    discovery::Watch,
    mesh::BoxIo,
    metrics::{Direction, Metrics, Name, TcpLabels},
    outbound::{Frontend, OutboundHttp, Resolved, protocol_name},
    transport::{self, Rewind},
    upstream::Upstreams,
};
use arc_swap::ArcSwap;
use bytes::Bytes;
use rustls::ServerConfig;
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use trellis_policy::{
    Backend, HostMatch, Listener, ListenerProtocol, ListenerTls, OutboundPolicy, Protocol,
    ResourceRef, Target, TlsMode, find, split,
};

/// How long a plaintext client may take to show whether it speaks h2c.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every port of one gateway shares.
#[derive(Debug)]
pub struct Shared {
    pub gateway: ResourceRef,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    /// `namespace/name` of the Gateway: the `service` label of answers
    /// given before a listener was chosen.
    pub label: Name,
}

/// One listener, ready for connections and requests.
#[derive(Debug)]
pub struct ListenerState {
    pub name: String,
    pub hostname: Option<HostMatch>,
    pub protocol: ListenerProtocol,
    pub passthrough: bool,
    /// The listener's routes and backends; swapped on every change.
    pub watch: Arc<Watch<Resolved>>,
    pub http: Arc<OutboundHttp>,
    /// Termination (HTTPS, or TLS in Terminate mode), when a certificate of
    /// the listener is usable.
    pub tls: Option<Arc<ServerConfig>>,
    /// What `tls` was made from, to remake it only when that changes.
    tls_source: Option<ListenerTls>,
    /// Why the listener's certificates are not (all) usable.
    pub tls_errors: Vec<String>,
}

impl ListenerState {
    /// Builds a listener's state, reusing `prev` (the same listener before
    /// this change): its watch (so open connections see the new routes),
    /// balancers, endpoints and TLS configuration.
    pub fn build(
        shared: &Shared,
        port: u16,
        l: &Listener,
        prev: Option<&ListenerState>,
    ) -> Arc<Self> {
        let https = matches!(l.protocol, ListenerProtocol::Https);
        let passthrough = matches!(l.protocol, ListenerProtocol::Tls)
            && l.tls
                .as_ref()
                .is_some_and(|t| t.mode == TlsMode::Passthrough);
        let policy = listener_policy(&shared.gateway, port, l);
        let old = prev.map(|p| p.watch.load_full());
        let mut resolved = Resolved::build(
            policy.target,
            Some(Arc::new(policy)),
            old.as_deref(),
            &shared.upstreams,
        );
        resolved.frontend = Frontend::Listener { https };
        resolved.service = Name::from(format!("{}/{}", shared.label, l.name));
        let watch = match prev {
            Some(p) => p.watch.clone(),
            None => Arc::new(Watch::new(Resolved::no_policy(Target(unspecified(port))))),
        };
        watch.publish(Arc::new(resolved));
        let http = match prev {
            Some(p) => p.http.clone(),
            None => Arc::new(OutboundHttp {
                watch: watch.clone(),
                orig: None,
                metrics: shared.metrics.clone(),
            }),
        };
        let (tls, tls_errors) = match (prev, &l.tls) {
            (_, None) => (None, Vec::new()),
            (_, Some(t)) if passthrough || t.mode == TlsMode::Passthrough => (None, Vec::new()),
            (Some(p), Some(t)) if p.tls_source.as_ref() == Some(t) => {
                (p.tls.clone(), p.tls_errors.clone())
            }
            (_, Some(t)) => terminate(l, t, https),
        };
        Arc::new(Self {
            name: l.name.clone(),
            hostname: l.hostname.clone(),
            protocol: l.protocol,
            passthrough,
            watch,
            http,
            tls,
            tls_source: l.tls.clone(),
            tls_errors,
        })
    }

    /// Whether requests (rather than connections) are routed here.
    pub fn is_http(&self) -> bool {
        matches!(
            self.protocol,
            ListenerProtocol::Http | ListenerProtocol::Https
        )
    }
}

/// The termination configuration of a listener, and its certificate errors.
fn terminate(
    l: &Listener,
    t: &ListenerTls,
    https: bool,
) -> (Option<Arc<ServerConfig>>, Vec<String>) {
    let (certs, errors) = tls::ListenerCerts::parse_lenient(&t.certificates);
    let mut errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for e in &errors {
        tracing::warn!(listener = %l.name, "unusable certificate: {e}");
    }
    if certs.is_empty() {
        errors.push("no usable certificate".into());
        tracing::warn!(listener = %l.name, "no usable certificate: TLS handshakes will fail");
        return (None, errors);
    }
    let alpn: &[&[u8]] = if https { &[b"h2", b"http/1.1"] } else { &[] };
    match tls::server_config(certs, alpn) {
        Ok(c) => (Some(c), errors),
        Err(e) => {
            errors.push(e);
            (None, errors)
        }
    }
}

fn unspecified(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// A listener as the outbound stages read a target: its routes, no Service
/// of its own (no route means 404), the listener port for redirects.
fn listener_policy(gateway: &ResourceRef, port: u16, l: &Listener) -> OutboundPolicy {
    OutboundPolicy {
        target: Target(unspecified(port)),
        service: gateway.clone(),
        port,
        port_name: Some(l.name.clone()),
        protocol: Protocol::Detect,
        http_routes: l.http_routes.clone(),
        grpc_routes: l.grpc_routes.clone(),
        tcp_routes: l.tcp_routes.clone(),
        tls_routes: l.tls_routes.clone(),
        backend: Backend::Invalid {
            name: format!("listener {}", l.name),
            message: "a Gateway listener has no backend of its own".into(),
        },
    }
}

/// The listeners of a port.
#[derive(Debug)]
pub struct PortState {
    pub kind: PortKind,
    pub listeners: Vec<Arc<ListenerState>>,
    pub conflicts: Vec<String>,
}

impl PortState {
    /// The state for `plan`, reusing the listeners of `prev` by name.
    pub fn build(
        shared: &Shared,
        plan: &PortPlan,
        prev: &HashMap<String, Arc<ListenerState>>,
    ) -> Self {
        for c in &plan.conflicts {
            tracing::warn!(port = plan.port, "listener left out: {c}");
        }
        Self {
            kind: plan.kind,
            listeners: plan
                .listeners
                .iter()
                .map(|l| {
                    ListenerState::build(shared, plan.port, l, prev.get(&l.name).map(|p| &**p))
                })
                .collect(),
            conflicts: plan.conflicts.clone(),
        }
    }
}

/// A bound socket and what it serves.
#[derive(Debug)]
pub struct Port {
    pub port: u16,
    pub addr: SocketAddr,
    pub state: ArcSwap<PortState>,
    /// Stops accepting (the port left the configuration); connections
    /// already accepted go on. A child of the gateway's drain token, so a
    /// drain stops it too.
    pub stop: CancellationToken,
}

impl Port {
    /// Accepts until the port is removed or the gateway drains.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shared: Arc<Shared>, drain: Drain) {
        while let Some(tcp) = transport::accept(&listener, &self.stop).await {
            let (port, shared, token) = (self.clone(), shared.clone(), drain.token.clone());
            drain
                .tracker
                .spawn(async move { port.connection(tcp, &shared, token).await });
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        shared: &Shared,
        shutdown: CancellationToken,
    ) {
        let state = self.state.load_full();
        match state.kind {
            PortKind::Http => self.plain_http(tcp, shared, shutdown).await,
            PortKind::Tls => self.tls(tcp, &state, shared, shutdown).await,
            PortKind::Tcp => {
                let Some(l) = state.listeners.first() else {
                    return;
                };
                shared.metrics.detected(Direction::Gateway, "opaque");
                forward(shared, l, None, Box::new(tcp), Bytes::new()).await;
            }
        }
    }

    async fn plain_http(
        self: Arc<Self>,
        mut tcp: TcpStream,
        shared: &Shared,
        shutdown: CancellationToken,
    ) {
        let (proto, prefix) = match detect::detect(&mut tcp, PREFACE_TIMEOUT).await {
            Ok((Detected::Http2, p)) => (Detected::Http2, p),
            // Anything else is for hyper to read (and refuse with 400).
            Ok((_, p)) => (Detected::Http1, p),
            Err(e) => {
                tracing::debug!(error = %e, "client closed before its first request");
                return;
            }
        };
        shared
            .metrics
            .detected(Direction::Gateway, protocol_name(proto));
        let front = HttpFront::new(self, None, shared);
        front.serve(Rewind::new(prefix, tcp), proto, shutdown).await;
    }

    async fn tls(
        self: Arc<Self>,
        mut tcp: TcpStream,
        state: &PortState,
        shared: &Shared,
        shutdown: CancellationToken,
    ) {
        let hello = match tls::peek_client_hello(&mut tcp).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(port = self.port, error = %e, "no TLS connection");
                return;
            }
        };
        let Some(l) = super::plan::select(
            state.listeners.iter(),
            |l: &Arc<ListenerState>| l.hostname.as_ref(),
            hello.sni.as_deref(),
        ) else {
            tracing::debug!(port = self.port, sni = ?hello.sni, "no listener for this SNI");
            return;
        };
        shared.metrics.detected(Direction::Gateway, "tls");
        if l.passthrough {
            return forward(
                shared,
                l,
                Some(hello.sni.as_deref()),
                Box::new(tcp),
                hello.bytes,
            )
            .await;
        }
        let Some(config) = &l.tls else {
            tracing::debug!(listener = %l.name, "no usable certificate; closing");
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        let io = Rewind::new(hello.bytes, tcp);
        let stream = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(listener = %l.name, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %l.name, "TLS handshake timed out");
                return;
            }
        };
        if l.protocol == ListenerProtocol::Tls {
            return forward(
                shared,
                l,
                Some(hello.sni.as_deref()),
                Box::new(stream),
                Bytes::new(),
            )
            .await;
        }
        let proto = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            Detected::Http2
        } else {
            Detected::Http1
        };
        let front = HttpFront::new(self.clone(), Some(l.name.clone()), shared);
        front.serve(stream, proto, shutdown).await;
    }
}

/// Forwards one connection to the backend of its listener's route: the
/// TLSRoute for the SNI (`sni` is `Some` for TLS listeners), else the
/// TCPRoute; `prefix` is what was already read from the client.
async fn forward(
    shared: &Shared,
    l: &ListenerState,
    sni: Option<Option<&str>>,
    mut client: BoxIo,
    prefix: Bytes,
) {
    let resolved = l.watch.load_full();
    let Some(policy) = &resolved.policy else {
        return;
    };
    let rule = match sni {
        Some(sni) => find::tls(&policy.tls_routes, sni).and_then(|r| r.rules.first()),
        None => find::tcp(&policy.tcp_routes).and_then(|r| r.rules.first()),
    };
    let backend = rule
        .and_then(|rule| split::weighted_backend(&rule.backends, fastrand::u64(..)))
        .and_then(|b| resolved.backend(&b.backend));
    let Some(state) = backend else {
        tracing::debug!(listener = %l.name, "no route or no valid backend; closing");
        return;
    };
    let Some(endpoint) = state.balancer.pick() else {
        tracing::debug!(backend = %state.name, "no ready endpoints; closing");
        return;
    };
    let guard = shared.metrics.tcp_open(TcpLabels {
        direction: Direction::Gateway,
        service: resolved.service.clone(),
    });
    let in_flight = endpoint.load.start();
    let server = endpoint.open_opaque().await;
    in_flight.finish();
    match server {
        Ok(mut server) => match transport::splice(&mut client, &prefix, &mut server).await {
            Ok(m) => guard.bytes(m.sent, m.received),
            Err(e) => tracing::debug!(error = %e, "forwarded connection"),
        },
        Err(e) => {
            endpoint.accrual.failure();
            tracing::debug!(endpoint = %endpoint.addr, error = %e, "backend connect failed");
        }
    }
}
