//! Tier 1: the webhook over real HTTPS on loopback, and the certificate /
//! caBundle sync against the mock API server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use trellis_api::contract;
use trellis_injector::{InjectConfig, server, sync, tls};
use trellis_mock_apiserver::MockApi;

fn config() -> InjectConfig {
    serde_saphyr::from_str(
        "proxyImage: ghcr.io/trellis-mesh/trellis-proxy:0.1.0\n\
         cniEnabled: false\n\
         controllerAddr: trellis-controller.trellis.svc.cluster.local:8090\n\
         identityAddr: trellis-identity.trellis.svc.cluster.local:8083\n\
         identityName: trellis-identity.trellis.svc\n\
         trustBundle: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"\n",
    )
    .unwrap()
}

fn names() -> Vec<String> {
    tls::dns_names("trellis-injector", "trellis", "cluster.local")
}

/// POSTs `body` to the webhook over TLS, trusting only `ca_pem`.
async fn post(addr: std::net::SocketAddr, ca_pem: &str, body: Vec<u8>) -> (u16, Value) {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("trellis-injector.trellis.svc").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!(
        "https://trellis-injector.trellis.svc{}?timeout=10s",
        server::INJECT_PATH
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(body)))
    .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn start_webhook() -> (std::net::SocketAddr, tls::Material) {
    let material = tls::generate(&names(), OffsetDateTime::now_utc()).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(tls::server_config(&material).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _tx = _tx;
        let (_cfg_tx, cfg_rx) = tokio::sync::watch::channel(Arc::new(config()));
        server::serve(listener, rx, server::router(cfg_rx)).await
    });
    (addr, material)
}

fn review(uid: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn https_review_returns_a_patch_that_applies() {
    let (addr, material) = start_webhook().await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "registry.example/migrate:1"}],
            "containers": [{"name": "web", "image": "registry.example/web:1"}]
        }
    });
    let (status, out) = post(addr, &material.ca_pem, review("a1b2", &pod)).await;
    assert_eq!(status, 200);
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let resp = &out["response"];
    assert_eq!(resp["uid"], "a1b2");
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let p: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &p).unwrap();
    let patched: Pod = serde_json::from_value(doc.clone()).unwrap();
    let inits: Vec<&str> = patched
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        [
            contract::INIT_CONTAINER_NAME,
            contract::PROXY_CONTAINER_NAME,
            "migrate"
        ]
    );
    assert_eq!(
        doc["metadata"]["annotations"][contract::key::INJECTED],
        "true"
    );

    // The patched pod, reviewed again (reinvocation), is left as it is.
    let (_, again) = post(addr, &material.ca_pem, review("a1b3", &doc)).await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"]["patch"].is_null());

    // Garbage still gets an AdmissionReview, not a bare HTTP error.
    let (status, bad) = post(addr, &material.ca_pem, b"{not json".to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(bad["response"]["allowed"], false);
    assert!(
        bad["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an admission.k8s.io/v1 AdmissionReview")
    );
}

fn webhook_config(ca_bundle: Option<&str>) -> Value {
    let mut hook = json!({
        "name": "inject.trellis.io",
        "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"service": {"name": "trellis-injector", "namespace": "trellis", "path": "/inject", "port": 443}},
    });
    if let Some(ca) = ca_bundle {
        hook["clientConfig"]["caBundle"] = json!(ca);
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "trellis-injector"},
        "webhooks": [hook],
    })
}

fn target() -> sync::Target {
    sync::Target {
        namespace: "trellis".into(),
        secret: "trellis-injector-tls".into(),
        webhook_config: "trellis-injector".into(),
        dns_names: names(),
    }
}

fn ca_bundle_of(api: &MockApi) -> String {
    use base64::Engine as _;
    let mwc = api
        .object(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            "trellis-injector",
        )
        .unwrap();
    let b64 = mwc["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn replicas_share_one_certificate_and_keep_the_ca_bundle_current() {
    let api = MockApi::start([webhook_config(None)]).await;
    let client = api.client();
    let t = target();
    let now = OffsetDateTime::now_utc();

    let first = sync::ensure_material(&client, &t, now).await.unwrap();
    let second = sync::ensure_material(&client, &t, now).await.unwrap();
    assert_eq!(
        first, second,
        "a second replica must reuse the stored certificate"
    );
    let secret = api
        .object("v1", "Secret", Some("trellis"), "trellis-injector-tls")
        .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");

    assert!(
        sync::sync_ca_bundle(&client, &t, &first.ca_pem)
            .await
            .unwrap()
    );
    assert_eq!(ca_bundle_of(&api), first.ca_pem);
    assert!(
        !sync::sync_ca_bundle(&client, &t, &first.ca_pem)
            .await
            .unwrap(),
        "nothing to change"
    );
    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0]
            .content_type
            .starts_with("application/json-patch+json")
    );

    // A Helm upgrade re-applies the configuration without a caBundle: repaired.
    api.put(webhook_config(None));
    assert!(
        sync::sync_ca_bundle(&client, &t, &first.ca_pem)
            .await
            .unwrap()
    );
    assert_eq!(ca_bundle_of(&api), first.ca_pem);

    // Close to expiry: a new certificate, and the bundle keeps the old CA
    // for replicas still serving the old one.
    let later = now + tls::VALIDITY - Duration::days(10);
    let renewed = sync::ensure_material(&client, &t, later).await.unwrap();
    assert_ne!(renewed.cert_pem, first.cert_pem);
    assert!(
        renewed.ca_pem.ends_with(&first.ca_pem),
        "the old CA stays trusted"
    );
    assert!(
        sync::sync_ca_bundle(&client, &t, &renewed.ca_pem)
            .await
            .unwrap()
    );
    assert_eq!(ca_bundle_of(&api), renewed.ca_pem);
}

#[tokio::test]
async fn a_missing_webhook_configuration_is_a_clear_error() {
    let api = MockApi::start([]).await;
    let err = sync::sync_ca_bundle(&api.client(), &target(), "pem")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("mutatingwebhookconfiguration trellis-injector"),
        "{err}"
    );
}
