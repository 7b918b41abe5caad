//! Tier 1: the controller in-process on loopback, reading a manifest
//! directory. A real tonic client receives the initial policy and the update
//! after a manifest file changes on disk; the admin server answers `/status`
//! and `/policy`; an unparsable document is skipped with the rest applied;
//! with an identity, discovery is served over mTLS only, each client
//! watching only its own namespace's view.
//! Also the real binary, to check its flags and admin endpoints.

mod support;

use futures::StreamExt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::proto::discovery::{
    self as pb, inbound_policies_client::InboundPoliciesClient,
    outbound_policies_client::OutboundPoliciesClient,
};
use trellis_api::{InboundTarget, OutboundTarget, watch::updates};
use trellis_controller::config::{Config, LogFormat, SourceConfig};
use trellis_controller::index::Settings;
use trellis_controller::server;
use trellis_policy::{InboundPolicy, OutboundPolicy, Protocol, ResourceRef, Target};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.19.0.1
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: canary, namespace: shop}
spec:
  clusterIP: 198.19.0.2
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop}
spec:
  serviceAccountName: web
  containers: [{name: app}, {name: trellis-proxy}]
status: {podIP: 198.18.0.1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP, appProtocol: http}]
endpoints:
- addresses: [198.18.0.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: web-0, namespace: shop}
"#;

fn route(weight_canary: u32) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules:
  - backendRefs: [{{name: web, port: 80, weight: 1}}, {{name: canary, port: 80, weight: {weight_canary}}}]
"#
    )
}

/// Writes like the sandbox does: to a hidden temporary, then renames.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn config(dir: &Path) -> Config {
    Config {
        source: SourceConfig::Manifests(vec![dir.to_path_buf()]),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        settings: Settings::default(),
        log: "info".into(),
        log_format: LogFormat::Plain,
        identity: None,
    }
}

/// A minimal HTTP/1.1 GET; the admin server answers with a length.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn backend_weights(p: &OutboundPolicy) -> Vec<u32> {
    p.http_routes[0].rules[0]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_policy_and_updates_when_a_manifest_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", CLUSTER);
    write(dir.path(), "route.yaml", &route(0));
    write(
        dir.path(),
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: shop\n",
    );
    let running = server::start(config(dir.path())).await.unwrap();
    let mut ready = running.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();

    let url = format!("http://{}", running.grpc_addr);
    let mut client = OutboundPoliciesClient::connect(url.clone()).await.unwrap();
    let target = OutboundTarget {
        target: Target("198.19.0.1:80".parse().unwrap()),
        client_namespace: "shop".into(),
        client_workload: "client-0".into(),
    };
    let stream = client
        .watch(pb::OutboundTarget::from(&target))
        .await
        .unwrap()
        .into_inner();
    let mut policies = updates::<_, Option<OutboundPolicy>>(stream);
    let first = policies.next().await.unwrap().unwrap().expect("a policy");
    assert_eq!(backend_weights(&first), [1, 0]);

    write(dir.path(), "route.yaml", &route(3));
    let second = tokio::time::timeout(Duration::from_secs(10), policies.next())
        .await
        .expect("an update after the file changed")
        .unwrap()
        .unwrap()
        .expect("a policy");
    assert_eq!(backend_weights(&second), [1, 3]);

    // A pod IP is no Service port: the proxy forwards as is.
    let pod = OutboundTarget {
        target: Target("198.18.0.1:8080".parse().unwrap()),
        ..target.clone()
    };
    let stream = client
        .watch(pb::OutboundTarget::from(&pod))
        .await
        .unwrap()
        .into_inner();
    let mut none = updates::<_, Option<OutboundPolicy>>(stream);
    assert_eq!(none.next().await.unwrap().unwrap(), None);

    // Inbound: the pod's port speaks HTTP per its Service's appProtocol.
    let mut inbound = InboundPoliciesClient::connect(url).await.unwrap();
    let t = InboundTarget {
        workload: ResourceRef::new("shop", "web-0"),
        port: 8080,
    };
    let stream = inbound
        .watch(pb::InboundTarget::from(&t))
        .await
        .unwrap()
        .into_inner();
    let mut inb = updates::<_, InboundPolicy>(stream);
    assert_eq!(inb.next().await.unwrap().unwrap().protocol, Protocol::Http1);

    // Admin: /status shows the route accepted, /policy the resolved policy.
    let (code, body) = get(running.admin_addr, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let route = &status[0];
    assert_eq!(
        (route["kind"].as_str(), route["name"].as_str()),
        (Some("HTTPRoute"), Some("split"))
    );
    let conds = route["parents"][0]["conditions"].as_array().unwrap();
    assert!(conds.iter().all(|c| c["status"] == "True"), "{conds:?}");
    assert!(
        conds
            .iter()
            .all(|c| !c["lastTransitionTime"].as_str().unwrap().is_empty())
    );
    let (code, body) = get(
        running.admin_addr,
        "/policy?ip=198.19.0.1&port=80&namespace=shop",
    )
    .await;
    assert_eq!(code, 200);
    let p: OutboundPolicy = serde_json::from_str(&body).unwrap();
    assert_eq!(backend_weights(&p), [1, 3]);
    let (code, body) = get(
        running.admin_addr,
        "/policy?ip=198.18.0.1&port=8080&namespace=shop",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, r#"{"noPolicy":true}"#));
    assert_eq!(
        get(running.admin_addr, "/policy?ip=nope&port=80").await.0,
        400
    );
    assert_eq!(get(running.admin_addr, "/ready").await.0, 200);
    assert_eq!(get(running.admin_addr, "/live").await.0, 200);
    let (code, metrics) = get(running.admin_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("trellis_controller_streams"), "{metrics}");

    // Removing the route file removes the route.
    std::fs::remove_file(dir.path().join("route.yaml")).unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), policies.next())
        .await
        .expect("an update after the file was removed")
        .unwrap()
        .unwrap()
        .expect("a policy");
    assert!(third.http_routes.is_empty());
    running.shutdown().await.unwrap();
}

#[test]
fn unparsable_documents_are_reported_with_file_and_line_and_skipped() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x\n---\n# a comment only\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ok, namespace: a}\nspec: {ports: [{port: nope}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
    let (objects, errors) = trellis_controller::source::dir::parse(Path::new("m.yaml"), text);
    let names: Vec<_> = objects.iter().map(|o| o.key().name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].line, 7, "{}", errors[0]);
    assert!(
        errors[0].to_string().starts_with("m.yaml:7: invalid YAML"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1].line, 11, "{}", errors[1]);
    assert!(
        errors[1].to_string().contains("invalid Service"),
        "{}",
        errors[1]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_status_for_the_upstream_mesh_routes() {
    let dir = tempfile::tempdir().unwrap();
    for o in support::cluster(&[
        support::third_party().join("mesh/manifests.yaml"),
        support::third_party().join("tests/mesh/mesh-split.yaml"),
        support::third_party().join("tests/mesh/mesh-consumer-route.yaml"),
    ]) {
        let key = o.key();
        let value = match o {
            trellis_controller::objects::Object::Service(x) => serde_json::to_value(x),
            trellis_controller::objects::Object::Pod(x) => serde_json::to_value(x),
            trellis_controller::objects::Object::EndpointSlice(x) => serde_json::to_value(x),
            trellis_controller::objects::Object::Namespace(x) => serde_json::to_value(x),
            trellis_controller::objects::Object::HttpRoute(x) => serde_json::to_value(x),
            other => panic!("unexpected {:?}", other.kind()),
        }
        .unwrap();
        let name = format!(
            "{}-{}-{}.json",
            value["kind"].as_str().unwrap(),
            key.namespace,
            key.name
        );
        write(dir.path(), &name, &value.to_string());
    }
    let (grpc, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis-controller"))
        .arg("--manifests")
        .arg(dir.path())
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut waited = 0;
    while tokio::net::TcpStream::connect(admin).await.is_err()
        || get(admin, "/ready").await.0 != 200
    {
        waited += 1;
        assert!(waited < 200, "the controller did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = get(admin, "/status").await;
    assert_eq!(code, 200);
    let status: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<_> = status.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mesh-split", "mesh-echo-add-header"]);
    for s in &status {
        for c in s["parents"][0]["conditions"].as_array().unwrap() {
            assert_eq!(c["status"], "True", "{s}");
            assert_eq!(c["observedGeneration"], serde_json::Value::Null);
        }
    }
    let (_, body) = get(
        admin,
        "/policy?ip=198.19.0.1&port=80&namespace=gateway-conformance-mesh-consumer",
    )
    .await;
    let p: OutboundPolicy = serde_json::from_str(&body).unwrap();
    assert_eq!(p.http_routes[0].meta.name, "mesh-echo-add-header");
    child.kill().await.unwrap();

    // Bad flags: status 64 and one line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis-controller"))
        .arg("--grpc-addr")
        .arg("nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(trellis_api::contract::EXIT_USAGE));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_identity_discovery_is_served_over_mtls_only() {
    use trellis_identity_client::{Identity, TlsMetrics, serve::Connector, testing::TestCa};
    use trellis_policy::SpiffeId;

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", CLUSTER);
    write(dir.path(), "route.yaml", &route(0));
    let ca = TestCa::new("cluster.local");
    let id = |ns: &str, sa: &str| SpiffeId::for_service_account("cluster.local", ns, sa);
    let hour = Duration::from_secs(3600);
    let of = |ca: &TestCa, ns: &str, sa: &str| {
        Identity::fixed(
            ca.certificate(&id(ns, sa), hour),
            ca.bundle(),
            TlsMetrics::default(),
        )
    };
    let controller = id("trellis", "trellis-controller");
    let source = trellis_controller::source::dir::Directory::new(vec![dir.path().to_path_buf()]);
    let running = server::start_with_identity(
        config(dir.path()),
        Box::new(source),
        Some(of(&ca, "trellis", "trellis-controller")),
    )
    .await
    .unwrap();
    let mut ready = running.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).unwrap();
    let target = OutboundTarget {
        target: Target("198.19.0.1:80".parse().unwrap()),
        client_namespace: "shop".into(),
        client_workload: "client-0".into(),
    };

    // A meshed client that names the controller gets its policy.
    let channel = endpoint
        .connect_with_connector(Connector::new(
            of(&ca, "shop", "client"),
            controller.clone(),
        ))
        .await
        .unwrap();
    let stream = OutboundPoliciesClient::new(channel.clone())
        .watch(pb::OutboundTarget::from(&target))
        .await
        .unwrap()
        .into_inner();
    let mut policies = updates::<_, Option<OutboundPolicy>>(stream);
    let first = policies.next().await.unwrap().unwrap().expect("a policy");
    assert_eq!(backend_weights(&first), [1, 0]);
    // Only its own namespace's view.
    let mut client = OutboundPoliciesClient::new(channel);
    let other = OutboundTarget {
        client_namespace: "billing".into(),
        ..target.clone()
    };
    let denied = client
        .watch(pb::OutboundTarget::from(&other))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("billing"), "{denied:?}");

    // Plaintext gets nothing.
    let plain = match OutboundPoliciesClient::connect(url).await {
        Ok(mut c) => c.watch(pb::OutboundTarget::from(&target)).await.err(),
        Err(e) => Some(tonic::Status::unavailable(e.to_string())),
    };
    assert!(plain.is_some(), "a plaintext client was served");
    // Neither does a client whose certificate is not the mesh's.
    let foreign = TestCa::new("cluster.local");
    let refused = match endpoint
        .connect_with_connector(Connector::new(of(&foreign, "shop", "client"), controller))
        .await
    {
        Ok(channel) => OutboundPoliciesClient::new(channel)
            .watch(pb::OutboundTarget::from(&target))
            .await
            .err(),
        Err(e) => Some(tonic::Status::unavailable(e.to_string())),
    };
    assert!(refused.is_some(), "a client of a foreign CA was served");
    // And a server that is not the named controller is refused by clients.
    let impostor = endpoint
        .connect_with_connector(Connector::new(
            of(&ca, "shop", "client"),
            id("trellis", "someone-else"),
        ))
        .await;
    assert!(impostor.is_err(), "connected to the wrong identity");
    running.shutdown().await.unwrap();
}
