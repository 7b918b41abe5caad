//! Upstream HTTP connections: a pool of HTTP/1.1 connections per endpoint,
//! one shared HTTP/2 connection per endpoint or mesh peer, and dedicated
//! connections for requests that upgrade.
//!
//! Every connection is opened through a [`Dial`]: straight to an address, or
//! to a mesh peer through [`crate::mesh::open`] (the one place TLS will wrap).

use crate::{
    body::{Body, ReqBody},
    mesh::{self, Connect, Peer, Preamble},
    transport,
};
use arc_swap::ArcSwapOption;
use http::{Request, Response};
use http_body::Body as _;
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 32;

/// Why an upstream exchange failed. `is_retry_safe` says whether the request
/// provably never reached the application.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("http handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl Error {
    pub fn is_retry_safe(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Handshake { .. })
    }
}

/// How to reach an endpoint.
#[derive(Clone)]
pub enum Dial {
    /// Straight to the address, as the application would have.
    Direct(SocketAddr),
    /// To the peer pod's proxy, which forwards to the application.
    Mesh {
        peer: Peer,
        connector: Arc<dyn Connect>,
    },
}

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dial::Direct(a) => write!(f, "direct {a}"),
            Dial::Mesh { peer, .. } => write!(f, "mesh {} ({})", peer.addr, peer.identity),
        }
    }
}

impl Dial {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Dial::Direct(a) => *a,
            Dial::Mesh { peer, .. } => peer.addr,
        }
    }

    /// Opens a connection; mesh connections start with `preamble`.
    pub async fn open(&self, preamble: Preamble) -> Result<mesh::BoxIo, Error> {
        let addr = self.addr();
        let io = match self {
            Dial::Direct(a) => transport::connect(*a)
                .await
                .map(|s| Box::new(s) as mesh::BoxIo),
            Dial::Mesh { peer, connector } => mesh::open(connector.as_ref(), peer, preamble).await,
        };
        io.map_err(|source| Error::Connect { addr, source })
    }
}

/// Pooled HTTP/1.1 connections to one address.
#[derive(Debug)]
pub struct H1Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<http1::SendRequest<ReqBody>>>,
}

impl H1Pool {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends a request on an idle connection, or a new one. A request that
    /// an idle connection refused before writing it (the server closed it
    /// meanwhile) goes out again on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Body>, Error> {
        loop {
            let Some(mut sender) = self.idle.lock().pop() else {
                break;
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(self.pooled(rsp, sender)),
                Err(e) => req = self.take_back(e)?,
            }
        }
        let io = transport::connect(self.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: self.addr,
                source,
            })?;
        let (mut sender, conn) =
            http1::handshake(TokioIo::new(io))
                .await
                .map_err(|source| Error::Handshake {
                    addr: self.addr,
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream http/1 connection");
            }
        });
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|source| Error::Upstream {
                addr: self.addr,
                source,
            })?;
        Ok(self.pooled(rsp, sender))
    }

    fn take_back(&self, mut e: TrySendError<Request<ReqBody>>) -> Result<Request<ReqBody>, Error> {
        match e.take_message() {
            Some(req) => Ok(req),
            None => Err(Error::Upstream {
                addr: self.addr,
                source: e.into_error(),
            }),
        }
    }

    fn pooled(
        self: &Arc<Self>,
        rsp: Response<Incoming>,
        sender: http1::SendRequest<ReqBody>,
    ) -> Response<Body> {
        rsp.map(|body| {
            Body::Pooled(PooledBody {
                body,
                sender: Some(sender),
                pool: Arc::downgrade(self),
            })
        })
    }

    fn put_back(&self, sender: http1::SendRequest<ReqBody>) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// Idle connections, for `/config`.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A response body whose connection goes back to its pool once the body has
/// been read to the end.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    sender: Option<http1::SendRequest<ReqBody>>,
    pool: Weak<H1Pool>,
}

impl PooledBody {
    fn release(&mut self) {
        if let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) {
            pool.put_back(sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.release();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body nobody polled because it was empty still frees its
        // connection; one dropped half-read does not (the connection closes).
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

/// One HTTP/2 connection shared by every request to an endpoint or peer,
/// re-established when it closes.
pub struct H2Conn {
    dial: Dial,
    current: ArcSwapOption<http2::SendRequest<ReqBody>>,
    connecting: tokio::sync::Mutex<()>,
}

impl fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Conn")
            .field("dial", &self.dial)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl H2Conn {
    pub fn new(dial: Dial) -> Arc<Self> {
        Arc::new(Self {
            dial,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.current.load().as_ref().is_some_and(|s| !s.is_closed())
    }

    pub async fn send(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, Error> {
        let addr = self.dial.addr();
        let mut fresh = false;
        loop {
            let mut sender = self.sender(fresh).await?;
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                Err(mut e) => match e.take_message() {
                    // Refused before it was written: the connection went
                    // away (GOAWAY, reset). Once more on a new one.
                    Some(r) if !fresh => {
                        req = r;
                        fresh = true;
                    }
                    _ => {
                        return Err(Error::Upstream {
                            addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    async fn sender(&self, fresh: bool) -> Result<http2::SendRequest<ReqBody>, Error> {
        if !fresh && let Some(s) = self.current.load().as_ref().filter(|s| s.is_ready()) {
            return Ok(http2::SendRequest::clone(s));
        }
        let _one_at_a_time = self.connecting.lock().await;
        if !fresh && let Some(s) = self.current.load().as_ref().filter(|s| s.is_ready()) {
            return Ok(http2::SendRequest::clone(s));
        }
        let addr = self.dial.addr();
        let io = self.dial.open(Preamble::multiplexed()).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream http/2 connection");
            }
        });
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }
}

/// Sends a request that upgrades its connection (WebSocket, `CONNECT`) on a
/// connection of its own; for a mesh peer, an opaque mesh connection to
/// `port`, which the peer replays to the application as HTTP/1.
pub async fn send_upgrade(
    dial: &Dial,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    let addr = dial.addr();
    let io = dial.open(Preamble::opaque(port)).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| Error::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgraded upstream connection");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|source| Error::Upstream { addr, source })
}
