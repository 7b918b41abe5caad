//! The outbound side: connections the application opened, redirected to the
//! proxy.
//!
//! ```text
//!  accept ──► original destination ──► discover (first answer, or fall back)
//!         ──► protocol (policy hint, else detect) ──┬─► HTTP: per request, see [`http`]
//!                                                  └─► opaque: backend by weight,
//!                                                      endpoint by P2C, splice
//! ```

mod exchange;
mod filters;
mod http;
mod resolved;

pub use self::{
    http::{OutboundHttp, Refusal},
    resolved::{BackendState, Frontend, Resolved},
};

use crate::{
    Drain,
    detect::{self, Detected},
    discovery::{Discovery, FIRST_ANSWER_TIMEOUT, State},
    metrics::{self, Direction, Metrics, TcpLabels},
    transport::{self, OrigDst},
    upstream::Upstreams,
};
use bytes::Bytes;
use hyper::service::service_fn;
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use trellis_policy::{Backend, Protocol, Target, find, split};

/// The outbound proxy.
#[derive(Debug)]
pub struct Outbound {
    pub discovery: Arc<Discovery>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub detect_timeout: Duration,
}

impl Outbound {
    /// Accepts connections until drained. `fixed` replaces the original
    /// destination (a listener for running the proxy without iptables).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        fixed: Option<SocketAddr>,
        drain: Drain,
    ) {
        while let Some(tcp) = transport::accept(&listener, &drain.token).await {
            let orig = match transport::orig_dst_or(&tcp, fixed) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "no original destination");
                    continue;
                }
            };
            if fixed.is_none() && tcp.local_addr().ok().map(transport::unmap) == Some(orig.0) {
                // Not redirected: forwarding would connect back to ourselves.
                tracing::debug!("refused a connection made straight to the outbound port");
                continue;
            }
            let this = self.clone();
            let token = drain.token.clone();
            drain
                .tracker
                .spawn(async move { this.connection(tcp, orig, token).await });
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        orig: OrigDst,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let target = Target(orig.0);
        let watch = self.discovery.outbound(target);
        if watch.settled(FIRST_ANSWER_TIMEOUT).await != State::Known {
            self.metrics.unavailable_forwarded();
            tracing::debug!(target = %orig.0, "policy unavailable; forwarding to the original destination");
            return self.forward_orig(tcp, Bytes::new(), orig).await;
        }
        let resolved = watch.load_full();
        let Some(policy) = resolved.policy.clone() else {
            return self.forward_orig(tcp, Bytes::new(), orig).await;
        };
        let (proto, prefix) = match policy.protocol {
            Protocol::Http1 => (Detected::Http1, Bytes::new()),
            Protocol::Http2 | Protocol::Grpc => (Detected::Http2, Bytes::new()),
            Protocol::Opaque | Protocol::Tls => (Detected::Opaque, Bytes::new()),
            Protocol::Detect => match detect::detect(&mut tcp, self.detect_timeout).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "client closed during detection");
                    return;
                }
            },
        };
        self.metrics
            .detected(Direction::Outbound, protocol_name(proto));
        match proto {
            Detected::Http1 | Detected::Http2 => {
                let svc = Arc::new(OutboundHttp {
                    watch,
                    orig: Some(self.upstreams.direct(orig.0)),
                    metrics: self.metrics.clone(),
                });
                let io = transport::Rewind::new(prefix, tcp);
                let service = service_fn(move |req| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(svc.handle(req).await) }
                });
                crate::http::serve(io, proto, service, shutdown).await;
            }
            Detected::Opaque => self.opaque(tcp, prefix, &resolved).await,
        }
    }

    /// Opaque TCP to a Service: with TLSRoutes, the route for the
    /// ClientHello's SNI (read, not answered, and replayed: the TLS stays
    /// end to end); else the TCP route; its backend by weight (or the
    /// Service itself without routes), an endpoint by P2C, then a splice.
    async fn opaque(&self, tcp: TcpStream, prefix: Bytes, resolved: &Resolved) {
        let Some(policy) = &resolved.policy else {
            return;
        };
        let (mut tcp, prefix, rule) = if policy.tls_routes.is_empty() {
            let rule = find::tcp(&policy.tcp_routes).and_then(|r| r.rules.first());
            (tcp, prefix, rule)
        } else {
            let mut io = transport::Rewind::new(prefix, tcp);
            let hello = match crate::gateway::tls::peek_client_hello(&mut io).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(target = %resolved.target.0, error = %e, "TLSRoutes, but no ClientHello; closing");
                    return;
                }
            };
            let Some(route) = find::tls(&policy.tls_routes, hello.sni.as_deref()) else {
                tracing::debug!(target = %resolved.target.0, sni = ?hello.sni, "no TLSRoute for this SNI; closing");
                return;
            };
            let (_, tcp) = io.into_parts();
            (tcp, hello.bytes, route.rules.first())
        };
        let backend = match rule {
            Some(rule) => {
                split::weighted_backend(&rule.backends, fastrand::u64(..)).map(|b| &b.backend)
            }
            None if policy.tls_routes.is_empty() && policy.tcp_routes.is_empty() => {
                Some(&policy.backend)
            }
            None => None,
        };
        let Some(state) = backend.and_then(|b: &Backend| resolved.backend(b)) else {
            tracing::debug!(target = %resolved.target.0, "no valid backend; closing");
            return;
        };
        let Some(endpoint) = state.balancer.pick() else {
            tracing::debug!(backend = %state.name, "no ready endpoints; closing");
            return;
        };
        let guard = self.metrics.tcp_open(TcpLabels {
            direction: Direction::Outbound,
            service: resolved.service.clone(),
        });
        let in_flight = endpoint.load.start();
        let server = endpoint.open_opaque().await;
        in_flight.finish();
        match server {
            Ok(mut server) => match transport::splice(&mut tcp, &prefix, &mut server).await {
                Ok(m) => guard.bytes(m.sent, m.received),
                Err(e) => tracing::debug!(error = %e, "opaque connection"),
            },
            Err(e) => tracing::debug!(error = %e, "opaque connect failed"),
        }
    }

    /// Forwards a connection untouched to where the application sent it.
    async fn forward_orig(&self, tcp: TcpStream, prefix: Bytes, orig: OrigDst) {
        let guard = self.metrics.tcp_open(TcpLabels {
            direction: Direction::Outbound,
            service: metrics::fixed::empty(),
        });
        match transport::connect(orig.0).await {
            Ok(server) => match transport::splice_tcp(&tcp, &prefix, &server).await {
                Ok(m) => guard.bytes(m.sent, m.received),
                Err(e) => tracing::debug!(error = %e, "forwarded connection"),
            },
            Err(e) => tracing::debug!(target = %orig.0, error = %e, "original destination refused"),
        }
    }
}

pub fn protocol_name(d: Detected) -> &'static str {
    match d {
        Detected::Http1 => "http1",
        Detected::Http2 => "http2",
        Detected::Opaque => "opaque",
    }
}
