//! `trellisctl check` against recorded cluster states served by the mock API server.

use super::*;
use pretty_assertions::assert_eq;
use trellis_mock_apiserver::MockApi;

fn recorded(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/check/{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// What the injector answers through the API server's service proxy.
fn injector_answer(patch: bool) -> String {
    let mut resp = json!({"uid": "trellisctl-check", "allowed": true, "status": {}});
    if patch {
        resp["patch"] = json!("W10=");
        resp["patchType"] = json!("JSONPatch");
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
        .to_string()
}

const WEBHOOK: &str = "/api/v1/namespaces/trellis/services/https:trellis-injector:443/proxy/inject";

fn lines(outcomes: &[Outcome]) -> Vec<String> {
    outcomes.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_healthy_mesh_passes_every_check() {
    let api = MockApi::start_with_version(recorded("healthy"), "v1.34.2").await;
    api.proxy(WEBHOOK, 200, &injector_answer(true));
    for pod in ["trellis-identity-7f9c-1", "trellis-identity-7f9c-2"] {
        api.proxy(
            &format!("/api/v1/namespaces/trellis/pods/{pod}:9983/proxy/ready"),
            200,
            "ok",
        );
    }
    let out = check(&api.client(), "trellis", false).await;
    assert_eq!(
        lines(&out),
        [
            "✓ Kubernetes version: v1.34.2 (supported: v1.31–v1.36)",
            "✓ CRDs present and served: 7 of 7",
            "✓ trellis-controller ready: 2/2 replicas",
            "✓ trellis-identity ready: 2/2 replicas",
            "✓ trellis-injector ready: 2/2 replicas",
            "✓ webhook caBundle matches its certificate: 1 webhook(s)",
            "✓ webhook reachable and injecting: a test pod gets the sidecar",
            "✓ identity issuing: 2 of 2 replicas ready, 1 trust anchor(s)",
            "✓ CNI installed on every node: 3 of 3 nodes",
            "✓ proxies in sync: 3 meshed pod(s), all ready on ghcr.io/trellis-mesh/trellis-proxy:0.1.0",
        ]
    );
    // The webhook got a real AdmissionReview through the service proxy.
    let sent = api
        .requests()
        .into_iter()
        .find(|r| r.path == WEBHOOK)
        .unwrap();
    let review: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["request"]["operation"], "CREATE");
}

#[tokio::test]
async fn a_degraded_mesh_names_what_is_wrong() {
    let api = MockApi::start_with_version(recorded("degraded"), "v1.30.4").await;
    api.proxy(WEBHOOK, 200, &injector_answer(false));
    let out = check(&api.client(), "trellis", false).await;
    let text = lines(&out).join("\n");
    for expected in [
        "✗ Kubernetes version: v1.30.4 is not supported (v1.31–v1.36)",
        "✗ CRDs present and served: httproutes.gateway.networking.k8s.io is older than Gateway API v1.6; grpcroutes.gateway.networking.k8s.io missing",
        "✓ trellis-controller ready: 2/2 replicas",
        "✗ trellis-identity ready: 0/2 replicas ready",
        "✗ webhook caBundle matches its certificate: caBundle of inject.trellis.io differs from ca.crt",
        "✗ webhook reachable and injecting: the injector allowed a test pod without a sidecar",
        "✗ CNI installed on every node: not ready on node-c",
        "✗ proxies in sync: shop/orders-0: proxy not ready; shop/web-5d8f-2: reaches the controller in plaintext, but it requires mTLS (restart it)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let identity = out.iter().find(|o| o.name == "identity issuing").unwrap();
    assert!(
        !identity.ok && identity.detail.starts_with("no identity pod is ready"),
        "{identity}"
    );
}

#[tokio::test]
async fn pre_install_checks_the_version_and_existing_gateway_api() {
    let api = MockApi::start_with_version(recorded("degraded"), "v1.36.0").await;
    let out = check(&api.client(), "trellis", true).await;
    assert_eq!(
        lines(&out),
        [
            "✓ Kubernetes version: v1.36.0 (supported: v1.31–v1.36)",
            "✗ Gateway API CRDs: v1.2 installed; Trellis needs v1.6 or later",
        ]
    );
    let empty = MockApi::start_with_version([], "v1.31.0").await;
    let out = check(&empty.client(), "trellis", true).await;
    assert!(out.iter().all(|o| o.ok), "{:#?}", lines(&out));
    assert_eq!(out[1].detail, "not installed; the chart installs v1.6.1");
}

#[tokio::test]
async fn nothing_installed_fails_with_hints() {
    let api = MockApi::start([]).await;
    let out = check(&api.client(), "trellis", false).await;
    assert!(out[1..].iter().all(|o| !o.ok), "{:#?}", lines(&out));
    assert!(lines(&out).contains(&"✗ trellis-controller ready: deployment trellis/trellis-controller not found (is Trellis installed in trellis?)".to_string()));
}

#[test]
fn trust_bundle_validity() {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/tests/fixtures/anchor.crt"
    ))
    .unwrap();
    let now = 1_800_000_000;
    assert_eq!(valid_certificates(&pem, now), 1);
    assert_eq!(valid_certificates(&pem, 4_000_000_000), 0);
    assert_eq!(valid_certificates("not pem", now), 0);
}

/// A proxy keeps the controller's id it was injected with; `controller.mtls`
/// changed since (either way) or another id means it cannot reach the
/// controller until restarted.
#[test]
fn proxies_injected_for_another_controller_mode() {
    const ID: &str = "spiffe://cluster.local/ns/trellis/sa/trellis-controller";
    let pod = |id: Option<&str>| -> Pod {
        let env: Vec<Value> = id
            .map(|v| json!({"name": contract::env::CONTROLLER_IDENTITY, "value": v}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({"spec": {"containers": [], "initContainers": [
            {"name": contract::PROXY_CONTAINER_NAME, "env": env}]}}))
        .unwrap()
    };
    let other = "spiffe://cluster.local/ns/mesh/sa/trellis-controller";
    for (has, want, problem) in [
        (Some(ID), Some(ID), None),
        (None, None, None),
        (
            None,
            Some(ID),
            Some("reaches the controller in plaintext, but it requires mTLS".to_string()),
        ),
        (
            Some(ID),
            None,
            Some("requires mTLS of the controller, but it serves plaintext".to_string()),
        ),
        (
            Some(other),
            Some(ID),
            Some(format!("expects the controller as {other}, not {ID}")),
        ),
    ] {
        assert_eq!(
            controller_identity_problem(&pod(has), want),
            problem,
            "{has:?} {want:?}"
        );
    }
}
