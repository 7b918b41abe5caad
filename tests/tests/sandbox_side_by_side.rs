//! Tier 2: two sandboxes with different names run side by side with the
//! same pod and Service addresses, each in its own node namespace; removing
//! one leaves the other working. Bad input gets clear errors and exit 64.

mod common;

use common::*;
use trellis_sandbox::{Options, Sandbox, netns};

const APP: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
        args: [--port=8080]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

fn curl(sandbox: &str, url: &str) -> String {
    let st = Sandbox::open(sandbox).unwrap().state().unwrap();
    let pod = Sandbox::find_pod(&st, "shop/web").unwrap();
    netns::run(
        "ip",
        &["netns", "exec", &pod.netns, "curl", "-s", "-m", "10", url],
    )
    .unwrap_or_default()
}

#[test]
fn sandboxes_with_different_names_run_side_by_side() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, APP).unwrap();
    for name in ["it-side-a", "it-side-b"] {
        fresh(name);
        Sandbox::up(&Options::new(name).unwrap(), std::slice::from_ref(&file)).unwrap();
    }
    let a = Sandbox::open("it-side-a").unwrap().state().unwrap();
    let b = Sandbox::open("it-side-b").unwrap().state().unwrap();
    let ips =
        |st: &trellis_sandbox::state::State| st.pods.values().map(|p| p.ip).collect::<Vec<_>>();
    assert_eq!(
        ips(&a),
        ips(&b),
        "the same addresses, in separate node namespaces"
    );
    for name in ["it-side-a", "it-side-b"] {
        let out = curl(name, "http://web.shop.svc.cluster.local/");
        assert!(
            out.contains("\"namespace\":\"shop\"") || out.contains("\"namespace\": \"shop\""),
            "{name}: {out}"
        );
    }
    Sandbox::down("it-side-a").unwrap();
    assert!(namespaces("trl-it-side-a-").is_empty());
    assert!(
        curl("it-side-b", "http://web/").contains("web-"),
        "b still serves"
    );

    let (code, _, err) = ctl(&[
        "sandbox",
        "up",
        "--name",
        "Bad_Name",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("invalid sandbox name"), "{err}");
    let (code, _, err) = ctl(&["sandbox", "up", "--frobnicate"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = ctl(&[
        "sandbox",
        "up",
        "--name",
        "it-side-b",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = ctl(&[
        "sandbox",
        "exec",
        "--name",
        "it-side-b",
        "nope",
        "--",
        "true",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no pod matches \"nope\""), "{err}");

    Sandbox::down("it-side-b").unwrap();
    assert!(namespaces("trl-it-side-").is_empty());
}
