//! `Identity.Certify` over real TLS on loopback, called with the proxy's
//! client library: what is issued, what is refused and with which code.

mod support;

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use std::time::Duration;
use support::{NAME, Sandbox, admin_get, code, id, settings};
use tonic::Code;
use trellis_identity::metrics::Refusal;
use trellis_identity_client::cert::{spiffe_id, validity};
use trellis_identity_client::{CertifyError, KeyRequest};
use x509_parser::prelude::{FromDer, X509Certificate};

#[tokio::test]
async fn a_caller_gets_its_own_spiffe_id_for_its_key() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");
    let me = id("shop", "web");
    let request = KeyRequest::generate(&me).unwrap();
    let chain = sandbox
        .certify(&server, "tok-web", request.csr_der().to_vec())
        .await
        .unwrap();
    assert_eq!(spiffe_id(&chain[0]).unwrap(), me);
    let (_, not_after) = validity(&chain[0]).unwrap();
    let left = not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600));
    // The chain verifies against the published bundle and carries our key.
    let cert = request.certificate(chain, &me, &sandbox.bundle()).unwrap();
    assert_eq!(cert.id(), &me);
    assert_eq!(server.metrics().issued_count(), 1);
}

#[tokio::test]
async fn the_subject_and_other_names_of_a_csr_are_ignored() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["admin.example".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "root");
    let csr = params.serialize_request(&key).unwrap();
    let chain = sandbox
        .certify(&server, "tok-web", csr.der().to_vec())
        .await
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(leaf.subject().iter().count(), 0, "empty subject");
    let names = &leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names.len(), 1);
    assert_eq!(spiffe_id(&chain[0]).unwrap(), id("shop", "web"));
}

#[tokio::test]
async fn a_csr_for_another_identity_is_permission_denied() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");
    let request = KeyRequest::generate(&id("shop", "payments")).unwrap();
    let result = sandbox
        .certify(&server, "tok-web", request.csr_der().to_vec())
        .await;
    assert_eq!(code(&result), Code::PermissionDenied);
    assert_eq!(server.metrics().refused_count(Refusal::PermissionDenied), 1);
    assert_eq!(server.metrics().issued_count(), 0);
}

#[tokio::test]
async fn expired_and_unknown_tokens_are_unauthenticated() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    sandbox.token_until("tok-old", "shop", "web", past);
    let csr = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    let expired = sandbox.certify(&server, "tok-old", csr.clone()).await;
    assert_eq!(code(&expired), Code::Unauthenticated);
    assert!(
        matches!(&expired, Err(CertifyError::Refused { message, .. }) if message.contains("expired"))
    );
    let unknown = sandbox.certify(&server, "tok-nobody", csr).await;
    assert_eq!(code(&unknown), Code::Unauthenticated);
    assert_eq!(server.metrics().refused_count(Refusal::Unauthenticated), 2);
}

#[tokio::test]
async fn garbage_forged_and_foreign_key_csrs_are_invalid_arguments() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");

    let garbage = sandbox
        .certify(&server, "tok-web", b"not a csr".to_vec())
        .await;
    assert_eq!(code(&garbage), Code::InvalidArgument);

    let mut forged = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let forged = sandbox.certify(&server, "tok-web", forged).await;
    assert_eq!(code(&forged), Code::InvalidArgument);
    assert!(
        matches!(&forged, Err(CertifyError::Refused { message, .. }) if message.contains("signature"))
    );

    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&p384)
        .unwrap();
    let p384 = sandbox
        .certify(&server, "tok-web", csr.der().to_vec())
        .await;
    assert_eq!(code(&p384), Code::InvalidArgument);
    assert!(
        matches!(&p384, Err(CertifyError::Refused { message, .. }) if message.contains("P-256"))
    );

    assert_eq!(server.metrics().refused_count(Refusal::InvalidCsr), 3);
}

#[tokio::test]
async fn each_caller_is_rate_limited() {
    let sandbox = Sandbox::new();
    let mut s = settings();
    s.rate_burst = 2;
    s.rate_refill = Duration::from_secs(3600);
    let server = sandbox.start(s).await;
    sandbox.token("tok-web", "shop", "web");
    for _ in 0..2 {
        let csr = KeyRequest::generate(&id("shop", "web"))
            .unwrap()
            .csr_der()
            .to_vec();
        sandbox.certify(&server, "tok-web", csr).await.unwrap();
    }
    let csr = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    let third = sandbox.certify(&server, "tok-web", csr).await;
    assert_eq!(code(&third), Code::ResourceExhausted);
    assert_eq!(server.metrics().refused_count(Refusal::RateLimited), 1);
}

#[tokio::test]
async fn the_service_is_verified_by_dns_name_and_by_address() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");
    for name in [NAME, "127.0.0.1"] {
        let csr = KeyRequest::generate(&id("shop", "web"))
            .unwrap()
            .csr_der()
            .to_vec();
        sandbox
            .certify_as(&server, name, "tok-web", csr)
            .await
            .unwrap();
    }
    let csr = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    let wrong = sandbox
        .certify_as(&server, "elsewhere.test", "tok-web", csr)
        .await;
    assert!(
        matches!(wrong, Err(CertifyError::Connect { .. })),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn metrics_show_issuance_refusals_and_ca_expiry() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("tok-web", "shop", "web");
    let csr = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    sandbox
        .certify(&server, "tok-web", csr.clone())
        .await
        .unwrap();
    let _ = sandbox.certify(&server, "tok-nobody", csr).await;
    let metrics = admin_get(&server, "/metrics").await;
    assert!(
        metrics.contains("trellis_identity_certificates_issued_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("trellis_identity_certificates_refused_total{reason=\"unauthenticated\"} 1"),
        "{metrics}"
    );
    let issuer = server.authority().issuer_not_after();
    let secs = issuer
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metrics.contains(&format!(
            "trellis_identity_ca_expiry_timestamp_seconds{{certificate=\"issuer\"}} {secs}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_identity_trust_anchors 1"),
        "{metrics}"
    );
    assert!(admin_get(&server, "/ready").await.ends_with("ready\n"));
}
