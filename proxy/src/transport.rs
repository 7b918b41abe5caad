//! Sockets: binding listeners, reading the original destination of a
//! redirected connection, and the small I/O helpers the stages share
//! (replaying sniffed bytes, splicing two streams).

use bytes::{Buf, Bytes};
use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// The address an application connected to before iptables redirected the
/// connection to the proxy (or the listener's fixed target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The peer of an accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds a listener with the options a proxy wants: address reuse so a
/// restarted proxy binds at once, and a backlog sized for bursts. An
/// unspecified IPv6 address is bound dual-stack when the host has IPv6 and
/// falls back to IPv4 when it does not (a pod without IPv6).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    match bind_exact(addr) {
        Err(_) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port());
            bind_exact(v4).map_err(|source| Error::Bind { addr: v4, source })
        }
        r => r.map_err(|source| Error::Bind { addr, source }),
    }
}

fn bind_exact(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The next connection of `listener`, with `TCP_NODELAY` set, or `None`
/// once `stop` is cancelled. An accept error (descriptors exhausted, a
/// connection reset before it was taken) is logged and retried after a
/// short pause, so a burst of them neither ends the listener nor spins.
pub async fn accept(listener: &TcpListener, stop: &CancellationToken) -> Option<TcpStream> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return None,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return Some(tcp);
            }
            Err(e) => {
                let local = listener.local_addr().ok();
                tracing::warn!(listener = ?local, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The original destination of an accepted connection: `SO_ORIGINAL_DST`
/// (or `IP6T_SO_ORIGINAL_DST`) when iptables redirected it, else the local
/// address the client reached (a connection nobody redirected, such as a
/// peer proxy dialing the inbound port directly).
pub fn orig_dst(stream: &TcpStream) -> io::Result<OrigDst> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr()?;
    let redirected = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6().or_else(|_| sock.original_dst_v4())
    };
    let addr = match redirected.ok().and_then(|a| a.as_socket()) {
        Some(a) => unmap(a),
        None => unmap(local),
    };
    Ok(OrigDst(addr))
}

/// `fixed` when the listener has a fixed target (the proxy run without
/// iptables), else [`orig_dst`].
pub fn orig_dst_or(stream: &TcpStream, fixed: Option<SocketAddr>) -> io::Result<OrigDst> {
    match fixed {
        Some(addr) => Ok(OrigDst(addr)),
        None => orig_dst(stream),
    }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d` so dual-stack listeners report the
/// same addresses as IPv4 ones (policies are keyed by them).
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Connects to `addr` with the socket options of a latency-sensitive proxy.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A stream whose first bytes were already read (to sniff the protocol or a
/// preamble) and are replayed before the rest.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not yet replayed and the stream.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes moved by [`splice`]: from the client to the server and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub sent: u64,
    pub received: u64,
}

/// Forwards bytes both ways until both sides closed, replaying `prefix` (bytes
/// already read from the client) to the server first. Half-closes are
/// propagated, so protocols that shut down one direction keep working.
pub async fn splice<C, S>(client: &mut C, prefix: &[u8], server: &mut S) -> io::Result<Moved>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    if !prefix.is_empty() {
        server.write_all(prefix).await?;
    }
    let (sent, received) =
        tokio::io::copy_bidirectional_with_sizes(client, server, 16 * 1024, 16 * 1024).await?;
    Ok(Moved {
        sent: sent + prefix.len() as u64,
        received,
    })
}

/// Forwards bytes both ways between two TCP sockets with `splice(2)`
/// through a pipe, so the payload never enters user space; `prefix` (bytes
/// already read from the client) goes to the server first. Each direction
/// ends with a half-close of its destination.
pub async fn splice_tcp(
    client: &TcpStream,
    prefix: &[u8],
    server: &TcpStream,
) -> io::Result<Moved> {
    let mut written = 0;
    while written < prefix.len() {
        server.writable().await?;
        match server.try_write(&prefix[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let (sent, received) =
        tokio::try_join!(splice_one(client, server), splice_one(server, client))?;
    Ok(Moved {
        sent: sent + prefix.len() as u64,
        received,
    })
}

/// One direction of [`splice_tcp`].
async fn splice_one(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    use nix::fcntl::{SpliceFFlags, splice};
    use tokio::io::Interest;
    const CHUNK: usize = 64 * 1024;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let (pipe_out, pipe_in) = nix::unistd::pipe().map_err(io::Error::from)?;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || {
            splice(src, None, &pipe_in, None, CHUNK, flags).map_err(io::Error::from)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // Drain the pipe completely before reading more, so it never fills.
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_out, None, dst, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
    // The source finished sending: pass the half-close on.
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_unmapped() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(unmap(mapped), "10.1.2.3:80".parse().unwrap());
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix() {
        use tokio::io::AsyncReadExt;
        let mut r = Rewind::new(Bytes::from_static(b"hello "), &b"world"[..]);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn splice_carries_both_directions_and_half_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let echo = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (proxy_addr, echo_addr) = (listener.local_addr().unwrap(), echo.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            s.write_all(&all).await.unwrap();
        });
        let proxy = tokio::spawn(async move {
            let (c, _) = listener.accept().await.unwrap();
            let s = connect(echo_addr).await.unwrap();
            splice_tcp(&c, b"head:", &s).await.unwrap()
        });
        let mut client = connect(proxy_addr).await.unwrap();
        let payload = vec![7u8; 300 * 1024];
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(&back[..5], b"head:");
        assert_eq!(back.len(), payload.len() + 5);
        let moved = proxy.await.unwrap();
        assert_eq!(
            moved,
            Moved {
                sent: payload.len() as u64 + 5,
                received: payload.len() as u64 + 5
            }
        );
    }

    #[tokio::test]
    async fn unredirected_connections_report_their_local_address() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(orig_dst(&server).unwrap(), OrigDst(addr));
    }
}
