//! Tier 1: the Kubernetes source against a mock API server on loopback
//! (recorded objects served by list and watch; writes recorded). The index
//! fills from the lists, follows a watch event, and the lease holder writes
//! route status by server-side apply, keeping other controllers' entries.

use serde_json::{Value, json};
use std::time::Duration;
use trellis_controller::config::{Config, LogFormat, SourceConfig};
use trellis_controller::index::{Outbound, Settings};
use trellis_controller::server;
use trellis_controller::source::kube::{Kubernetes, LeaseConfig};
use trellis_mock_apiserver::MockApi;

fn route(weight: u32) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "split", "namespace": "shop", "generation": 3},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": weight}]}]
        },
        "status": {"parents": [{
            "controllerName": "example.com/other-mesh",
            "parentRef": {"group": "", "kind": "Service", "name": "web"},
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        }]}
    })
}

fn recorded() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"clusterIP": "198.19.0.1", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop"},
               "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}, {"name": "trellis-proxy"}]},
               "status": {"podIP": "198.18.0.1"}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["198.18.0.1"], "conditions": {"ready": true},
                              "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "shop"}}]}),
        json!({"apiVersion": "gateway.networking.x-k8s.io/v1alpha1", "kind": "XMesh",
               "metadata": {"name": "trellis", "generation": 1}, "spec": {"controllerName": "trellis.io/controller"}}),
        route(1),
    ]
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_watches_and_writes_status_as_lease_holder() {
    let api = MockApi::start(recorded()).await;
    let source = Kubernetes::new(
        api.client(),
        LeaseConfig {
            namespace: "trellis-system".into(),
            name: "trellis-controller".into(),
            identity: "controller-0".into(),
        },
    );
    let config = Config {
        source: SourceConfig::Manifests(Vec::new()),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        settings: Settings::default(),
        log: "info".into(),
        log_format: LogFormat::Plain,
        identity: None,
    };
    let running = server::start_with(config, Box::new(source)).await.unwrap();
    let mut ready = running.ready.clone();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("ready after every kind was listed")
        .unwrap();

    // Lists filled the index.
    let mut rx = running
        .index
        .lock()
        .outbound("198.19.0.1:80".parse().unwrap(), "shop");
    let weights = |o: &Outbound| match o {
        Outbound::Policy(p) => p.http_routes[0].rules[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        Outbound::NoPolicy => panic!("no policy"),
    };
    assert_eq!(weights(&rx.borrow_and_update()), [1]);

    // A watch event reaches subscribers.
    api.put(route(7));
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("an update from the watch")
        .unwrap();
    assert_eq!(weights(&rx.borrow_and_update()), [7]);

    // The lease is ours, and status was written by server-side apply.
    let lease = eventually("the lease", || {
        api.object(
            "coordination.k8s.io/v1",
            "Lease",
            Some("trellis-system"),
            "trellis-controller",
        )
    })
    .await;
    assert_eq!(lease["spec"]["holderIdentity"], "controller-0");
    let parents = eventually("route status", || {
        let r = api.object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("shop"),
            "split",
        )?;
        let parents = r["status"]["parents"].as_array()?.clone();
        (parents.len() == 2).then_some(parents)
    })
    .await;
    assert_eq!(
        parents[0]["controllerName"], "example.com/other-mesh",
        "{parents:?}"
    );
    let ours = &parents[1];
    assert_eq!(ours["controllerName"], "trellis.io/controller");
    assert_eq!(
        ours["parentRef"],
        json!({"group": "", "kind": "Service", "name": "web", "port": 80})
    );
    for c in ours["conditions"].as_array().unwrap() {
        assert_eq!(
            (c["status"].as_str(), c["observedGeneration"].as_i64()),
            (Some("True"), Some(3)),
            "{c}"
        );
    }
    let mesh = eventually("XMesh status", || {
        let m = api.object(
            "gateway.networking.x-k8s.io/v1alpha1",
            "XMesh",
            None,
            "trellis",
        )?;
        m["status"]["conditions"].as_array().cloned()
    })
    .await;
    assert_eq!(mesh[0]["type"], "Accepted");
    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/httproutes/split/status"))
        .collect();
    assert!(!patches.is_empty());
    for p in &patches {
        assert!(
            p.content_type.starts_with("application/apply-patch"),
            "{p:?}"
        );
        assert!(
            p.query.contains("fieldManager=trellis.io%2Fcontroller")
                || p.query.contains("fieldManager=trellis.io/controller"),
            "{p:?}"
        );
        assert!(p.query.contains("force=true"), "{p:?}");
    }
    running.shutdown().await.unwrap();
}
