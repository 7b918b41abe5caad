//! Golden tests of the pure patch and of the AdmissionReview answers.
//!
//! Each directory under `tests/golden/` is a case: `pod.yaml` in and
//! `patch.json` (or `error.txt`) out, or `review.json` in and
//! `response.json` out. `TRELLIS_BLESS=1 cargo test -p trellis-injector
//! --test golden` rewrites the expected files from the current code; review
//! the diff before committing it.

use k8s_openapi::api::core::v1::Pod;
use pretty_assertions::assert_eq;
use serde_json::Value;
use std::path::{Path, PathBuf};
use trellis_api::contract;
use trellis_injector::{InjectConfig, Plan, Skip, patch, plan, review};

fn dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

fn bless() -> bool {
    std::env::var("TRELLIS_BLESS").is_ok_and(|v| v == "1")
}

/// Compares `actual` with the file, or rewrites the file when blessing.
fn golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with TRELLIS_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(expected, actual, "{} differs", path.display());
}

/// The configuration every case starts from (what the chart renders by default).
fn config() -> InjectConfig {
    serde_saphyr::from_str(
        r#"
proxyImage: ghcr.io/trellis-mesh/trellis-proxy:0.1.0
initImage: ghcr.io/trellis-mesh/trellis-proxy-init:0.1.0
controllerAddr: trellis-controller.trellis.svc.cluster.local:8090
controllerIdentity: spiffe://cluster.local/ns/trellis/sa/trellis-controller
identityAddr: trellis-identity.trellis.svc.cluster.local:8083
identityName: trellis-identity.trellis.svc
trustBundle: |
  -----BEGIN CERTIFICATE-----
  MIIBtest
  -----END CERTIFICATE-----
proxyResources:
  requests: {cpu: 10m, memory: 20Mi}
  limits: {memory: 250Mi}
initResources:
  requests: {cpu: 10m, memory: 10Mi}
  limits: {memory: 50Mi}
"#,
    )
    .unwrap()
}

fn no_cni() -> InjectConfig {
    InjectConfig {
        cni_enabled: false,
        ..config()
    }
}

fn read_pod(case: &str) -> (Pod, Value) {
    let text = std::fs::read_to_string(dir(case).join("pod.yaml")).unwrap();
    let raw: Value = serde_saphyr::from_str(&text).unwrap();
    (serde_json::from_value(raw.clone()).unwrap(), raw)
}

/// Runs a pod case: the patch matches its golden file, applies to the pod,
/// and patching the result again changes nothing.
fn pod_case(case: &str, cfg: &InjectConfig) -> Option<Value> {
    let (pod, raw) = read_pod(case);
    let p = patch(&pod, cfg).unwrap();
    let text = serde_json::to_string_pretty(&p).unwrap() + "\n";
    golden(&dir(case).join("patch.json"), &text);
    if p.0.is_empty() {
        return None;
    }
    let mut doc = raw;
    json_patch::patch(&mut doc, &p).unwrap();
    let patched: Pod = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(
        plan(&patched, cfg).unwrap(),
        Plan::Skip(Skip::AlreadyInjected)
    );
    Some(doc)
}

/// The value of the proxy container's environment variable `name`.
fn proxy_env<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc.pointer("/spec/initContainers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == contract::PROXY_CONTAINER_NAME)?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

fn init_names(doc: &Value) -> Vec<&str> {
    doc.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn plain_pod() {
    let doc = pod_case("plain-pod", &config()).unwrap();
    assert_eq!(init_names(&doc), [contract::PROXY_CONTAINER_NAME]);
    let proxy = &doc["spec"]["initContainers"][0];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(
        proxy["startupProbe"]["httpGet"]["port"],
        contract::port::PROXY_ADMIN
    );
    assert_eq!(proxy["securityContext"]["runAsUser"], contract::PROXY_UID);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        doc["metadata"]["annotations"][contract::key::INJECTED],
        "true"
    );
    let token = &doc["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], contract::IDENTITY_TOKEN_AUDIENCE);
    assert_eq!(
        proxy_env(&doc, contract::env::CONTROLLER_IDENTITY).unwrap(),
        "spiffe://cluster.local/ns/trellis/sa/trellis-controller"
    );
}

/// Without `controllerIdentity` (the chart's `controller.mtls: false`) the
/// proxy is not told to require mTLS of the controller.
#[test]
fn plaintext_controller_gets_no_identity() {
    let cfg = InjectConfig {
        controller_identity: None,
        ..config()
    };
    let (pod, mut doc) = read_pod("plain-pod");
    json_patch::patch(&mut doc, &patch(&pod, &cfg).unwrap()).unwrap();
    assert_eq!(proxy_env(&doc, contract::env::CONTROLLER_IDENTITY), None);
    assert!(proxy_env(&doc, contract::env::CONTROLLER_ADDR).is_some());
}

#[test]
fn pod_with_init_containers() {
    let doc = pod_case("init-containers", &config()).unwrap();
    assert_eq!(
        init_names(&doc),
        [contract::PROXY_CONTAINER_NAME, "migrate", "warm-cache"]
    );
    assert_eq!(doc["spec"]["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(doc["metadata"]["annotations"]["team"], "payments");
}

#[test]
fn cni_off_adds_trellis_init_first() {
    let doc = pod_case("cni-off", &no_cni()).unwrap();
    assert_eq!(
        init_names(&doc),
        [
            contract::INIT_CONTAINER_NAME,
            contract::PROXY_CONTAINER_NAME,
            "migrate"
        ]
    );
    let init = &doc["spec"]["initContainers"][0];
    assert_eq!(init["args"][0], "init");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
}

#[test]
fn custom_annotations() {
    let doc = pod_case("custom-annotations", &no_cni()).unwrap();
    let env = |c: usize, name: &str| {
        doc["spec"]["initContainers"][c]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env(0, contract::env::SKIP_INBOUND_PORTS).unwrap(),
        "15190,3306,9000-9100"
    );
    assert_eq!(
        env(0, contract::env::SKIP_OUTBOUND_CIDRS).unwrap(),
        "169.254.169.254/32,10.0.0.0/8"
    );
    assert_eq!(
        env(1, contract::env::LOG).unwrap(),
        "debug,trellis_proxy=trace"
    );
}

#[test]
fn opted_out_pod() {
    assert_eq!(pod_case("opted-out", &config()), None);
    assert_eq!(
        plan(&read_pod("opted-out").0, &config()).unwrap(),
        Plan::Skip(Skip::OptedOut)
    );
}

#[test]
fn already_injected_pod() {
    assert_eq!(pod_case("already-injected", &config()), None);
}

#[test]
fn host_network_pod() {
    assert_eq!(pod_case("host-network", &no_cni()), None);
    assert_eq!(
        plan(&read_pod("host-network").0, &config()).unwrap(),
        Plan::Skip(Skip::HostNetwork)
    );
}

#[test]
fn bad_annotation_is_refused_with_its_name() {
    let (pod, _) = read_pod("bad-annotation");
    let err = patch(&pod, &config()).unwrap_err().to_string();
    golden(&dir("bad-annotation").join("error.txt"), &(err + "\n"));
}

/// Every `review.json` under `malformed-review/` gets its `response.json`.
#[test]
fn malformed_reviews() {
    let base = dir("malformed-review");
    let mut cases: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "malformed-review cases are missing");
    for case in cases {
        let body = std::fs::read(case.join("review.json")).unwrap();
        let out = review::respond(&body, &config());
        let text = serde_json::to_string_pretty(&out).unwrap() + "\n";
        golden(&case.join("response.json"), &text);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "AdmissionReview", "{}", case.display());
        assert!(v["response"]["allowed"].is_boolean(), "{}", case.display());
        let allowed = v["response"]["allowed"].as_bool().unwrap();
        let message = v["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(
            allowed || message.starts_with("trellis-injector"),
            "{}: refused without a reason",
            case.display()
        );
        assert!(
            v["response"]["patch"].is_null(),
            "{}: a malformed review got a patch",
            case.display()
        );
    }
}

/// A well-formed review of a plain pod is answered with the golden patch.
#[test]
fn review_of_a_plain_pod_carries_the_patch() {
    let (_, raw) = read_pod("plain-pod");
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": raw,
        }
    });
    let out = review::decide(&serde_json::to_vec(&body).unwrap(), &config());
    let resp = out.response.unwrap();
    assert!(resp.allowed);
    assert_eq!(resp.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    let sent: json_patch::Patch = serde_json::from_slice(resp.patch.as_ref().unwrap()).unwrap();
    assert_eq!(sent, patch(&read_pod("plain-pod").0, &config()).unwrap());
}
