//! What the certificates of the mesh look like, in one place for the CA
//! (`trellis-identity`) and the in-process test CA: ECDSA P-256 everywhere,
//! a self-signed trust anchor, an issuing intermediate below it (path length
//! 0), and leaves whose only subject alternative name is the workload's
//! SPIFFE id (empty subject, so the SAN extension is critical as RFC 5280
//! asks) valid for both TLS client and server authentication.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use trellis_policy::SpiffeId;

/// How far `notBefore` is set in the past, so a peer whose clock is a little
/// behind the CA's accepts a fresh certificate.
pub const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{value:?} is not a valid subject alternative name: {reason}")]
    San { value: String, reason: String },
    #[error("validity end {0:?} is out of range")]
    Time(SystemTime),
}

fn odt(t: SystemTime) -> Result<OffsetDateTime, ProfileError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ProfileError::Time(t))?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).map_err(|_| ProfileError::Time(t))?)
        .map_err(|_| ProfileError::Time(t))
}

fn base(now: SystemTime, not_after: SystemTime) -> Result<CertificateParams, ProfileError> {
    let mut params = CertificateParams::default();
    params.not_before = odt(now - BACKDATE)?;
    params.not_after = odt(not_after)?;
    params.serial_number = Some(serial());
    params.distinguished_name = DistinguishedName::new();
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 16 random bytes, the first in 0x01..=0x7f so the DER integer is positive
/// and minimally encoded.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn ca(
    trust_domain: &str,
    common_name: &str,
    path_len: Option<u8>,
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, ProfileError> {
    let mut params = base(now, not_after)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A self-signed trust anchor. The common name carries the creation time
/// so two anchors of the same trust domain are told apart in a bundle.
pub fn anchor(
    trust_domain: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, ProfileError> {
    let created = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut params = ca(
        trust_domain,
        &format!("trellis trust anchor {created}"),
        Some(1),
        now,
        now + lifetime,
    )?;
    params.use_authority_key_identifier_extension = false;
    Ok(params)
}

/// The issuing intermediate the CA signs workload certificates with.
pub fn intermediate(
    trust_domain: &str,
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, ProfileError> {
    let created = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    ca(
        trust_domain,
        &format!("trellis issuer {created}"),
        Some(0),
        now,
        not_after,
    )
}

fn leaf(now: SystemTime, not_after: SystemTime) -> Result<CertificateParams, ProfileError> {
    let mut params = base(now, not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// A workload certificate: `id` as the only SAN.
pub fn workload(
    id: &SpiffeId,
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, ProfileError> {
    let mut params = leaf(now, not_after)?;
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e: rcgen::Error| ProfileError::San {
            value: id.to_string(),
            reason: e.to_string(),
        })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    Ok(params)
}

/// A server certificate for DNS names and IP addresses (the identity
/// service's own).
pub fn server(
    dns_names: &[String],
    ips: &[IpAddr],
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, ProfileError> {
    let mut params = leaf(now, not_after)?;
    for name in dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| ProfileError::San {
                value: name.clone(),
                reason: e.to_string(),
            })?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(params)
}
