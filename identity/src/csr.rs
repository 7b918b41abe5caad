//! Checking a certificate signing request with x509-parser before anything
//! is signed: DER that parses completely, a self-signature that verifies, an
//! ECDSA P-256 key. The URI SANs it asks for are returned so the service can
//! refuse a request for an identity the caller does not have; nothing else
//! in the CSR (subject, other names, extensions) reaches the certificate.
//!
//! Error messages never quote the CSR's content.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

/// Far more than a P-256 CSR with one SAN needs (about 300 bytes).
pub const MAX_CSR_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("csr is empty")]
    Empty,
    #[error("csr is {0} bytes, more than {MAX_CSR_BYTES}")]
    TooLarge(usize),
    #[error("csr is not a DER-encoded PKCS#10 request")]
    NotDer,
    #[error("csr has trailing bytes after the request")]
    TrailingBytes,
    #[error("csr signature does not verify with its own public key")]
    BadSignature,
    #[error("csr key is not ECDSA P-256")]
    UnsupportedKey,
}

/// What a verified CSR offers and asks for.
#[derive(Debug)]
pub struct CheckedCsr {
    /// The public key to certify.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// The URI SANs it asks for.
    pub uri_sans: Vec<String>,
}

pub fn check(der: &[u8]) -> Result<CheckedCsr, CsrError> {
    if der.is_empty() {
        return Err(CsrError::Empty);
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(der.len()));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::NotDer)?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingBytes);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(CsrError::UnsupportedKey);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| CsrError::UnsupportedKey)?;
    let mut uri_sans = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                uri_sans.extend(san.general_names.iter().filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                }));
            }
        }
    }
    Ok(CheckedCsr {
        public_key,
        uri_sans,
    })
}
