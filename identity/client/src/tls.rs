//! The rustls building blocks of mesh mTLS: TLS 1.3 only, the workspace's
//! aws-lc-rs provider (whose default key exchange prefers the
//! X25519MLKEM768 post-quantum hybrid), certificates resolved from the
//! current [`Certificate`] at each handshake, and two SPIFFE-aware verifiers:
//!
//! - [`PeerVerifier`] (client side) accepts a server whose chain reaches the
//!   current trust bundle **and** whose only URI SAN is the SPIFFE id the
//!   controller announced for that endpoint;
//! - [`MeshClientVerifier`] (server side) requires a client certificate that
//!   chains to the bundle and carries a SPIFFE id, which [`peer_identity`]
//!   reads back after the handshake.
//!
//! Session resumption is off on both sides: a resumed session would skip the
//! identity check of the verifiers, and mesh connections are long-lived and
//! pooled, so resumption would save little.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;
use trellis_policy::SpiffeId;

use crate::{Certificate, TrustBundle, cert};

/// ALPN protocol of the one multiplexed HTTP/2 connection between two proxies.
pub const ALPN_H2: &[u8] = b"trellis.h2";
/// ALPN protocol of a proxied opaque TCP connection.
pub const ALPN_TCP: &[u8] = b"trellis.tcp";

/// The current certificate, as the identity keeps it.
pub type CertWatch = watch::Receiver<Option<Arc<Certificate>>>;
/// The current trust bundle, as the identity keeps it.
pub type BundleWatch = watch::Receiver<Option<Arc<TrustBundle>>>;

/// The workspace's one crypto provider: aws-lc-rs with its default key
/// exchange groups (X25519MLKEM768 first, by rustls' `prefer-post-quantum`).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Why a peer certificate was refused, beyond what webpki says.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer is {got}, expected {expected}")]
    WrongIdentity { expected: SpiffeId, got: String },
    #[error("peer certificate carries no SPIFFE id: {0}")]
    NoSpiffeId(cert::CertError),
    #[error("no trust bundle loaded yet")]
    NoBundle,
}

fn refuse(e: PeerError) -> rustls::Error {
    let reason = match e {
        PeerError::NoBundle => CertificateError::UnknownIssuer,
        e => CertificateError::Other(OtherError(Arc::new(e))),
    };
    rustls::Error::InvalidCertificate(reason)
}

/// Presents the current certificate, on either side of a handshake.
#[derive(Debug, Clone)]
pub struct CurrentCert(pub CertWatch);

impl CurrentCert {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.borrow().as_ref().map(|c| c.certified_key().clone())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// Client side: the server must chain to the bundle and be `expected`.
#[derive(Debug)]
pub struct PeerVerifier {
    bundle: BundleWatch,
    expected: SpiffeId,
}

impl PeerVerifier {
    pub fn new(bundle: BundleWatch, expected: SpiffeId) -> Self {
        Self { bundle, expected }
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self
            .bundle
            .borrow()
            .clone()
            .ok_or_else(|| refuse(PeerError::NoBundle))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            bundle.roots(),
            intermediates,
            now,
            algorithms().all,
        )?;
        let got = cert::spiffe_id(end_entity).map_err(|e| refuse(PeerError::NoSpiffeId(e)))?;
        if got != self.expected {
            return Err(refuse(PeerError::WrongIdentity {
                expected: self.expected.clone(),
                got: got.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Server side: a client certificate is required, must chain to the bundle
/// (with the client-authentication usage) and must carry a SPIFFE id.
#[derive(Debug)]
pub struct MeshClientVerifier {
    bundle: BundleWatch,
}

impl MeshClientVerifier {
    pub fn new(bundle: BundleWatch) -> Self {
        Self { bundle }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to borrow from a bundle that may be swapped at any
        // time; every mesh client has exactly one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self
            .bundle
            .borrow()
            .clone()
            .ok_or_else(|| refuse(PeerError::NoBundle))?;
        let verified =
            bundle
                .client_verifier()
                .verify_client_cert(end_entity, intermediates, now)?;
        cert::spiffe_id(end_entity).map_err(|e| refuse(PeerError::NoSpiffeId(e)))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

/// The inbound side of mesh mTLS: presents the current certificate, requires
/// a client certificate that chains to the bundle, and offers `alpn`.
pub fn server_config(certs: CertWatch, bundle: BundleWatch, alpn: &[&[u8]]) -> ServerConfig {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("aws-lc-rs supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(bundle)))
        .with_cert_resolver(Arc::new(CurrentCert(certs)));
    config.alpn_protocols = alpn_list(alpn);
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config
}

/// The outbound side of mesh mTLS towards one peer: presents the current
/// certificate and accepts only a server that is `peer`.
pub fn client_config(
    certs: CertWatch,
    bundle: BundleWatch,
    peer: SpiffeId,
    alpn: &[&[u8]],
) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("aws-lc-rs supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(bundle, peer)))
        .with_client_cert_resolver(Arc::new(CurrentCert(certs)));
    config.alpn_protocols = alpn_list(alpn);
    config.resumption = Resumption::disabled();
    config
}

/// A client config for the identity service: no client certificate, the
/// server verified by DNS name or IP against the bundle, ALPN `h2` (gRPC).
pub fn identity_service_config(bundle: &TrustBundle) -> Result<ClientConfig, rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(bundle.roots().clone(), provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The SPIFFE id of the verified peer of a finished handshake: on a server
/// connection built from [`server_config`], the client's identity (pass a
/// `&ServerConnection`; it dereferences to `CommonState`).
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    cert::spiffe_id(leaf).ok()
}
