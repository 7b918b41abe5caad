//! HTTP at a gateway port: each request goes to the listener its `Host`
//! names (most specific hostname first) and from there through the same
//! stages as a sidecar's outbound request ([`crate::outbound::OutboundHttp`]:
//! route, filters, split, retries and timeouts, balance, endpoint).
//!
//! ```text
//!  request ──► Host ──► listener of the port
//!    none ──► 404            (no listener serves this host)
//!    another than the SNI's ──► 421 (misdirected: the TLS session was made for another listener)
//!    else ──► the listener's OutboundHttp ──► … ──► backend, in the version it speaks
//! ```

use super::port::{ListenerState, Port, Shared};
use crate::{
    body::Body,
    detect::Detected,
    grpc,
    mesh::Io,
    metrics::{self, Direction, Metrics, Name, RouteLabels},
    outbound::Refusal,
};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header, uri};
use hyper::{body::Incoming, service::service_fn};
use std::{convert::Infallible, sync::Arc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trellis_policy::{Backend, Protocol, find};

/// The requests of one client connection to one port.
#[derive(Debug)]
pub struct HttpFront {
    port: Arc<Port>,
    /// The listener the connection's SNI chose (HTTPS).
    sni_listener: Option<String>,
    metrics: Arc<Metrics>,
    label: Name,
}

impl HttpFront {
    pub fn new(port: Arc<Port>, sni_listener: Option<String>, shared: &Shared) -> Arc<Self> {
        Arc::new(Self {
            port,
            sni_listener,
            metrics: shared.metrics.clone(),
            label: shared.label.clone(),
        })
    }

    /// Serves the connection until it closes or the gateway drains.
    pub async fn serve<I: Io>(
        self: Arc<Self>,
        io: I,
        proto: Detected,
        shutdown: CancellationToken,
    ) {
        let service = service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        crate::http::serve(io, proto, service, shutdown).await;
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let listener = match self.listener(&req) {
            Ok(l) => l,
            Err(refusal) => {
                let status = refusal.status.as_u16();
                let rsp = refusal.into_response(grpc::is_grpc(&req));
                let labels = RouteLabels {
                    direction: Direction::Gateway,
                    service: self.label.clone(),
                    route: metrics::fixed::none(),
                    backend: metrics::fixed::empty(),
                };
                self.metrics.request(&labels, status, start.elapsed());
                return rsp;
            }
        };
        listener.http.clone().handle(req).await
    }

    /// The listener of the port whose hostname matches the request's host
    /// most specifically. With TLS it must be the listener the SNI chose:
    /// its certificate is the one the client verified.
    fn listener(&self, req: &Request<Incoming>) -> Result<Arc<ListenerState>, Refusal> {
        let state = self.port.state.load();
        let host = find::host_of(req);
        let chosen = super::plan::select(
            state.listeners.iter().filter(|l| l.is_http()),
            |l: &Arc<ListenerState>| l.hostname.as_ref(),
            host,
        );
        match (chosen, &self.sni_listener) {
            (None, _) => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no listener on port {} serves host {}",
                    self.port.port,
                    host.unwrap_or("(none)")
                ),
            )),
            (Some(l), Some(sni)) if l.name != *sni => Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "host {} belongs to listener {}, not to listener {sni} of this connection",
                    host.unwrap_or("(none)"),
                    l.name
                ),
            )),
            (Some(l), _) => Ok(l.clone()),
        }
    }
}

/// Puts a request in the HTTP version its backend speaks: HTTP/2 for gRPC
/// and for backend ports whose `appProtocol` says h2c or gRPC, HTTP/1.1
/// otherwise. A gateway's clients choose their version by ALPN or prior
/// knowledge, which says nothing about what the backend understands.
/// Requests that upgrade the connection stay HTTP/1.1.
pub fn backend_version<B>(req: &mut Request<B>, backend: Option<&Backend>, grpc: bool) {
    if crate::http::is_upgrade(req) {
        return;
    }
    let h2 = grpc
        || matches!(backend, Some(Backend::Service(s))
            if matches!(s.protocol, Protocol::Http2 | Protocol::Grpc));
    match (h2, req.version()) {
        (true, Version::HTTP_2) | (false, Version::HTTP_11 | Version::HTTP_10) => {}
        (true, _) => to_h2(req),
        (false, _) => to_h1(req),
    }
}

/// HTTP/1 → HTTP/2: the authority moves from `Host` into the URI.
fn to_h2<B>(req: &mut Request<B>) {
    let host = req.headers_mut().remove(header::HOST);
    if req.uri().authority().is_none() {
        let authority = host
            .as_ref()
            .and_then(|h| uri::Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| uri::Authority::from_static("localhost"));
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    }
    *req.version_mut() = Version::HTTP_2;
}

/// HTTP/2 → HTTP/1.1: the URI's authority becomes `Host`, the target the
/// origin form.
fn to_h1<B>(req: &mut Request<B>) {
    if let Some(authority) = req.uri().authority()
        && !req.headers().contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
    *req.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_policy::build::service;

    fn backend(protocol: Protocol) -> Backend {
        let mut b: Backend = service("shop", "web", 80).into();
        if let Backend::Service(s) = &mut b {
            s.protocol = protocol;
        }
        b
    }

    #[test]
    fn requests_reach_backends_in_the_version_they_speak() {
        let mut h2 = Request::get("https://example.org/a?b=c")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        backend_version(&mut h2, Some(&backend(Protocol::Detect)), false);
        assert_eq!(h2.version(), Version::HTTP_11);
        assert_eq!(h2.uri(), "/a?b=c");
        assert_eq!(h2.headers()[header::HOST], "example.org");

        let mut h1 = Request::get("/x")
            .header(header::HOST, "example.org:8080")
            .body(())
            .unwrap();
        backend_version(&mut h1, Some(&backend(Protocol::Http2)), false);
        assert_eq!(h1.version(), Version::HTTP_2);
        assert_eq!(h1.uri(), "http://example.org:8080/x");
        assert!(h1.headers().get(header::HOST).is_none());

        let mut call = Request::post("https://example.org/pkg.Svc/Get")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        backend_version(&mut call, Some(&backend(Protocol::Detect)), true);
        assert_eq!(call.version(), Version::HTTP_2, "gRPC stays HTTP/2");

        let mut ws = Request::get("/chat")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        backend_version(&mut ws, Some(&backend(Protocol::Http2)), false);
        assert_eq!(ws.version(), Version::HTTP_11, "upgrades stay HTTP/1.1");
    }
}
