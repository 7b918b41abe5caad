//! The deployer: golden files for the pure desired objects (`golden/*.gateway.yaml`
//! in, `*.desired.yaml` or `*.error.txt` out; `TRELLIS_BLESS=1` rewrites
//! them), and passes against the mock API server.

use super::*;
use crate::index::Index;
use desired::{addresses, desired, object_name};
use pretty_assertions::assert_eq;
use std::path::{Path, PathBuf};
use trellis_api::contract::env;
use trellis_mock_apiserver::MockApi;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/deployer/golden")
}

fn settings() -> Settings {
    serde_saphyr::from_str(
        "proxyImage: ghcr.io/trellis-mesh/trellis-proxy:0.1.0\n\
         controllerAddr: trellis-controller.trellis.svc.cluster.local:8090\n\
         controllerIdentity: spiffe://cluster.local/ns/trellis/sa/trellis-controller\n\
         identityAddr: trellis-identity.trellis.svc.cluster.local:8083\n\
         identityName: trellis-identity.trellis.svc\n\
         proxyResources: {requests: {cpu: 10m, memory: 20Mi}, limits: {memory: 250Mi}}\n\
         cniEnabled: true\n",
    )
    .unwrap()
}

fn gateway(case: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir().join(format!("{case}.gateway.yaml"))).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn golden(file: &str, actual: &str) {
    let path = golden_dir().join(file);
    if std::env::var("TRELLIS_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TRELLIS_BLESS=1 creates it)", path.display()));
    assert_eq!(expected, actual, "{} differs", path.display());
}

fn golden_case(case: &str) {
    match desired(&gateway(case), &settings()) {
        Ok(d) => {
            let docs: Vec<&Value> = d.objects().to_vec();
            golden(
                &format!("{case}.desired.yaml"),
                &serde_saphyr::to_string_multiple(&docs).unwrap(),
            );
        }
        Err(e) => golden(&format!("{case}.error.txt"), &format!("{e}\n")),
    }
}

#[test]
fn golden_gateways() {
    for case in ["web", "long-name", "bad-port"] {
        golden_case(case);
    }
}

#[test]
fn desired_objects_carry_the_gateway() {
    let d = desired(&gateway("web"), &settings()).unwrap();
    assert_eq!(d.name, "web-trellis");
    for o in d.objects() {
        assert_eq!(o["metadata"]["ownerReferences"][0]["kind"], "Gateway");
        assert_eq!(o["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            o["metadata"]["labels"]["team"], "edge",
            "infrastructure labels"
        );
        assert_eq!(o["metadata"]["labels"][GATEWAY_LABEL], "web");
    }
    let ports: Vec<&Value> = d.service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(
        ports,
        [&json!(80), &json!(443)],
        "one Service port per distinct listener port"
    );
    let pod = &d.deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["args"],
        json!(["gateway", "--gateway=edge/web"])
    );
    assert_eq!(pod["securityContext"]["sysctls"][0]["value"], "80");
    // Token and trust bundle as injected sidecars get them: both follow
    // refreshes and rotations while the pod runs.
    use trellis_api::contract::{
        IDENTITY_TOKEN_AUDIENCE, TRUST_BUNDLE_CONFIGMAP, TRUST_BUNDLE_KEY,
    };
    let sources = &pod["volumes"][0]["projected"]["sources"];
    assert_eq!(
        sources[0]["serviceAccountToken"]["audience"],
        IDENTITY_TOKEN_AUDIENCE
    );
    assert_eq!(
        sources[1]["configMap"],
        json!({"name": TRUST_BUNDLE_CONFIGMAP, "optional": false,
            "items": [{"key": TRUST_BUNDLE_KEY, "path": "trust-bundle.pem"}]})
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"],
        trellis_api::contract::PROXY_UID
    );
}

fn proxy_env<'a>(d: &'a Desired, name: &str) -> Option<&'a Value> {
    d.deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

#[test]
fn the_controller_identity_reaches_the_proxy_when_set() {
    let with = desired(&gateway("web"), &settings()).unwrap();
    assert_eq!(
        proxy_env(&with, env::CONTROLLER_IDENTITY).unwrap(),
        "spiffe://cluster.local/ns/trellis/sa/trellis-controller"
    );
    let plaintext = Settings {
        controller_identity: None,
        ..settings()
    };
    let without = desired(&gateway("web"), &plaintext).unwrap();
    assert_eq!(proxy_env(&without, env::CONTROLLER_IDENTITY), None);
    assert!(proxy_env(&without, env::CONTROLLER_ADDR).is_some());
}

#[test]
fn names_stay_dns_labels() {
    let long = "a-gateway-whose-name-is-far-too-long-for-a-service-name-in-dns";
    let n = object_name(long);
    assert!(n.len() <= 63, "{n}");
    assert_ne!(
        object_name(&format!("{long}x")),
        n,
        "distinct gateways, distinct names"
    );
    assert_eq!(object_name("web"), "web-trellis");
}

#[test]
fn addresses_prefer_the_load_balancer() {
    let svc = json!({"spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}});
    assert_eq!(
        addresses(&svc),
        [
            json!({"type": "IPAddress", "value": "203.0.113.9"}),
            json!({"type": "Hostname", "value": "lb.example.com"})
        ]
    );
    let pending =
        json!({"spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"]}});
    assert_eq!(
        addresses(&pending),
        [
            json!({"type": "IPAddress", "value": "10.96.0.7"}),
            json!({"type": "IPAddress", "value": "fd00::7"})
        ]
    );
}

fn cluster() -> Vec<Value> {
    let injector_yaml = "proxyImage: ghcr.io/trellis-mesh/trellis-proxy:0.1.0\n\
        controllerAddr: trellis-controller.trellis.svc.cluster.local:8090\n\
        controllerIdentity: spiffe://cluster.local/ns/trellis/sa/trellis-controller\n\
        identityAddr: trellis-identity.trellis.svc.cluster.local:8083\n\
        identityName: trellis-identity.trellis.svc\ncniEnabled: true\n";
    let mut web = gateway("web");
    web["metadata"].as_object_mut().unwrap().remove("uid");
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trellis-injector", "namespace": "trellis"},
            "data": {"injector.yaml": injector_yaml}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "trellis"},
            "spec": {"controllerName": "trellis.io/controller"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "other"},
            "spec": {"controllerName": "example.com/other"}}),
        web,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "theirs", "namespace": "edge"},
            "spec": {"gatewayClassName": "other", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
    ]
}

fn programmed(index: &SharedIndex) -> Vec<String> {
    index
        .lock()
        .store()
        .programmed
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect()
}

#[tokio::test]
async fn deploys_marks_programmed_sets_addresses_and_cleans_up() {
    let api = MockApi::start(cluster()).await;
    let client = api.client();
    let index = Index::shared(Default::default());

    let first = reconcile_once(&client, &index, "trellis").await.unwrap();
    assert_eq!(
        first.deployed,
        ["edge/web"],
        "only Gateways of a Trellis class"
    );
    assert!(first.programmed.is_empty(), "nothing is ready yet");
    assert!(programmed(&index).is_empty());
    let deployment = api
        .object("apps/v1", "Deployment", Some("edge"), "web-trellis")
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/trellis-mesh/trellis-proxy:0.1.0"
    );
    let pod = &deployment["spec"]["template"];
    assert!(
        !pod["metadata"].to_string().contains("BEGIN CERTIFICATE"),
        "no copy of the bundle, which would miss rotations"
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["projected"]["sources"][1]["configMap"]["name"],
        trellis_api::contract::TRUST_BUNDLE_CONFIGMAP,
        "the trust bundle comes from the namespace's ConfigMap"
    );
    let env_of = |name: &str| {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env_of(env::CONTROLLER_IDENTITY).unwrap(),
        "spiffe://cluster.local/ns/trellis/sa/trellis-controller",
        "the controller's id from the injector's configuration"
    );
    assert!(
        api.object("v1", "Service", Some("edge"), "web-trellis")
            .is_some()
    );
    assert!(
        api.object("v1", "ServiceAccount", Some("edge"), "web-trellis")
            .is_some()
    );
    assert!(
        api.object("apps/v1", "Deployment", Some("edge"), "theirs-trellis")
            .is_none()
    );
    let applies = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect::<Vec<_>>();
    assert!(
        applies.iter().all(|r| r
            .query
            .contains("fieldManager=trellis.io%2Fgateway-deployer")
            || r.query.contains("fieldManager=trellis.io/gateway-deployer")),
        "{applies:?}"
    );

    // The cluster makes the proxy ready and gives the Service an address.
    let mut d = deployment.clone();
    d["metadata"]["generation"] = json!(1);
    d["status"] = json!({"observedGeneration": 1, "readyReplicas": 1, "replicas": 1});
    api.put(d);
    let mut svc = api
        .object("v1", "Service", Some("edge"), "web-trellis")
        .unwrap();
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}});
    api.put(svc);

    let second = reconcile_once(&client, &index, "trellis").await.unwrap();
    assert_eq!(second.programmed, ["edge/web"]);
    assert_eq!(programmed(&index), ["edge/web"]);
    let gw = api
        .object(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            Some("edge"),
            "web",
        )
        .unwrap();
    assert_eq!(
        gw["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.9"}])
    );
    let status_writes = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/gateways/web/status"))
        .count();
    reconcile_once(&client, &index, "trellis").await.unwrap();
    let again = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/gateways/web/status"))
        .count();
    assert_eq!(
        status_writes, again,
        "unchanged addresses are not written again"
    );

    // The Gateway moves to another class: its proxy goes away.
    let mut gw = gw;
    gw["spec"]["gatewayClassName"] = json!("other");
    api.put(gw);
    let third = reconcile_once(&client, &index, "trellis").await.unwrap();
    assert_eq!(third.removed, ["edge/web-trellis"]);
    assert!(
        api.object("apps/v1", "Deployment", Some("edge"), "web-trellis")
            .is_none()
    );
    assert!(
        api.object("v1", "Service", Some("edge"), "web-trellis")
            .is_none()
    );
    assert!(programmed(&index).is_empty());
}

#[tokio::test]
async fn a_gateway_it_cannot_run_is_reported_and_others_still_deploy() {
    let mut objects = cluster();
    objects.push(gateway("bad-port"));
    let api = MockApi::start(objects).await;
    let index = Index::shared(Default::default());
    let report = reconcile_once(&api.client(), &index, "trellis")
        .await
        .unwrap();
    assert_eq!(
        report.refused,
        ["shop/broken: gateway broken: listener http has no valid port"]
    );
    assert_eq!(report.deployed, ["edge/web"]);
}

#[tokio::test]
async fn without_the_injector_configuration_nothing_is_deployed() {
    let api = MockApi::start(cluster().into_iter().skip(1)).await;
    let err = reconcile_once(&api.client(), &Index::shared(Default::default()), "trellis")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("trellis/trellis-injector"),
        "{err}"
    );
    assert!(api.objects_of("Deployment").is_empty());
}

#[tokio::test]
async fn a_controller_identity_that_is_no_spiffe_id_is_refused_by_value() {
    let mut objects = cluster();
    let yaml = objects[0]["data"]["injector.yaml"]
        .as_str()
        .unwrap()
        .replace(
            "spiffe://cluster.local/ns/trellis/sa/trellis-controller",
            "trellis-controller.trellis",
        );
    objects[0]["data"]["injector.yaml"] = json!(yaml);
    let api = MockApi::start(objects).await;
    let err = reconcile_once(&api.client(), &Index::shared(Default::default()), "trellis")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"trellis-controller.trellis\""),
        "{err}"
    );
    assert!(api.objects_of("Deployment").is_empty());
}

/// Polls `f` for up to 10 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn a_new_gateway_is_deployed_when_the_index_sees_it_not_at_the_next_resync() {
    let mut objects = cluster();
    let at = objects
        .iter()
        .position(|o| o["kind"] == "Gateway" && o["metadata"]["name"] == "web")
        .unwrap();
    let web = objects.remove(at);
    let api = MockApi::start(objects.clone()).await;
    let index = Index::shared(Default::default());
    let apply = |v: &Value| {
        let object = crate::objects::Object::from_value(v.clone())
            .unwrap()
            .expect("a kind the index keeps");
        index.lock().apply(object);
    };
    for o in objects.iter().filter(|o| o["kind"] != "ConfigMap") {
        apply(o);
    }
    let (_lease, leader) = watch::channel(true);
    // A resync an hour away: only the index change can deploy the Gateway.
    let task = tokio::spawn(run_every(
        api.client(),
        index.clone(),
        leader,
        "trellis".into(),
        Duration::from_secs(3600),
    ));
    let web_deployment = || api.object("apps/v1", "Deployment", Some("edge"), "web-trellis");
    eventually("the first pass", || {
        api.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/gateways"))
    })
    .await;
    assert!(web_deployment().is_none(), "nothing of Trellis' yet");

    // Created: the API has it, and the watch puts it in the index.
    api.put(web.clone());
    apply(&web);
    eventually("the new Gateway's proxy", || web_deployment().is_some()).await;
    task.abort();
}
