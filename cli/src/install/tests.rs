//! `trellisctl install`: values, rendering with the real Helm engine, and
//! applying against the mock API server while a simulated cluster makes the
//! objects ready.

use super::*;
use pretty_assertions::assert_eq;
use trellis_mock_apiserver::MockApi;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/trellis")
}

/// The chart rendered by PyPI helm-python-sdk (installed by `cargo xtask setup`).
fn rendered(values: &Value) -> String {
    let python = HelmPython {
        python: std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into()),
    };
    python
        .render(&chart(), "trellis", "trellis", values)
        .unwrap_or_else(|e| {
            panic!("rendering needs python3 with helm-python-sdk (run `cargo xtask setup`): {e:#}")
        })
}

#[test]
fn values_files_then_set_flags() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(
        &a,
        "cni: {enabled: false}\ninjector: {replicas: 3, failurePolicy: Ignore}\n",
    )
    .unwrap();
    std::fs::write(&b, "injector: {replicas: 4}\n").unwrap();
    let set = [
        "injector.timeoutSeconds=5".to_string(),
        "image.tag=v1.2.3".into(),
        "cni.enabled=true".into(),
    ];
    assert_eq!(
        values(&[a, b], &set).unwrap(),
        json!({
            "cni": {"enabled": true},
            "injector": {"replicas": 4, "failurePolicy": "Ignore", "timeoutSeconds": 5},
            "image": {"tag": "v1.2.3"},
        })
    );
    assert!(
        values(&[], &["=1".into()])
            .unwrap_err()
            .to_string()
            .contains("expected key.path=value")
    );
    assert!(values(&[], &["novalue".into()]).is_err());
    let list = dir.path().join("list.yaml");
    std::fs::write(&list, "- 1\n").unwrap();
    assert!(
        values(&[list], &[])
            .unwrap_err()
            .to_string()
            .contains("does not hold a mapping")
    );
    assert!(
        values(&[dir.path().join("missing.yaml")], &[])
            .unwrap_err()
            .to_string()
            .contains("reading")
    );
}

#[test]
fn the_real_chart_renders_in_apply_order() {
    let objs = objects(&rendered(&json!({"cni": {"enabled": false}}))).unwrap();
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    let first_other = kinds
        .iter()
        .position(|k| *k != "CustomResourceDefinition")
        .unwrap();
    assert!(
        kinds[..first_other].len() >= 10,
        "CRDs come first: {kinds:?}"
    );
    assert!(!kinds[first_other..].contains(&"CustomResourceDefinition"));
    assert_eq!(kinds.last(), Some(&"MutatingWebhookConfiguration"));
    assert!(
        !kinds.contains(&"DaemonSet"),
        "cni.enabled=false renders no DaemonSet"
    );
}

#[test]
fn bad_values_are_refused_by_the_schema() {
    let python = HelmPython {
        python: std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into()),
    };
    let err = python
        .render(
            &chart(),
            "trellis",
            "trellis",
            &json!({"injector": {"failurePolicy": "Sometimes"}}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("failurePolicy"), "{err:#}");
}

/// Plays the cluster's controllers: CRDs become Established, Deployments and
/// DaemonSets report ready.
fn simulate_cluster(api: &MockApi) {
    for mut crd in api.objects_of("CustomResourceDefinition") {
        if crd.get("status").is_none() {
            crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
            api.put(crd);
        }
    }
    for mut d in api.objects_of("Deployment") {
        if d.get("status").is_none() {
            let n = d["spec"]["replicas"].clone();
            d["metadata"]["generation"] = json!(1);
            d["status"] = json!({"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n});
            api.put(d);
        }
    }
    for mut ds in api.objects_of("DaemonSet") {
        if ds.get("status").is_none() {
            ds["metadata"]["generation"] = json!(1);
            ds["status"] =
                json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "numberReady": 3});
            api.put(ds);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_everything_and_waits_until_ready() {
    let objs = objects(&rendered(&json!({}))).unwrap();
    let api = std::sync::Arc::new(MockApi::start([]).await);
    let cluster = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                simulate_cluster(&api);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    install(
        &api.client(),
        &objs,
        "trellis",
        Duration::from_millis(20),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    cluster.abort();

    assert!(
        api.object("v1", "Namespace", None, "trellis").is_some(),
        "the namespace is created"
    );
    for o in &objs {
        let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(
            api.object(
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
                ns,
                name
            )
            .is_some(),
            "{} {name} was not applied",
            o["kind"]
        );
    }
    let applies: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(applies.len(), objs.len());
    assert!(
        applies
            .iter()
            .all(|r| r.content_type.starts_with("application/apply-patch")
                && r.query.contains("fieldManager=trellisctl")
                && r.query.contains("force=true"))
    );
    let mwc = applies
        .iter()
        .position(|r| r.path.contains("mutatingwebhookconfigurations"))
        .unwrap();
    assert_eq!(
        mwc,
        applies.len() - 1,
        "the webhook configuration is applied last"
    );
}

#[tokio::test]
async fn a_mesh_that_never_gets_ready_times_out_naming_what_is_missing() {
    let objs = objects(&rendered(&json!({"cni": {"enabled": false}}))).unwrap();
    let api = MockApi::start([]).await;
    for mut crd in objs
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .cloned()
    {
        crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
        api.put(crd);
    }
    let err = install(
        &api.client(),
        &objs,
        "trellis",
        Duration::from_millis(20),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "timed out after 0s waiting for Deployment trellis/trellis-controller (0/2 ready)"
        ),
        "{err}"
    );
}

#[test]
fn readiness_of_each_kind() {
    let dep = |ready: i64| {
        json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "readyReplicas": ready, "updatedReplicas": 2}})
    };
    assert_eq!(not_ready(&dep(2)), None);
    assert_eq!(not_ready(&dep(1)).unwrap(), "1/2 ready");
    let ds = json!({"kind": "DaemonSet", "metadata": {}, "status": {"desiredNumberScheduled": 3, "numberReady": 2}});
    assert_eq!(not_ready(&ds).unwrap(), "2/3 nodes ready");
    assert_eq!(
        not_ready(&json!({"kind": "CustomResourceDefinition"})).unwrap(),
        "not established"
    );
    assert_eq!(not_ready(&json!({"kind": "ConfigMap"})), None);
}
