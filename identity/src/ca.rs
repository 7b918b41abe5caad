//! The certificate authority: its stored [`Material`] (PEM files, the same
//! names in a state directory and in a Kubernetes Secret), the validated
//! in-memory [`Authority`] that signs, and the steps of a trust-anchor
//! rotation, all as plain functions over plain data.
//!
//! | name | content |
//! |---|---|
//! | `ca.crt` | the trust anchor the issuer chains to |
//! | `ca.key` | its key (absent when the operator keeps it offline) |
//! | `issuer.crt`, `issuer.key` | the intermediate that signs workload certificates |
//! | `bundle.crt` | every anchor to trust (absent: `ca.crt` alone) |
//! | `next-ca.crt`, `next-ca.key` | an anchor added for rotation, trusted, not yet issuing |
//!
//! Rotation: `add` generates `next-ca` and appends it to the bundle (peers
//! learn to trust it; nothing is issued from it yet), `promote` makes it the
//! anchor with a new issuer below it (new certificates chain to it, old ones
//! still verify through the old anchor kept in the bundle), `retire` drops
//! every anchor but the current one once the old certificates have expired.

use rcgen::{Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use trellis_identity_client::{cert as client_cert, profile};
use trellis_policy::SpiffeId;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const ISSUER_CRT: &str = "issuer.crt";
pub const ISSUER_KEY: &str = "issuer.key";
pub const BUNDLE_CRT: &str = "bundle.crt";
pub const NEXT_CA_CRT: &str = "next-ca.crt";
pub const NEXT_CA_KEY: &str = "next-ca.key";

/// Every name the material may hold.
pub const NAMES: &[&str] = &[
    CA_CRT,
    CA_KEY,
    ISSUER_CRT,
    ISSUER_KEY,
    BUNDLE_CRT,
    NEXT_CA_CRT,
    NEXT_CA_KEY,
];

/// A generated trust anchor lives ten years, an issuer one; the issuer is
/// replaced (when `ca.key` is at hand) once a third of its life is left.
pub const ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{name} is missing")]
    Missing { name: &'static str },
    #[error("{name} is not PEM holding one {what}")]
    Pem {
        name: &'static str,
        what: &'static str,
    },
    #[error("{name} is not a valid X.509 certificate")]
    Certificate { name: &'static str },
    #[error("{name} is not a CA certificate (basicConstraints CA:TRUE)")]
    NotCa { name: &'static str },
    #[error("{name} is not an ECDSA P-256 private key")]
    Key { name: &'static str },
    #[error("{key} does not match the public key of {cert}")]
    KeyMismatch {
        key: &'static str,
        cert: &'static str,
    },
    #[error("issuer.crt is not signed by ca.crt")]
    NotIssuedByAnchor,
    #[error("bundle.crt does not hold ca.crt")]
    AnchorNotInBundle,
    #[error("{name} expired at {at:?}")]
    Expired { name: &'static str, at: SystemTime },
    #[error("a next anchor is already staged; promote or remove it first")]
    AlreadyStaged,
    #[error("no next anchor is staged; add one first")]
    NothingStaged,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The stored form of the CA: file name → content. Its `Debug` lists the
/// names only, never a key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Material {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.files.keys()).finish()
    }
}

impl Material {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    fn need(&self, name: &'static str) -> Result<&[u8], CaError> {
        self.get(name).ok_or(CaError::Missing { name })
    }

    fn set(&mut self, name: &str, content: impl Into<Vec<u8>>) {
        self.files.insert(name.to_string(), content.into());
    }

    /// The anchors of the bundle, in order.
    pub fn bundle(&self) -> Result<Vec<CertificateDer<'static>>, CaError> {
        match self.get(BUNDLE_CRT) {
            Some(pem) => certs(BUNDLE_CRT, pem),
            None => certs(CA_CRT, self.need(CA_CRT)?),
        }
    }
}

fn certs(name: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CaError::Pem {
            name,
            what: "or more certificates",
        })?;
    if certs.is_empty() {
        return Err(CaError::Pem {
            name,
            what: "or more certificates",
        });
    }
    Ok(certs)
}

fn one_cert(material: &Material, name: &'static str) -> Result<CertificateDer<'static>, CaError> {
    let mut all = certs(name, material.need(name)?)?;
    if all.len() != 1 {
        return Err(CaError::Pem {
            name,
            what: "certificate",
        });
    }
    Ok(all.remove(0))
}

fn key(material: &Material, name: &'static str) -> Result<KeyPair, CaError> {
    let pem = std::str::from_utf8(material.need(name)?).map_err(|_| CaError::Key { name })?;
    let key = KeyPair::from_pem(pem).map_err(|_| CaError::Key { name })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CaError::Key { name });
    }
    Ok(key)
}

fn parse<'a>(name: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, CaError> {
    match X509Certificate::from_der(der) {
        Ok(([], x509)) => Ok(x509),
        _ => Err(CaError::Certificate { name }),
    }
}

fn not_after(name: &'static str, der: &CertificateDer<'_>) -> Result<SystemTime, CaError> {
    client_cert::validity(der)
        .map(|(_, after)| after)
        .map_err(|_| CaError::Certificate { name })
}

/// Checks that `cert` is a CA whose public key is `key`'s.
fn check_ca(
    cert_name: &'static str,
    cert: &CertificateDer<'_>,
    key_name: &'static str,
    key: &KeyPair,
) -> Result<(), CaError> {
    let x509 = parse(cert_name, cert)?;
    if !x509.is_ca() {
        return Err(CaError::NotCa { name: cert_name });
    }
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CaError::KeyMismatch {
            key: key_name,
            cert: cert_name,
        });
    }
    Ok(())
}

/// The validated CA, ready to sign.
pub struct Authority {
    bundle: Vec<CertificateDer<'static>>,
    anchor: CertificateDer<'static>,
    issuer_cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: SystemTime,
    anchor_not_after: SystemTime,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("anchors", &self.bundle.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Validates stored material: the issuer is a CA signed by the anchor,
    /// its key matches and it has not expired; the anchor is in the bundle.
    pub fn from_material(material: &Material, now: SystemTime) -> Result<Self, CaError> {
        let anchor = one_cert(material, CA_CRT)?;
        let issuer_cert = one_cert(material, ISSUER_CRT)?;
        let issuer_key = key(material, ISSUER_KEY)?;
        check_ca(ISSUER_CRT, &issuer_cert, ISSUER_KEY, &issuer_key)?;
        if material.get(CA_KEY).is_some() {
            check_ca(CA_CRT, &anchor, CA_KEY, &key(material, CA_KEY)?)?;
        }
        let anchor_x509 = parse(CA_CRT, &anchor)?;
        if !anchor_x509.is_ca() {
            return Err(CaError::NotCa { name: CA_CRT });
        }
        parse(ISSUER_CRT, &issuer_cert)?
            .verify_signature(Some(anchor_x509.public_key()))
            .map_err(|_| CaError::NotIssuedByAnchor)?;
        let bundle = material.bundle()?;
        if !bundle.contains(&anchor) {
            return Err(CaError::AnchorNotInBundle);
        }
        let issuer_not_after = not_after(ISSUER_CRT, &issuer_cert)?;
        if issuer_not_after <= now {
            return Err(CaError::Expired {
                name: ISSUER_CRT,
                at: issuer_not_after,
            });
        }
        let anchor_not_after = not_after(CA_CRT, &anchor)?;
        let issuer = Issuer::from_ca_cert_der(&issuer_cert, issuer_key)
            .map_err(|_| CaError::Certificate { name: ISSUER_CRT })?;
        Ok(Self {
            bundle,
            anchor,
            issuer_cert,
            issuer,
            issuer_not_after,
            anchor_not_after,
        })
    }

    /// The anchors peers must trust.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    pub fn bundle_pem(&self) -> String {
        client_cert::pem_chain(&self.bundle)
    }

    pub fn anchor(&self) -> &CertificateDer<'static> {
        &self.anchor
    }

    pub fn issuer_cert(&self) -> &CertificateDer<'static> {
        &self.issuer_cert
    }

    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    pub fn anchor_not_after(&self) -> SystemTime {
        self.anchor_not_after
    }

    /// A workload certificate for `id` over `key`, valid `lifetime` (cut at
    /// the issuer's own expiry). Returns the chain, leaf first.
    pub fn issue_workload(
        &self,
        id: &SpiffeId,
        key: &impl PublicKeyData,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let end = (now + lifetime).min(self.issuer_not_after);
        let params = profile::workload(id, now, end).map_err(|e| CaError::Sign(e.to_string()))?;
        self.sign(&params, key)
    }

    /// The identity service's own server certificate.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        key: &KeyPair,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let end = (now + lifetime).min(self.issuer_not_after);
        let params =
            profile::server(dns_names, ips, now, end).map_err(|e| CaError::Sign(e.to_string()))?;
        self.sign(&params, key)
    }

    fn sign(
        &self,
        params: &rcgen::CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let leaf = params
            .signed_by(key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(vec![leaf.der().clone(), self.issuer_cert.clone()])
    }
}

fn p256() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))
}

/// A new anchor: (certificate PEM, key PEM, the issuer to sign below it).
fn new_anchor(
    trust_domain: &str,
    now: SystemTime,
) -> Result<(String, String, Issuer<'static, KeyPair>), CaError> {
    let key = p256()?;
    let params = profile::anchor(trust_domain, now, ANCHOR_LIFETIME)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let key_pem = key.serialize_pem();
    Ok((cert.pem(), key_pem, Issuer::new(params, key)))
}

/// An issuer below `anchor`: (certificate PEM, key PEM).
fn new_issuer(
    trust_domain: &str,
    anchor: &Issuer<'_, KeyPair>,
    anchor_not_after: SystemTime,
    now: SystemTime,
) -> Result<(String, String), CaError> {
    let key = p256()?;
    let end = (now + ISSUER_LIFETIME).min(anchor_not_after);
    let params =
        profile::intermediate(trust_domain, now, end).map_err(|e| CaError::Sign(e.to_string()))?;
    let cert = params
        .signed_by(&key, anchor)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The stored anchor as an issuer, for signing a new intermediate.
fn anchor_issuer(
    material: &Material,
    cert: &'static str,
    key_name: &'static str,
) -> Result<(Issuer<'static, KeyPair>, SystemTime), CaError> {
    let der = one_cert(material, cert)?;
    let key = key(material, key_name)?;
    check_ca(cert, &der, key_name, &key)?;
    let until = not_after(cert, &der)?;
    let issuer =
        Issuer::from_ca_cert_der(&der, key).map_err(|_| CaError::Certificate { name: cert })?;
    Ok((issuer, until))
}

/// A new CA: anchor, issuer, bundle of the anchor alone.
pub fn generate(trust_domain: &str, now: SystemTime) -> Result<Material, CaError> {
    let (anchor_pem, anchor_key, anchor) = new_anchor(trust_domain, now)?;
    let (issuer_pem, issuer_key) = new_issuer(trust_domain, &anchor, now + ANCHOR_LIFETIME, now)?;
    let mut m = Material::default();
    m.set(CA_CRT, anchor_pem.clone());
    m.set(CA_KEY, anchor_key);
    m.set(ISSUER_CRT, issuer_pem);
    m.set(ISSUER_KEY, issuer_key);
    m.set(BUNDLE_CRT, anchor_pem);
    Ok(m)
}

/// Rotation, step 1: stage a new anchor and trust it.
pub fn add_anchor(
    material: &Material,
    trust_domain: &str,
    now: SystemTime,
) -> Result<Material, CaError> {
    if material.get(NEXT_CA_CRT).is_some() {
        return Err(CaError::AlreadyStaged);
    }
    let mut bundle = material.bundle()?;
    let (pem, key_pem, _) = new_anchor(trust_domain, now)?;
    bundle.extend(certs(NEXT_CA_CRT, pem.as_bytes())?);
    let mut m = material.clone();
    m.set(NEXT_CA_CRT, pem);
    m.set(NEXT_CA_KEY, key_pem);
    m.set(BUNDLE_CRT, client_cert::pem_chain(&bundle));
    Ok(m)
}

/// Rotation, step 2: issue from the staged anchor (the old one stays trusted).
pub fn promote(
    material: &Material,
    trust_domain: &str,
    now: SystemTime,
) -> Result<Material, CaError> {
    if material.get(NEXT_CA_CRT).is_none() {
        return Err(CaError::NothingStaged);
    }
    let bundle = material.bundle()?;
    let (anchor, until) = anchor_issuer(material, NEXT_CA_CRT, NEXT_CA_KEY)?;
    let (issuer_pem, issuer_key) = new_issuer(trust_domain, &anchor, until, now)?;
    let mut m = material.clone();
    let next_crt = m.files.remove(NEXT_CA_CRT).unwrap_or_default();
    let next_key = m.files.remove(NEXT_CA_KEY).unwrap_or_default();
    m.set(CA_CRT, next_crt);
    m.set(CA_KEY, next_key);
    m.set(ISSUER_CRT, issuer_pem);
    m.set(ISSUER_KEY, issuer_key);
    m.set(BUNDLE_CRT, client_cert::pem_chain(&bundle));
    Ok(m)
}

/// Rotation, step 3: trust only the current anchor (and a staged one).
pub fn retire(material: &Material) -> Result<Material, CaError> {
    let mut keep = vec![one_cert(material, CA_CRT)?];
    if material.get(NEXT_CA_CRT).is_some() {
        keep.push(one_cert(material, NEXT_CA_CRT)?);
    }
    let mut m = material.clone();
    m.set(BUNDLE_CRT, client_cert::pem_chain(&keep));
    Ok(m)
}

/// A new issuer below the same anchor when there is none yet (an operator
/// brought only `ca.crt` and `ca.key`) or less than a third of the current
/// one's life is left, provided the anchor key is at hand.
pub fn renew_issuer(
    material: &Material,
    trust_domain: &str,
    now: SystemTime,
) -> Result<Option<Material>, CaError> {
    if material.get(CA_KEY).is_none() {
        return Ok(None);
    }
    let current = match (material.get(ISSUER_CRT), material.get(ISSUER_KEY)) {
        (Some(_), Some(_)) => Some(one_cert(material, ISSUER_CRT)?),
        _ => None,
    };
    let (anchor, anchor_until) = anchor_issuer(material, CA_CRT, CA_KEY)?;
    if let Some(issuer) = current {
        let (from, until) = client_cert::validity(&issuer)
            .map_err(|_| CaError::Certificate { name: ISSUER_CRT })?;
        let life = until.duration_since(from).unwrap_or_default();
        let left = until.duration_since(now).unwrap_or_default();
        if left > life / 3 || anchor_until <= until {
            // Not due, or a new issuer would not outlive this one (only a
            // new anchor helps then).
            return Ok(None);
        }
    }
    let (issuer_pem, issuer_key) = new_issuer(trust_domain, &anchor, anchor_until, now)?;
    let mut m = material.clone();
    m.set(ISSUER_CRT, issuer_pem);
    m.set(ISSUER_KEY, issuer_key);
    Ok(Some(m))
}

#[cfg(test)]
mod tests;
