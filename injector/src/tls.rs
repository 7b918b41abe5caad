//! The webhook's own certificates: a small CA and a serving certificate for
//! the injector Service's DNS names, generated with rcgen. The API server
//! trusts them through the `caBundle` that [`crate::sync`] keeps current.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// How long a generated serving certificate lives.
pub const VALIDITY: Duration = Duration::days(365);
/// A certificate with less than this left is replaced.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// PEM of a CA certificate, the serving certificate it signed and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The CA certificates the API server must trust (the newest first; an
    /// older one stays while replicas may still serve a leaf it signed).
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate PEM is invalid: {0}")]
    Pem(String),
    #[error("building the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The names the API server uses for a webhook Service:
/// `svc.ns.svc` and `svc.ns.svc.<cluster-domain>`.
pub fn dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// A fresh CA and a serving certificate for `dns_names`, valid from `now`.
pub fn generate(dns_names: &[String], now: OffsetDateTime) -> Result<Material, TlsError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "trellis-injector webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + VALIDITY + Duration::days(1);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("trellis-injector"),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::minutes(5);
    leaf.not_after = now + VALIDITY;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok(Material {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether `m`'s serving certificate names exactly `dns_names` and has more
/// than [`RENEW_BEFORE`] left at `now`.
pub fn still_good(m: &Material, dns_names: &[String], now: OffsetDateTime) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(m.cert_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let not_after = cert.validity().not_after.to_datetime();
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut want = dns_names.to_vec();
    want.sort();
    names == want && not_after - now > RENEW_BEFORE
}

/// The CA certificates of `ca_pem` still valid at `now`, as PEM.
pub fn unexpired_cas(ca_pem: &str, now: OffsetDateTime) -> String {
    CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|der| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, c)| c.validity().not_after.to_datetime() > now)
                .unwrap_or(false)
        })
        .map(|der| pem_encode(&der))
        .collect()
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A rustls server configuration serving `m` (HTTP/1.1 and HTTP/2).
pub fn server_config(m: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("serving certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no serving certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_serves_and_ages() {
        let names = dns_names("trellis-injector", "trellis", "cluster.local");
        let now = OffsetDateTime::now_utc();
        let m = generate(&names, now).unwrap();
        assert!(server_config(&m).is_ok());
        assert!(still_good(&m, &names, now));
        assert!(!still_good(&m, &names, now + VALIDITY - RENEW_BEFORE));
        assert!(!still_good(&m, &names[..1], now));
        assert_eq!(unexpired_cas(&m.ca_pem, now), m.ca_pem);
        assert_eq!(unexpired_cas(&m.ca_pem, now + VALIDITY * 2), "");
    }
}
