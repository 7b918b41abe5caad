//! Binding the ports and serving each connection: TLS first when the port
//! is a `--tls` one, then HTTP (HTTP/1.1 and h2c by the first bytes), gRPC
//! (HTTP/2) or TCP echo.

use crate::config::{Config, Listener, Protocol};
use crate::grpc::{CallTarget, EchoService, pb::grpc_echo_server::GrpcEchoServer};
use crate::http::{self as echo_http, Conn, Shared};
use crate::tls::{Certified, TlsError, TlsInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls_pki_types::CertificateDer;
use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A started server: where each listener ended up and the certificate of
/// its TLS ports. Dropping it stops every listener and connection.
#[derive(Debug)]
pub struct Running {
    pub listeners: Vec<(Listener, SocketAddr)>,
    pub certificate: CertificateDer<'static>,
    tasks: JoinSet<()>,
}

impl Running {
    /// The bound address of the first listener of this protocol and TLS-ness.
    pub fn addr(&self, protocol: Protocol, tls: bool) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(l, _)| l.protocol == protocol && l.tls == tls)
            .map(|(_, a)| *a)
    }

    /// Serves until a listener fails for good (it never does on its own).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let cert = Certified::load(&config.cert)?;
    let http_tls = cert.server_config(&[b"h2", b"http/1.1"])?;
    let grpc_tls = cert.server_config(&[b"h2"])?;
    let tcp_tls = cert.server_config(&[])?;
    let shared = Arc::new(Shared::new(config.identity.clone()));
    let identity = Arc::new(config.identity.clone());
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::new();
    for listener in &config.listeners {
        let socket = bind(listener.addr).await?;
        let local = socket.local_addr().map_err(|source| ServeError::Bind {
            addr: listener.addr,
            source,
        })?;
        listeners.push((*listener, local));
        let tls = listener.tls.then(|| {
            tokio_rustls::TlsAcceptor::from(match listener.protocol {
                Protocol::Http => http_tls.clone(),
                Protocol::Grpc => grpc_tls.clone(),
                Protocol::Tcp => tcp_tls.clone(),
            })
        });
        let ctx = Ctx {
            protocol: listener.protocol,
            port: local.port(),
            tls,
            shared: shared.clone(),
            identity: identity.clone(),
        };
        tasks.spawn(accept_loop(socket, ctx));
    }
    let certificate = cert
        .chain
        .first()
        .cloned()
        .unwrap_or_else(|| CertificateDer::from(Vec::new()));
    Ok(Running {
        listeners,
        certificate,
        tasks,
    })
}

/// An unspecified IPv6 address means every address of both families;
/// where the host has no IPv6, every IPv4 address.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && e.kind() != io::ErrorKind::AddrInUse =>
        {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            TcpListener::bind(v4)
                .await
                .map_err(|source| ServeError::Bind { addr: v4, source })
        }
        Err(source) => Err(ServeError::Bind { addr, source }),
    }
}

#[derive(Clone)]
struct Ctx {
    protocol: Protocol,
    port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    identity: Arc<crate::config::Identity>,
}

async fn accept_loop(socket: TcpListener, ctx: Ctx) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        match socket.accept().await {
            Ok((tcp, _peer)) => {
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection(tcp, ctx.clone()));
            }
            // Out of file descriptors and the like: keep serving the others.
            Err(e) => {
                tracing::warn!(port = ctx.port, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connection(tcp: TcpStream, ctx: Ctx) {
    let reset = Arc::new(AtomicBool::new(false));
    let tcp = Resettable {
        inner: tcp,
        reset: reset.clone(),
    };
    let (io, tls): (Box<dyn Io>, Option<TlsInfo>) = match &ctx.tls {
        None => (Box::new(tcp), None),
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                let info = TlsInfo::of(stream.get_ref().1);
                (Box::new(stream), Some(info))
            }
            Err(e) => {
                tracing::debug!(port = ctx.port, "TLS handshake failed: {e}");
                return;
            }
        },
    };
    let result = match ctx.protocol {
        Protocol::Tcp => tcp_echo(io).await.map_err(Into::into),
        Protocol::Http => {
            let conn = Conn {
                port: ctx.port,
                tls,
                reset,
            };
            let shared = ctx.shared.clone();
            let service = hyper::service::service_fn(move |req| {
                echo_http::handle(shared.clone(), conn.clone(), req)
            });
            auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .await
        }
        Protocol::Grpc => {
            let echo = GrpcEchoServer::new(EchoService {
                identity: ctx.identity.clone(),
                port: ctx.port,
                tls,
            });
            let service = tower::ServiceBuilder::new()
                .map_request(|mut req: http::Request<hyper::body::Incoming>| {
                    let target = CallTarget {
                        path: req.uri().path().to_string(),
                        authority: req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                    };
                    req.extensions_mut().insert(target);
                    req
                })
                .service(echo);
            auto::Builder::new(TokioExecutor::new())
                .http2_only()
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(port = ctx.port, "connection ended: {e}");
    }
}

/// Echoes bytes until the client stops sending, then closes its side.
async fn tcp_echo(io: Box<dyn Io>) -> io::Result<()> {
    let (mut read, mut write) = tokio::io::split(io);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = read.read(&mut buf).await?;
        if n == 0 {
            return write.shutdown().await;
        }
        write.write_all(&buf[..n]).await?;
    }
}

/// A TCP stream that closes with a reset (`SO_LINGER` 0) when its flag was
/// set, so `/retry` can fail an HTTP/1 request the way a crashing backend
/// does.
struct Resettable {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Resettable {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Resettable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A reset must not be preceded by an orderly FIN.
        if self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
