//! The API-server source of pod metadata against the loopback mock API
//! server (no real one runs here): found, not found, unreachable, a bad
//! kubeconfig; and the built plugin configured with `kubeconfig`.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::Call;
use trellis_cni::source::{KubeSource, PodSource};
use trellis_mock_apiserver::MockApi;

fn pod(name: &str, annotations: Value, containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "x"}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "shop", "name": name, "annotations": annotations},
        "spec": {"containers": containers},
    })
}

/// A kubeconfig naming `server`, written in `dir`.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {server}\nusers:\n- name: plugin\n  user: {{}}\ncontexts:\n- name: plugin\n  context:\n    cluster: mock\n    user: plugin\ncurrent-context: plugin\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The source blocks on its own runtime, as the plugin does.
async fn lookup(
    kubeconfig: PathBuf,
    name: &str,
) -> Result<trellis_cni::pod::PodInfo, trellis_cni::spec::CniError> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || KubeSource { kubeconfig }.pod("shop", &name))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_come_from_the_api_server() {
    let api = MockApi::start([pod(
        "web-0",
        json!({"trellis.io/injected": "true"}),
        &["app"],
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &format!("http://{}", api.addr()));

    let info = lookup(config.clone(), "web-0").await.unwrap();
    assert!(info.is_meshed());
    assert_eq!(info.containers, ["app"]);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/namespaces/shop/pods/web-0"),
        "{:?}",
        api.requests()
    );

    let err = lookup(config, "nobody").await.unwrap_err();
    assert_eq!(err.code, 100, "{err:?}");
    assert!(err.msg.contains("shop/nobody"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_means_try_again_later() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = lookup(kubeconfig(dir.path(), &format!("http://{addr}")), "web-0")
        .await
        .unwrap_err();
    assert_eq!(err.code, 11, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kubeconfig_is_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, "clusters: [").unwrap();
    let err = lookup(path.clone(), "web-0").await.unwrap_err();
    assert_eq!(err.code, 7, "{err:?}");
    assert!(err.msg.contains(&path.display().to_string()), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reads_annotations_through_its_kubeconfig() {
    let api = MockApi::start([
        pod("plain-0", json!({}), &["app"]),
        pod(
            "bad-0",
            json!({"trellis.io/skip-inbound-ports": "ssh"}),
            &["app", "trellis-proxy"],
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &format!("http://{}", api.addr()));
    let prev = r#"{"cniVersion":"1.0.0","ips":[{"address":"198.18.0.9/16"}]}"#;
    let stdin = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s","type":"trellis-cni","kubeconfig":{},"prevResult":{prev}}}"#,
        serde_json::to_string(&config).unwrap()
    );
    let run = |name: &'static str| {
        let stdin = stdin.clone();
        tokio::task::spawn_blocking(move || Call::new("ADD").pod("shop", name).run(&stdin))
    };
    let plain = run("plain-0").await.unwrap();
    assert_eq!(plain.ok().stdout, prev, "an unmeshed pod passes through");
    let msg = run("bad-0").await.unwrap().error_code(101);
    assert!(msg.contains("ssh"), "{msg}");
}
