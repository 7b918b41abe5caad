//! Mesh mTLS: [`MeshTls`] establishes every connection between two meshed
//! proxies with the workload's identity (`trellis-identity-client`).
//!
//! ```text
//!  client proxy                                   server proxy (:15106)
//!  connect(peer ip:15106) ── TLS 1.3, ALPN ──►    accept: client cert chains to the bundle
//!    server cert chains to the bundle and            and carries a SPIFFE id
//!    is the endpoint's announced SPIFFE id        ──► Accepted { client_id, kind from ALPN }
//! ```
//!
//! A peer that does not complete the handshake within
//! [`HANDSHAKE_TIMEOUT`] is dropped. Every handshake is counted by result in
//! `trellis_tls_handshakes_total`.

use crate::mesh::{Accept, Accepted, BoxIo, Connect, Kind, Peer};
use futures::future::BoxFuture;
use std::{io, time::Duration};
use tokio::net::TcpStream;
use trellis_identity_client::Identity;

/// How long either side waits for a mesh TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Mesh connections over mTLS with the workload's current certificate.
#[derive(Clone, Debug)]
pub struct MeshTls {
    identity: Identity,
}

impl MeshTls {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
    )
}

impl Connect for MeshTls {
    fn connect(&self, peer: &Peer, kind: Kind) -> BoxFuture<'static, io::Result<BoxIo>> {
        let identity = self.identity.clone();
        let peer = peer.clone();
        Box::pin(async move {
            let handshake = async {
                let tcp = crate::transport::connect(peer.addr).await?;
                identity
                    .connect(tcp, peer.addr.ip(), &peer.identity, kind.alpn())
                    .await
            };
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("mTLS with {}: {e}", peer.identity))
                })?;
            // Offering one protocol, the server either chose it or refused.
            let negotiated = tls.get_ref().1.alpn_protocol();
            if negotiated != Some(kind.alpn()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("peer {} did not agree on ALPN", peer.identity),
                ));
            }
            Ok(Box::new(tls) as BoxIo)
        })
    }
}

impl Accept for MeshTls {
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Accepted>> {
        let identity = self.identity.clone();
        Box::pin(async move {
            let (tls, client) = tokio::time::timeout(HANDSHAKE_TIMEOUT, identity.accept(tcp))
                .await
                .map_err(|_| timed_out())??;
            let kind = tls.get_ref().1.alpn_protocol().and_then(Kind::from_alpn);
            if kind.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{client} negotiated no mesh protocol"),
                ));
            }
            Ok(Accepted {
                io: Box::new(tls),
                client_id: Some(client),
                kind,
            })
        })
    }
}
