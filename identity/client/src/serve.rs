//! gRPC over mesh mTLS: the controller serves its discovery service through
//! [`incoming`] so that only workloads holding a mesh certificate reach
//! it, and proxies dial it through [`Connector`], naming the controller's
//! SPIFFE id, so they know they talk to the controller and not to whatever
//! answers on its address.
//!
//! ```text
//!  TcpListener ──accept──► handshake task per connection (TLS 1.3, client
//!                          certificate verified against the bundle, ALPN h2)
//!                                   │ ok            │ failed: counted, dropped
//!                                   ▼
//!                 mpsc ──► Incoming (a Stream) ──► tonic serve_with_incoming
//! ```

use crate::{Direction, Identity, peer_identity};
use hyper_util::rt::TokioIo;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use trellis_policy::SpiffeId;

/// The ALPN of gRPC over TLS.
pub const ALPN_GRPC: &[u8] = b"h2";

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long dialing a server may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The verified client of a connection, in every request's extensions
/// (`request.extensions().get::<PeerIdentity>()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub SpiffeId);

/// One accepted mTLS connection.
#[derive(Debug)]
pub struct Accepted {
    stream: TlsStream<TcpStream>,
    peer: SpiffeId,
}

impl Accepted {
    pub fn peer(&self) -> &SpiffeId {
        &self.peer
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        PeerIdentity(self.peer.clone())
    }
}

/// The mTLS connections of `listener` under `identity`'s current
/// certificate, each client verified against the current trust bundle, as
/// a stream for `tonic::transport::Server::serve_with_incoming`. Accepting
/// stops when the stream is dropped. Handshakes are counted in the
/// identity's metrics (inbound); a failed one is logged and dropped, never
/// ends the stream.
pub fn incoming(
    listener: TcpListener,
    identity: &Identity,
) -> impl futures::Stream<Item = io::Result<Accepted>> + Send + 'static {
    let acceptor = TlsAcceptor::from(identity.server_config(&[ALPN_GRPC]));
    let metrics = identity.metrics().clone();
    let (tx, rx) = mpsc::channel::<io::Result<Accepted>>(64);
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, from) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, metrics, tx) = (acceptor.clone(), metrics.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "handshake timed out",
                        ))
                    });
                let accepted = metrics
                    .record(Direction::Inbound, handshake)
                    .and_then(|stream| {
                        // The verifier refuses a client without a SPIFFE id.
                        let peer = peer_identity(stream.get_ref().1).ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "client has no SPIFFE id")
                        })?;
                        Ok(Accepted { stream, peer })
                    });
                match accepted {
                    Ok(a) => {
                        let _ = tx.send(Ok(a)).await;
                    }
                    Err(e) => tracing::debug!(%from, error = %e, "refused a connection"),
                }
            });
        }
    });
    Incoming {
        rx,
        _accepting: AbortOnDrop(accepting),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Incoming {
    rx: mpsc::Receiver<io::Result<Accepted>>,
    _accepting: AbortOnDrop,
}

impl futures::Stream for Incoming {
    type Item = io::Result<Accepted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Dials gRPC servers for `tonic::transport::Endpoint::connect_with_connector`:
/// TCP to the URI's `host:port`, then mTLS under `identity` towards a
/// server that must be `server` (ALPN h2).
#[derive(Clone, Debug)]
pub struct Connector {
    identity: Identity,
    server: SpiffeId,
}

impl Connector {
    pub fn new(identity: Identity, server: SpiffeId) -> Self {
        Self { identity, server }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let invalid = || {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no host:port in {uri}"),
                )
            };
            let host = uri.host().ok_or_else(invalid)?.trim_matches(['[', ']']);
            let port = uri.port_u16().ok_or_else(invalid)?;
            let dial = async {
                let tcp = TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                let ip = tcp.peer_addr()?.ip();
                this.identity
                    .connect(tcp, ip, &this.server, ALPN_GRPC)
                    .await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, dial)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {uri} timed out"),
                    )
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}
