use super::*;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::UnixTime;
use trellis_identity_client::TrustBundle;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", ns, sa)
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Does `chain` verify against the anchors of `material`'s bundle at `at`?
fn verifies(chain: &[CertificateDer<'static>], material: &Material, at: SystemTime) -> bool {
    let bundle = TrustBundle::from_der(material.bundle().unwrap()).unwrap();
    let parsed = rustls::server::ParsedCertificate::try_from(&chain[0]).unwrap();
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        bundle.roots(),
        &chain[1..],
        UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        trellis_identity_client::provider()
            .signature_verification_algorithms
            .all,
    )
    .is_ok()
}

fn leaf(material: &Material, who: &SpiffeId) -> Vec<CertificateDer<'static>> {
    let authority = Authority::from_material(material, now()).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    authority.issue_workload(who, &key, DAY, now()).unwrap()
}

#[test]
fn a_generated_ca_issues_a_spiffe_leaf_for_the_given_key() {
    let material = generate("cluster.local", now()).unwrap();
    let authority = Authority::from_material(&material, now()).unwrap();
    assert_eq!(authority.bundle().len(), 1);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let chain = authority
        .issue_workload(&id("shop", "web"), &key, DAY, now())
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and issuer");
    assert!(verifies(&chain, &material, now()));
    assert_eq!(
        client_cert::spiffe_id(&chain[0]).unwrap(),
        id("shop", "web")
    );
    let (_, x509) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(
        x509.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    assert!(!x509.is_ca());
    let san = x509.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names.len(),
        1,
        "the SPIFFE id is the only SAN"
    );
    assert!(san.critical, "SAN is critical with an empty subject");
    let (from, until) = client_cert::validity(&chain[0]).unwrap();
    assert_eq!(until.duration_since(from).unwrap(), DAY + profile::BACKDATE);
}

#[test]
fn a_leaf_never_outlives_its_issuer() {
    let material = generate("cluster.local", now()).unwrap();
    let authority = Authority::from_material(&material, now()).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let chain = authority
        .issue_workload(&id("shop", "web"), &key, 2 * ISSUER_LIFETIME, now())
        .unwrap();
    let (_, until) = client_cert::validity(&chain[0]).unwrap();
    assert!(until <= authority.issuer_not_after());
}

#[test]
fn rotation_adds_promotes_and_retires_an_anchor() {
    let start = generate("cluster.local", now()).unwrap();
    let old_leaf = leaf(&start, &id("shop", "web"));

    let added = add_anchor(&start, "cluster.local", now()).unwrap();
    assert_eq!(added.bundle().unwrap().len(), 2);
    assert_eq!(
        added.get(ISSUER_CRT),
        start.get(ISSUER_CRT),
        "still issuing from the old anchor"
    );
    assert!(matches!(
        add_anchor(&added, "cluster.local", now()),
        Err(CaError::AlreadyStaged)
    ));

    let promoted = promote(&added, "cluster.local", now()).unwrap();
    assert_eq!(promoted.get(CA_CRT), added.get(NEXT_CA_CRT));
    assert!(promoted.get(NEXT_CA_CRT).is_none());
    let authority = Authority::from_material(&promoted, now()).unwrap();
    assert_eq!(authority.bundle().len(), 2);
    let new_leaf = leaf(&promoted, &id("shop", "web"));
    assert!(
        verifies(&new_leaf, &promoted, now()),
        "new certificates verify"
    );
    assert!(
        verifies(&old_leaf, &promoted, now()),
        "old certificates still verify"
    );
    assert!(
        !verifies(&new_leaf, &start, now()),
        "new certificates chain to the new anchor"
    );

    let only_new = retire(&promoted).unwrap();
    assert_eq!(only_new.bundle().unwrap().len(), 1);
    Authority::from_material(&only_new, now()).unwrap();
    assert!(verifies(&new_leaf, &only_new, now()));
    assert!(
        !verifies(&old_leaf, &only_new, now()),
        "the retired anchor is gone"
    );
    assert!(matches!(
        promote(&only_new, "cluster.local", now()),
        Err(CaError::NothingStaged)
    ));
}

#[test]
fn stored_material_is_validated_and_errors_name_the_file() {
    let good = generate("cluster.local", now()).unwrap();
    let other = generate("cluster.local", now()).unwrap();
    let with = |name: &str, content: Option<&[u8]>| {
        let mut m = good.clone();
        match content {
            Some(c) => m.set(name, c.to_vec()),
            None => {
                m.files.remove(name);
            }
        }
        Authority::from_material(&m, now()).unwrap_err().to_string()
    };
    assert_eq!(with(ISSUER_KEY, None), "issuer.key is missing");
    assert_eq!(
        with(CA_CRT, Some(b"garbage")),
        "ca.crt is not PEM holding one or more certificates"
    );
    assert_eq!(
        with(ISSUER_KEY, other.get(ISSUER_KEY)),
        "issuer.key does not match the public key of issuer.crt"
    );
    assert_eq!(
        with(CA_KEY, other.get(CA_KEY)),
        "ca.key does not match the public key of ca.crt"
    );
    let mut foreign = good.clone();
    foreign.set(ISSUER_CRT, other.get(ISSUER_CRT).unwrap().to_vec());
    foreign.set(ISSUER_KEY, other.get(ISSUER_KEY).unwrap().to_vec());
    assert_eq!(
        Authority::from_material(&foreign, now())
            .unwrap_err()
            .to_string(),
        "issuer.crt is not signed by ca.crt"
    );
    assert_eq!(
        with(BUNDLE_CRT, other.get(CA_CRT)),
        "bundle.crt does not hold ca.crt"
    );
    let mut both = good.get(ISSUER_CRT).unwrap().to_vec();
    both.extend_from_slice(good.get(CA_CRT).unwrap());
    assert_eq!(
        with(ISSUER_CRT, Some(&both)),
        "issuer.crt is not PEM holding one certificate"
    );
    let later = now() + 2 * ISSUER_LIFETIME;
    assert!(matches!(
        Authority::from_material(&good, later),
        Err(CaError::Expired {
            name: ISSUER_CRT,
            ..
        })
    ));
    // A leaf is not a CA.
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let authority = Authority::from_material(&good, now()).unwrap();
    let server = authority
        .issue_server(&["x.example".into()], &[], &leaf_key, DAY, now())
        .unwrap();
    let mut not_ca = good.clone();
    not_ca.set(ISSUER_CRT, client_cert::pem_chain(&server[..1]));
    not_ca.set(ISSUER_KEY, leaf_key.serialize_pem());
    assert_eq!(
        Authority::from_material(&not_ca, now())
            .unwrap_err()
            .to_string(),
        "issuer.crt is not a CA certificate (basicConstraints CA:TRUE)"
    );
}

#[test]
fn an_anchor_key_kept_offline_is_fine() {
    let mut material = generate("cluster.local", now()).unwrap();
    material.files.remove(CA_KEY);
    material.files.remove(BUNDLE_CRT);
    let authority = Authority::from_material(&material, now()).unwrap();
    assert_eq!(authority.bundle(), &[authority.anchor().clone()]);
    assert!(
        renew_issuer(
            &material,
            "cluster.local",
            now() + ISSUER_LIFETIME.mul_f64(0.9)
        )
        .unwrap()
        .is_none(),
        "without the anchor key the issuer cannot be renewed"
    );
}

#[test]
fn the_issuer_is_renewed_when_a_third_of_its_life_is_left() {
    let material = generate("cluster.local", now()).unwrap();
    assert!(
        renew_issuer(&material, "cluster.local", now())
            .unwrap()
            .is_none()
    );
    let late = now() + ISSUER_LIFETIME.mul_f64(0.7);
    let renewed = renew_issuer(&material, "cluster.local", late)
        .unwrap()
        .expect("due");
    assert_ne!(renewed.get(ISSUER_CRT), material.get(ISSUER_CRT));
    assert_eq!(renewed.get(CA_CRT), material.get(CA_CRT), "same trust root");
    let authority = Authority::from_material(&renewed, now()).unwrap();
    assert!(
        authority.issuer_not_after()
            > Authority::from_material(&material, now())
                .unwrap()
                .issuer_not_after()
    );
}

#[test]
fn debug_output_names_files_and_never_shows_keys() {
    let material = generate("cluster.local", now()).unwrap();
    let shown = format!("{material:?}");
    assert!(shown.contains("issuer.key"));
    assert!(!shown.contains("PRIVATE KEY"));
    let authority = Authority::from_material(&material, now()).unwrap();
    assert!(!format!("{authority:?}").contains("PRIVATE"));
}

#[test]
fn an_anchor_brought_without_an_issuer_gets_one() {
    let generated = generate("cluster.local", now()).unwrap();
    let mut brought = Material::default();
    brought.set(CA_CRT, generated.get(CA_CRT).unwrap().to_vec());
    brought.set(CA_KEY, generated.get(CA_KEY).unwrap().to_vec());
    assert!(matches!(
        Authority::from_material(&brought, now()),
        Err(CaError::Missing { name: ISSUER_CRT })
    ));
    let completed = renew_issuer(&brought, "cluster.local", now())
        .unwrap()
        .expect("an issuer is made");
    let authority = Authority::from_material(&completed, now()).unwrap();
    assert_eq!(
        authority.anchor().as_ref(),
        certs(CA_CRT, generated.get(CA_CRT).unwrap()).unwrap()[0].as_ref()
    );
    assert_eq!(authority.bundle().len(), 1);
}
