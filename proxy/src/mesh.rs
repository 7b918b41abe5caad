//! The transport between two meshed proxies.
//!
//! A client proxy dials the peer pod's inbound port (15106) directly, never
//! the application's port. Every mesh connection starts with an 8-byte
//! [`Preamble`]: the magic `TRLS`, a version, the connection's [`Kind`] and,
//! for opaque connections, the application port. Then:
//!
//! - [`Kind::Multiplexed`]: HTTP/2 with prior knowledge. All HTTP requests to
//!   any port of that pod share it. Each request carries
//!   [`header::DST_PORT`] (the application port) and [`header::ORIG_PROTO`]
//!   (`h1` or `h2`, what the application spoke); the inbound proxy strips
//!   both and restores the request to its original protocol.
//! - [`Kind::Opaque`]: one TCP stream for one client connection, replayed to
//!   the application port of the preamble — opaque TCP, and HTTP/1 requests
//!   that upgrade the connection (WebSocket, `CONNECT`), which the inbound
//!   side detects as HTTP/1 again.
//!
//! Connection establishment sits behind [`Connect`] (client side) and
//! [`Accept`] (server side): [`Plain`] TCP when the proxy has no identity,
//! and [`crate::tls::MeshTls`] (TLS 1.3, both sides authenticated by SPIFFE
//! certificates, ALPN naming the [`Kind`]) when it has one. The preamble
//! travels inside TLS unchanged, and the server refuses a preamble whose
//! kind differs from the one ALPN negotiated.

use futures::future::BoxFuture;
use std::{fmt, io, net::SocketAddr, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_policy::SpiffeId;

/// Internal headers between proxies; the inbound proxy removes them before
/// the application sees the request.
pub mod header {
    /// The application port the request is for.
    pub const DST_PORT: &str = "x-trellis-dst-port";
    /// What the application spoke: `h1` or `h2`.
    pub const ORIG_PROTO: &str = "x-trellis-orig-proto";

    /// The names parsed once: maps look a `HeaderName` up without parsing
    /// and lower-casing a string at every request.
    pub static DST_PORT_NAME: http::HeaderName = http::HeaderName::from_static(DST_PORT);
    pub static ORIG_PROTO_NAME: http::HeaderName = http::HeaderName::from_static(ORIG_PROTO);
}

const MAGIC: &[u8; 4] = b"TRLS";
const VERSION: u8 = 1;
/// How long an inbound proxy waits for a peer's preamble.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a mesh connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// HTTP/2 carrying HTTP requests for any port of the peer.
    Multiplexed,
    /// One opaque stream for one application port.
    Opaque,
}

impl Kind {
    /// The ALPN protocol id naming this kind on mesh TLS connections.
    pub fn alpn(&self) -> &'static [u8] {
        match self {
            Kind::Multiplexed => trellis_identity_client::ALPN_H2,
            Kind::Opaque => trellis_identity_client::ALPN_TCP,
        }
    }

    /// The kind an ALPN protocol id names.
    pub fn from_alpn(alpn: &[u8]) -> Option<Self> {
        [Kind::Multiplexed, Kind::Opaque]
            .into_iter()
            .find(|k| k.alpn() == alpn)
    }
}

/// The first bytes of every mesh connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    pub kind: Kind,
    /// The application port (opaque connections; 0 for multiplexed ones).
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a mesh connection: preamble starts with {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported mesh preamble version {0}")]
    Version(u8),
    #[error("unknown mesh connection kind {0}")]
    Kind(u8),
    #[error("opaque mesh connection names port 0")]
    NoPort,
    #[error("no mesh preamble within {0:?}")]
    Timeout(Duration),
    #[error("reading the mesh preamble: {0}")]
    Io(#[from] io::Error),
}

impl Preamble {
    pub fn multiplexed() -> Self {
        Self {
            kind: Kind::Multiplexed,
            port: 0,
        }
    }

    pub fn opaque(port: u16) -> Self {
        Self {
            kind: Kind::Opaque,
            port,
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let kind = match self.kind {
            Kind::Multiplexed => 1,
            Kind::Opaque => 2,
        };
        let [hi, lo] = self.port.to_be_bytes();
        [
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, kind, hi, lo,
        ]
    }

    pub fn decode(b: [u8; 8]) -> Result<Self, Error> {
        let magic = [b[0], b[1], b[2], b[3]];
        if &magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        if b[4] != VERSION {
            return Err(Error::Version(b[4]));
        }
        let port = u16::from_be_bytes([b[6], b[7]]);
        let kind = match b[5] {
            1 => Kind::Multiplexed,
            2 if port == 0 => return Err(Error::NoPort),
            2 => Kind::Opaque,
            k => return Err(Error::Kind(k)),
        };
        Ok(Self { kind, port })
    }

    pub async fn read<I: AsyncRead + Unpin>(io: &mut I) -> Result<Self, Error> {
        let mut b = [0u8; 8];
        match tokio::time::timeout(PREAMBLE_TIMEOUT, io.read_exact(&mut b)).await {
            Err(_) => Err(Error::Timeout(PREAMBLE_TIMEOUT)),
            Ok(r) => {
                r?;
                Self::decode(b)
            }
        }
    }

    pub async fn write<I: AsyncWrite + Unpin>(&self, io: &mut I) -> io::Result<()> {
        io.write_all(&self.encode()).await
    }
}

/// A bidirectional byte stream: plain TCP today, TLS over TCP with mTLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

/// The peer a client proxy dials: the pod's IP at the mesh port, and the
/// identity the controller announced for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: SpiffeId,
}

/// The client side of connection establishment between proxies. With TLS:
/// ALPN from [`Kind::alpn`], the server's SPIFFE id checked against
/// [`Peer::identity`].
pub trait Connect: Send + Sync + fmt::Debug + 'static {
    fn connect(&self, peer: &Peer, kind: Kind) -> BoxFuture<'static, io::Result<BoxIo>>;
}

/// What the server side learned about a mesh client.
#[derive(Debug)]
pub struct Accepted {
    pub io: BoxIo,
    /// The verified client identity; `None` over plaintext.
    pub client_id: Option<SpiffeId>,
    /// The kind the transport negotiated (ALPN); `None` over plaintext, where
    /// only the preamble says.
    pub kind: Option<Kind>,
}

/// The server side of connection establishment between proxies.
pub trait Accept: Send + Sync + fmt::Debug + 'static {
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Accepted>>;
}

/// Plaintext mesh connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Connect for Plain {
    fn connect(&self, peer: &Peer, _kind: Kind) -> BoxFuture<'static, io::Result<BoxIo>> {
        let addr = peer.addr;
        Box::pin(async move {
            let tcp = crate::transport::connect(addr).await?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

impl Accept for Plain {
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Accepted>> {
        Box::pin(async move {
            Ok(Accepted {
                io: Box::new(tcp),
                client_id: None,
                kind: None,
            })
        })
    }
}

/// Dials a peer and sends the preamble: the one way a mesh connection is
/// opened.
pub async fn open(connector: &dyn Connect, peer: &Peer, preamble: Preamble) -> io::Result<BoxIo> {
    let mut io = connector.connect(peer, preamble.kind).await?;
    preamble.write(&mut io).await?;
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_round_trip() {
        for p in [Preamble::multiplexed(), Preamble::opaque(5432)] {
            assert_eq!(Preamble::decode(p.encode()).unwrap(), p);
        }
    }

    #[test]
    fn alpn_names_the_kind() {
        for k in [Kind::Multiplexed, Kind::Opaque] {
            assert_eq!(Kind::from_alpn(k.alpn()), Some(k));
        }
        assert_eq!(Kind::from_alpn(b"h2"), None);
    }

    #[test]
    fn bad_preambles_are_refused() {
        let cases: [([u8; 8], &str); 4] = [
            (*b"GET / HT", "not a mesh connection"),
            ([b'T', b'R', b'L', b'S', 9, 1, 0, 0], "version 9"),
            ([b'T', b'R', b'L', b'S', 1, 7, 0, 0], "kind 7"),
            ([b'T', b'R', b'L', b'S', 1, 2, 0, 0], "port 0"),
        ];
        for (bytes, want) in cases {
            let err = Preamble::decode(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
