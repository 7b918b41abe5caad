//! Renewal on tokio's paused clock, with an in-process CA as the certifier.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::sleep;

use super::id;
use crate::cert::CertError;
use crate::testing::{TestCa, TestCertifier};
use crate::tls::BundleWatch;
use crate::{Identity, KeyRequest, Renewal, TlsMetrics};

const LIFETIME: Duration = Duration::from_secs(1000);

fn start(ca: &Arc<TestCa>) -> (Identity, TestCertifier, TlsMetrics) {
    let (_tx, bundle) = watch::channel(Some(Arc::new(ca.bundle())));
    start_with(ca, bundle)
}

/// An identity renewing through `ca` with the trust bundle `bundle`; its
/// renewal task first runs at the test's next await.
fn start_with(ca: &Arc<TestCa>, bundle: BundleWatch) -> (Identity, TestCertifier, TlsMetrics) {
    let me = id("shop", "web");
    let certifier = TestCertifier::new(ca.clone(), me.clone(), LIFETIME);
    let metrics = TlsMetrics::default();
    let identity = Identity::with_certifier(
        me,
        bundle,
        certifier.clone(),
        Renewal::default(),
        metrics.clone(),
    );
    (identity, certifier, metrics)
}

#[tokio::test(start_paused = true)]
async fn the_first_certificate_makes_the_identity_ready() {
    let ca = Arc::new(TestCa::new("cluster.local"));
    let (identity, certifier, metrics) = start(&ca);
    let cert = identity.ready().await.unwrap();
    assert!(identity.is_ready());
    assert_eq!(cert.id(), &id("shop", "web"));
    assert_eq!(certifier.requests(), 1);
    let not_after = cert
        .not_after()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(metrics.expiry(), i64::try_from(not_after).unwrap());
}

#[tokio::test(start_paused = true)]
async fn renews_at_seventy_percent_of_life_within_the_jitter() {
    let ca = Arc::new(TestCa::new("cluster.local"));
    let (identity, certifier, _) = start(&ca);
    let first = identity.ready().await.unwrap();
    let (earliest, latest) = (LIFETIME.mul_f64(0.65), LIFETIME.mul_f64(0.75));

    sleep(earliest - Duration::from_secs(1)).await;
    assert_eq!(certifier.requests(), 1, "renewed before 65 % of its life");
    sleep(latest - earliest + Duration::from_secs(2)).await;
    assert_eq!(certifier.requests(), 2, "not renewed by 75 % of its life");
    let second = identity.current().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_ne!(first.chain()[0], second.chain()[0]);
}

#[tokio::test(start_paused = true)]
async fn keeps_the_certificate_until_expiry_while_identity_is_unreachable() {
    let ca = Arc::new(TestCa::new("cluster.local"));
    let (identity, certifier, metrics) = start(&ca);
    let first = identity.ready().await.unwrap();
    certifier.set_unreachable(true);

    // Past the renewal point: the requests fail, the certificate stays.
    sleep(LIFETIME.mul_f64(0.9)).await;
    let retries = certifier.requests();
    assert!(retries > 3, "only {retries} requests while unreachable");
    assert!(Arc::ptr_eq(&first, &identity.current().unwrap()));

    // Past expiry: nothing is better than a certificate every peer refuses.
    sleep(LIFETIME.mul_f64(0.2)).await;
    assert!(identity.current().is_none());
    assert_eq!(metrics.expiry(), 0);
    let more = certifier.requests();
    assert!(more > retries, "retries stopped");

    // Back: within the longest backoff a new certificate arrives.
    certifier.set_unreachable(false);
    sleep(Renewal::default().max_backoff + Duration::from_secs(1)).await;
    let back = identity.current().expect("renewed once reachable");
    assert!(!Arc::ptr_eq(&first, &back));
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_and_is_capped() {
    let ca = Arc::new(TestCa::new("cluster.local"));
    let (identity, certifier, _) = start(&ca);
    certifier.set_unreachable(true);
    // Delays 1, 2, 4, 8, 16, 32, 60, 60 … s, each shortened by up to 25 %:
    // in ten minutes, 15 requests (no delay shortened) to 19 (all by 25 %).
    sleep(Duration::from_secs(600)).await;
    let n = certifier.requests();
    assert!((15..=19).contains(&n), "{n} requests in ten minutes");
    assert!(!identity.is_ready());
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_trust_bundle_before_asking() {
    let ca = Arc::new(TestCa::new("cluster.local"));
    let (tx, bundle) = watch::channel(None);
    let (identity, certifier, _) = start_with(&ca, bundle);
    sleep(Duration::from_secs(30)).await;
    assert_eq!(certifier.requests(), 0);
    tx.send_replace(Some(Arc::new(ca.bundle())));
    identity.ready().await.unwrap();
    assert_eq!(certifier.requests(), 1);
}

#[test]
fn an_issued_chain_is_checked_before_use() {
    let ca = TestCa::new("cluster.local");
    let me = id("shop", "web");

    let request = KeyRequest::generate(&me).unwrap();
    let chain = ca.sign_csr(request.csr_der(), &id("shop", "other"), LIFETIME);
    assert!(matches!(
        request.certificate(chain, &me, &ca.bundle()),
        Err(CertError::WrongIdentity { .. })
    ));

    let request = KeyRequest::generate(&me).unwrap();
    let stranger = TestCa::new("cluster.local");
    let chain = stranger.sign_csr(request.csr_der(), &me, LIFETIME);
    assert!(matches!(
        request.certificate(chain, &me, &ca.bundle()),
        Err(CertError::Untrusted(_))
    ));

    let request = KeyRequest::generate(&me).unwrap();
    let other_key = KeyRequest::generate(&me).unwrap();
    let chain = ca.sign_csr(other_key.csr_der(), &me, LIFETIME);
    assert!(matches!(
        request.certificate(chain, &me, &ca.bundle()),
        Err(CertError::KeyMismatch(_))
    ));

    let request = KeyRequest::generate(&me).unwrap();
    assert!(matches!(
        request.certificate(Vec::new(), &me, &ca.bundle()),
        Err(CertError::EmptyChain)
    ));
}
