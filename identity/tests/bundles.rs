//! The trust bundle in every meshed namespace, against the loopback mock
//! API server: `publish` applies the ConfigMap where it is missing or
//! different (and only there), a namespace labelled later gets it from the
//! namespace watch without waiting for the next publish, a rotated bundle
//! reaches every namespace, and a deleted ConfigMap comes back.

use serde_json::{Value, json};
use std::time::Duration;
use trellis_identity::bundles::NamespaceBundles;
use trellis_identity::store::BundleSink;
use trellis_mock_apiserver::MockApi;

const NAME: &str = "trellis-trust-bundle";
const SELECTOR: &str = "trellis.io/inject=enabled";
const OLD: &str = "-----BEGIN CERTIFICATE-----\nMIIBold\n-----END CERTIFICATE-----\n";
const NEW: &str = "-----BEGIN CERTIFICATE-----\nMIIBold\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIBnew\n-----END CERTIFICATE-----\n";

fn namespace(name: &str, meshed: bool) -> Value {
    let labels = if meshed {
        json!({"trellis.io/inject": "enabled"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// The bundle published in `ns`, if any.
fn bundle_in(api: &MockApi, ns: &str) -> Option<String> {
    api.objects_of("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["namespace"] == ns && c["metadata"]["name"] == NAME)
        .and_then(|c| c["data"]["ca-bundle.crt"].as_str().map(String::from))
}

fn writes(api: &MockApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/configmaps/{NAME}")))
        .count()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn the_bundle_follows_meshed_namespaces_and_rotations() {
    let api = MockApi::start([namespace("shop", true), namespace("plain", false)]).await;
    let sink = NamespaceBundles::new(api.client(), NAME, SELECTOR);
    assert!(sink.describe().contains(SELECTOR));

    assert!(sink.publish(OLD).await.unwrap(), "first publication");
    assert_eq!(bundle_in(&api, "shop").as_deref(), Some(OLD));
    assert_eq!(
        bundle_in(&api, "plain"),
        None,
        "unmeshed namespaces are left alone"
    );
    let cm = api
        .objects_of("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["namespace"] == "shop")
        .unwrap();
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "trellis-identity"
    );

    let before = writes(&api);
    assert!(!sink.publish(OLD).await.unwrap(), "nothing changed");
    assert_eq!(writes(&api), before, "an unchanged bundle is not rewritten");

    // A namespace meshed later gets the bundle from the watch, before any
    // further publish.
    api.put(namespace("payments", true));
    eventually("the new namespace has the bundle", || {
        bundle_in(&api, "payments").as_deref() == Some(OLD)
    })
    .await;

    // A rotation (a second anchor) reaches every meshed namespace.
    assert!(sink.publish(NEW).await.unwrap());
    for ns in ["shop", "payments"] {
        assert_eq!(bundle_in(&api, ns).as_deref(), Some(NEW), "{ns}");
    }

    // Someone deletes it: the next publish puts it back.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(api.client(), "shop");
    cms.delete(NAME, &Default::default()).await.unwrap();
    assert_eq!(bundle_in(&api, "shop"), None);
    assert!(sink.publish(NEW).await.unwrap());
    assert_eq!(bundle_in(&api, "shop").as_deref(), Some(NEW));
}
