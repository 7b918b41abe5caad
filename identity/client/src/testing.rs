//! An in-process CA issuing real certificates of the mesh profile, for tests
//! that need mTLS without running `trellis-identity` (this crate's own, and
//! the proxy's with the `test-ca` feature).

use rcgen::{CertificateParams, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use trellis_policy::SpiffeId;

use crate::certify::{CertifyError, CertifyFuture};
use crate::{Certificate, Certifier, KeyRequest, TrustBundle, profile};

/// A trust anchor and an issuing intermediate, in memory.
#[derive(Debug)]
pub struct TestCa {
    anchor: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    issuer_cert: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(trust_domain: &str) -> Self {
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        let anchor_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let anchor_params = profile::anchor(trust_domain, now, 10 * year).expect("anchor");
        let anchor = anchor_params.self_signed(&anchor_key).expect("anchor");
        let anchor_issuer = Issuer::new(anchor_params, anchor_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let params = profile::intermediate(trust_domain, now, now + year).expect("issuer");
        let issuer_cert = params.signed_by(&key, &anchor_issuer).expect("issuer");
        Self {
            anchor: anchor.der().clone(),
            issuer: Issuer::new(params, key),
            issuer_cert: issuer_cert.der().clone(),
        }
    }

    pub fn anchor(&self) -> &CertificateDer<'static> {
        &self.anchor
    }

    /// A bundle of this CA's anchor alone.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_der(vec![self.anchor.clone()]).expect("anchor parses")
    }

    /// Signs a chain (leaf, intermediate) for `params` over `key`'s public key.
    pub fn sign(
        &self,
        params: &CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> Vec<CertificateDer<'static>> {
        let leaf = params.signed_by(key, &self.issuer).expect("signing");
        vec![leaf.der().clone(), self.issuer_cert.clone()]
    }

    /// Signs a chain for the public key of `csr_der`, naming `id`.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Vec<CertificateDer<'static>> {
        let key = rcgen::CertificateSigningRequestParams::from_der(&csr_der.into())
            .expect("a CSR of KeyRequest")
            .public_key;
        let now = SystemTime::now();
        let params = profile::workload(id, now, now + lifetime).expect("workload profile");
        self.sign(&params, &key)
    }

    /// A workload certificate with its key, issued now.
    pub fn certificate(&self, id: &SpiffeId, lifetime: Duration) -> Certificate {
        let request = KeyRequest::generate(id).expect("key");
        let chain = self.sign_csr(request.csr_der(), id, lifetime);
        request
            .certificate(chain, id, &self.bundle())
            .expect("a certificate of this CA")
    }
}

/// A [`Certifier`] backed by a [`TestCa`] that counts requests and can be
/// switched off to play an unreachable identity service.
#[derive(Clone, Debug)]
pub struct TestCertifier {
    pub ca: Arc<TestCa>,
    pub id: SpiffeId,
    pub lifetime: Duration,
    pub requests: Arc<AtomicUsize>,
    pub unreachable: Arc<AtomicBool>,
}

impl TestCertifier {
    pub fn new(ca: Arc<TestCa>, id: SpiffeId, lifetime: Duration) -> Self {
        Self {
            ca,
            id,
            lifetime,
            requests: Arc::default(),
            unreachable: Arc::default(),
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }
}

impl Certifier for TestCertifier {
    fn certify<'a>(&'a self, csr_der: Vec<u8>, _bundle: &'a TrustBundle) -> CertifyFuture<'a> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            if self.unreachable.load(Ordering::SeqCst) {
                return Err(CertifyError::Connect {
                    addr: "test".into(),
                    reason: "connection refused".into(),
                });
            }
            Ok(self.ca.sign_csr(&csr_der, &self.id, self.lifetime))
        })
    }
}
