//! The workload certificate: a fresh ECDSA P-256 key and its CSR
//! ([`KeyRequest`]), the issued chain paired with that key ([`Certificate`]),
//! and reading the SPIFFE id out of a certificate.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use trellis_policy::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TrustBundle;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating the key pair or CSR failed: {0}")]
    Generate(rcgen::Error),
    #[error("the identity service returned an empty chain")]
    EmptyChain,
    #[error("certificate is not valid X.509 DER")]
    Parse,
    #[error("certificate carries {0} URI SANs, expected exactly one")]
    UriSanCount(usize),
    #[error("certificate URI SAN {value:?} is not a SPIFFE id")]
    NotSpiffe { value: String },
    #[error("certificate is for {got}, expected {expected}")]
    WrongIdentity { expected: SpiffeId, got: SpiffeId },
    #[error("certificate does not match the key it was requested for: {0}")]
    KeyMismatch(rustls::Error),
    #[error("certificate does not chain to the trust bundle: {0}")]
    Untrusted(rustls::Error),
    #[error("certificate has already expired")]
    Expired,
}

/// A fresh key pair and the CSR for it. The private key stays in this value
/// and then in the [`Certificate`] built from it; nothing writes it out.
pub struct KeyRequest {
    key: KeyPair,
    csr_der: Vec<u8>,
}

impl fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRequest").finish_non_exhaustive()
    }
}

impl KeyRequest {
    /// Generates an ECDSA P-256 key and a CSR asking for `id` as its only
    /// URI SAN (the CA decides the identity anyway; asking for the expected
    /// one lets it refuse a mismatch loudly instead of issuing something else).
    pub fn generate(id: &SpiffeId) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            id.as_str().try_into().map_err(CertError::Generate)?,
        )];
        let csr = params
            .serialize_request(&key)
            .map_err(CertError::Generate)?;
        Ok(Self {
            key,
            csr_der: csr.der().to_vec(),
        })
    }

    pub fn csr_der(&self) -> &[u8] {
        &self.csr_der
    }

    /// Pairs the issued chain with the key, after checking that it is for
    /// `expected`, carries this key, chains to `bundle` and is still valid.
    pub fn certificate(
        self,
        chain: Vec<CertificateDer<'static>>,
        expected: &SpiffeId,
        bundle: &TrustBundle,
    ) -> Result<Certificate, CertError> {
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let id = spiffe_id(leaf)?;
        if &id != expected {
            return Err(CertError::WrongIdentity {
                expected: expected.clone(),
                got: id,
            });
        }
        let (_, not_after) = validity(leaf)?;
        let parsed =
            rustls::server::ParsedCertificate::try_from(leaf).map_err(CertError::Untrusted)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            bundle.roots(),
            &chain[1..],
            UnixTime::now(),
            crate::tls::provider().signature_verification_algorithms.all,
        )
        .map_err(CertError::Untrusted)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let certified = CertifiedKey::from_der(chain, key, &crate::tls::provider())
            .map_err(CertError::KeyMismatch)?;
        certified.keys_match().map_err(CertError::KeyMismatch)?;
        Certificate::new(id, Arc::new(certified), not_after)
    }
}

/// An issued certificate with its private key, ready for rustls.
#[derive(Clone)]
pub struct Certificate {
    id: SpiffeId,
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    /// `not_after` on tokio's clock, fixed when the certificate arrived, so
    /// renewal and expiry follow paused time in tests.
    expires: Instant,
    received: Instant,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id.as_str())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Wraps an already checked chain and key.
    pub fn new(
        id: SpiffeId,
        key: Arc<CertifiedKey>,
        not_after: SystemTime,
    ) -> Result<Self, CertError> {
        let remaining = not_after
            .duration_since(SystemTime::now())
            .map_err(|_| CertError::Expired)?;
        let received = Instant::now();
        Ok(Self {
            id,
            key,
            not_after,
            expires: received + remaining,
            received,
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When the certificate expires, on tokio's clock.
    pub fn expires_at(&self) -> Instant {
        self.expires
    }

    /// The instant at which `fraction` of the certificate's life has passed.
    /// Its life is counted from when it arrived, not from `notBefore`: the
    /// CA back-dates that for clock skew, which would make short-lived
    /// certificates look half-spent on arrival.
    pub fn life_point(&self, fraction: f64) -> Instant {
        let life = self.expires.saturating_duration_since(self.received);
        self.received + life.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The SPIFFE id of a certificate: its only URI SAN.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertError> {
    let (_, x509) = X509Certificate::from_der(cert).map_err(|_| CertError::Parse)?;
    let uris = uri_sans(&x509);
    match uris.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|_| CertError::NotSpiffe {
            value: (*one).to_string(),
        }),
        other => Err(CertError::UriSanCount(other.len())),
    }
}

/// Every URI SAN of a parsed certificate.
pub fn uri_sans<'a>(x509: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

/// `notBefore` and `notAfter` of a certificate.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), CertError> {
    let (_, x509) = X509Certificate::from_der(cert).map_err(|_| CertError::Parse)?;
    let v = x509.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok((at(v.not_before), at(v.not_after)))
}

/// PEM text of a list of certificates.
pub fn pem_chain(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.to_vec()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
