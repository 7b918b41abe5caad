//! TLS at the gateway's edge: the ClientHello read without answering it
//! (its SNI picks the listener, and a passthrough connection replays the
//! bytes to the backend untouched), and termination with a listener's own
//! certificates, the one matching the SNI most specifically.
//!
//! ```text
//!  accept ──► peek ClientHello (rustls Acceptor; bytes kept) ──► SNI ──► listener
//!               ├─ Passthrough: replay the bytes, splice to the TLSRoute's backend
//!               └─ Terminate: handshake over the replayed bytes; certificate by SNI
//!                  (ListenerCerts: exact SAN, then longest wildcard, else the first);
//!                  ALPN h2 / http/1.1 for HTTPS listeners
//! ```
//!
//! This is the client-facing TLS of a Gateway listener, with the
//! certificates of its `certificateRefs`; the mesh's own mTLS towards
//! backends is [`crate::tls`].

use bytes::{Bytes, BytesMut};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::{fmt, io, sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt};
use trellis_policy::{CertificatePem, HostMatch, find::HostRank};

/// How long a client may take to send its ClientHello, and to finish a
/// terminated handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ClientHello larger than this is refused (post-quantum key shares make
/// them a few KiB; nothing legitimate comes near).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate {index}: no certificate in the PEM chain")]
    NoCertificate { index: usize },
    #[error("certificate {index}: {reason}")]
    Pem { index: usize, reason: String },
    #[error("certificate {index}: private key does not fit: {reason}")]
    Key { index: usize, reason: String },
}

/// A certificate chain with its key and the names it is valid for.
struct Entry {
    names: Vec<HostMatch>,
    key: Arc<CertifiedKey>,
}

/// The certificates of one listener, chosen by SNI.
pub struct ListenerCerts {
    entries: Vec<Entry>,
}

impl fmt::Debug for ListenerCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| e.names.iter().map(ToString::to_string).collect())
            .collect();
        f.debug_struct("ListenerCerts")
            .field("names", &names)
            .finish()
    }
}

impl ListenerCerts {
    /// Parses every certificate of a listener; one that does not parse is
    /// an error naming it (the others still serve: see [`Self::parse_lenient`]).
    pub fn parse(certs: &[CertificatePem]) -> Result<Self, Error> {
        let entries = certs
            .iter()
            .enumerate()
            .map(|(index, c)| entry(index, c))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Parses what parses; the errors of the others.
    pub fn parse_lenient(certs: &[CertificatePem]) -> (Self, Vec<Error>) {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (index, c) in certs.iter().enumerate() {
            match entry(index, c) {
                Ok(e) => entries.push(e),
                Err(e) => errors.push(e),
            }
        }
        (Self { entries }, errors)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The certificate for `sni`: the one whose names match it most
    /// specifically, else the first (a client without SNI, or one asking a
    /// name no certificate carries, gets the listener's first certificate).
    pub fn choose(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let rank = |e: &Entry| -> Option<HostRank> {
            e.names
                .iter()
                .filter(|n| sni.is_some_and(|s| n.matches(s)))
                .map(HostRank::of)
                .max()
        };
        let mut best: Option<(HostRank, &Entry)> = None;
        for e in &self.entries {
            if let Some(r) = rank(e)
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, e));
            }
        }
        best.map(|(_, e)| e)
            .or_else(|| self.entries.first())
            .map(|e| &e.key)
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()).cloned()
    }
}

fn entry(index: usize, c: &CertificatePem) -> Result<Entry, Error> {
    let pem = |e: rustls::pki_types::pem::Error| Error::Pem {
        index,
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(pem)?;
    let leaf = chain.first().ok_or(Error::NoCertificate { index })?;
    let names = dns_names(leaf).map_err(|reason| Error::Pem { index, reason })?;
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).map_err(pem)?;
    let key =
        CertifiedKey::from_der(chain, key, &trellis_identity_client::provider()).map_err(|e| {
            Error::Key {
                index,
                reason: e.to_string(),
            }
        })?;
    Ok(Entry {
        names,
        key: Arc::new(key),
    })
}

/// The DNS names of a certificate: its DNS SANs, else its subject's common
/// name (old certificates carry their name only there).
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<HostMatch>, String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let (_, x509) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<HostMatch> = x509
        .subject_alternative_name()
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => HostMatch::parse(d).ok(),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        names = x509
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .filter_map(|cn| HostMatch::parse(cn).ok())
            .collect();
    }
    Ok(names)
}

/// A terminating server configuration over a listener's certificates;
/// `alpn` is what the listener speaks inside (`h2`, `http/1.1` for HTTPS).
pub fn server_config(certs: ListenerCerts, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(trellis_identity_client::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What the client's first flight said.
#[derive(Debug)]
pub struct Hello {
    /// The SNI, lower-case; `None` when the client sent none.
    pub sni: Option<String>,
    /// Every byte read so far, to replay.
    pub bytes: Bytes,
}

/// Reads a ClientHello without answering it. Fails when the bytes are no
/// TLS ClientHello, or it takes longer than [`HANDSHAKE_TIMEOUT`].
pub async fn peek_client_hello<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Hello> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no ClientHello in time"))?
}

async fn read_hello<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        let seen = buf.len();
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before its ClientHello",
            ));
        }
        if buf.len() > MAX_CLIENT_HELLO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        let mut fresh = &buf[seen..];
        while !fresh.is_empty() {
            acceptor.read_tls(&mut fresh)?;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let sni = accepted
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Ok(Hello {
                    sni,
                    bytes: buf.freeze(),
                });
            }
            Err((e, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a TLS ClientHello: {e}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> CertificatePem {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        CertificatePem {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn the_certificate_is_chosen_by_sni() {
        let certs = ListenerCerts::parse(&[
            self_signed(&["fallback.example"]),
            self_signed(&["*.example.com"]),
            self_signed(&["api.example.com"]),
        ])
        .unwrap();
        let names = |sni: Option<&str>| {
            let key = certs.choose(sni).unwrap();
            dns_names(key.end_entity_cert().unwrap())
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Some("api.example.com")), ["api.example.com"]);
        assert_eq!(names(Some("www.example.com")), ["*.example.com"]);
        assert_eq!(names(Some("other.org")), ["fallback.example"]);
        assert_eq!(names(None), ["fallback.example"]);
    }

    #[test]
    fn bad_certificates_are_named() {
        let good = self_signed(&["a.example"]);
        let other = self_signed(&["b.example"]);
        let cases = [
            (
                CertificatePem {
                    chain_pem: String::new(),
                    key_pem: good.key_pem.clone(),
                },
                "no certificate",
            ),
            (
                CertificatePem {
                    chain_pem: good.chain_pem.clone(),
                    key_pem: other.key_pem.clone(),
                },
                "does not fit",
            ),
            (
                CertificatePem {
                    chain_pem: good.chain_pem.clone(),
                    key_pem: "junk".into(),
                },
                "certificate 1",
            ),
        ];
        for (bad, want) in cases {
            let err = match ListenerCerts::parse(&[good.clone(), bad]) {
                Ok(_) => panic!("{want}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(want), "{err} should mention {want}");
            assert!(err.contains("certificate 1"), "{err} names the index");
        }
    }

    #[tokio::test]
    async fn a_client_hello_is_read_and_kept() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        let config =
            rustls::ClientConfig::builder_with_provider(trellis_identity_client::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("Db.Example.com").unwrap();
        let hs = tokio::spawn(async move { connector.connect(name, client).await.map(|_| ()) });
        let hello = peek_client_hello(&mut server).await.unwrap();
        assert_eq!(hello.sni.as_deref(), Some("db.example.com"));
        assert_eq!(hello.bytes[0], 0x16, "a TLS handshake record");
        drop(server);
        assert!(hs.await.unwrap().is_err(), "nobody answered");

        let (mut server, mut client) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = peek_client_hello(&mut server).await.unwrap_err();
        assert!(err.to_string().contains("not a TLS ClientHello"), "{err}");
    }
}
