//! Tier 0: every upstream mesh conformance manifest, loaded with the mesh
//! base manifests and what Kubernetes would compute for them (ClusterIPs,
//! meshed pods, EndpointSlices), resolves to the expected policy and status
//! in `fixtures/mesh/<test>.yaml`.
//!
//! The fixtures are readable YAML: for each parent Service of the test's
//! routes, the policy each relevant client namespace receives on its HTTP
//! (and gRPC) ports, then the status of every route. After a deliberate
//! change of behaviour, `TRELLIS_BLESS=1 cargo test -p trellis-controller
//! --test mesh_conformance` rewrites them; review the diff like code.

mod support;

use pretty_assertions::assert_eq;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use trellis_controller::objects::Object;
use trellis_controller::{resolve, status};
use trellis_policy::OutboundPolicy;

#[derive(Serialize)]
struct Query {
    client: String,
    service: String,
    port: u16,
    policy: Option<OutboundPolicy>,
}

#[derive(Serialize)]
struct Expected {
    policies: Vec<Query>,
    status: Vec<status::ObjectStatus>,
}

fn resolve_test(test: &Path) -> Expected {
    let base = support::third_party().join("mesh/manifests.yaml");
    let objects = support::cluster(&[base, test.to_path_buf()]);
    let test_routes = support::cluster(&[test.to_path_buf()]);
    let index = support::index(objects);
    let store = index.store();

    let mut parents = BTreeSet::new();
    let mut grpc = false;
    for o in &test_routes {
        let (ns, refs) = match o {
            Object::HttpRoute(r) => (
                r.metadata.namespace.clone().unwrap(),
                r.spec
                    .parent_refs
                    .iter()
                    .flatten()
                    .map(|p| (p.namespace.clone(), p.name.clone()))
                    .collect::<Vec<_>>(),
            ),
            Object::GrpcRoute(r) => {
                grpc = true;
                (
                    r.metadata.namespace.clone().unwrap(),
                    r.spec
                        .parent_refs
                        .iter()
                        .flatten()
                        .map(|p| (p.namespace.clone(), p.name.clone()))
                        .collect(),
                )
            }
            _ => continue,
        };
        for (pns, name) in refs {
            let pns = pns.unwrap_or_else(|| ns.clone());
            parents.insert((pns.clone(), name.clone(), pns));
            parents.insert((ns.clone(), name, ns.clone()).clone());
        }
    }
    let mut policies = Vec::new();
    let ports: &[u16] = if grpc { &[7070] } else { &[80, 8080] };
    // (client ns, service name, service ns)
    let mut seen = BTreeSet::new();
    for (client, name, _) in &parents {
        let svc_ns = parents
            .iter()
            .find(|(_, n, s)| {
                n == name
                    && store
                        .services
                        .keys()
                        .any(|k| &k.namespace == s && &k.name == name)
            })
            .map(|(_, _, s)| s.clone())
            .unwrap_or_else(|| client.clone());
        let svc = trellis_policy::ResourceRef::new(svc_ns, name.clone());
        let Some(info) = store.services.get(&svc) else {
            continue;
        };
        for port in ports {
            if !seen.insert((client.clone(), svc.clone(), *port)) {
                continue;
            }
            let target = SocketAddr::new(info.cluster_ips[0], *port);
            policies.push(Query {
                client: client.clone(),
                service: svc.to_string(),
                port: *port,
                policy: resolve::outbound(store, target, client),
            });
        }
    }
    Expected {
        policies,
        status: status::routes(store),
    }
}

#[test]
fn upstream_mesh_tests_resolve_to_expected_policy() {
    let dir = support::third_party().join("tests/mesh");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesh");
    let bless = std::env::var_os("TRELLIS_BLESS").is_some();
    let mut tests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    tests.sort();
    assert!(
        tests.len() >= 20,
        "upstream mesh tests missing from {}",
        dir.display()
    );
    for test in tests {
        let name = test.file_name().unwrap().to_str().unwrap().to_string();
        let actual = serde_json::to_value(resolve_test(&test)).unwrap();
        let fixture = fixtures.join(&name);
        if bless {
            let text = format!(
                "# Expected policy and status for upstream conformance/tests/mesh/{name}.\n# Rewritten by TRELLIS_BLESS=1; review changes like code.\n{}",
                serde_saphyr::to_string(&actual).unwrap()
            );
            std::fs::write(&fixture, text).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        let expected: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(actual, expected, "{name}");
    }
}

/// Every valid upstream mesh route is accepted with all references
/// resolved; the one referring to a Service the manifests lack says so.
#[test]
fn upstream_mesh_routes_are_accepted() {
    let dir = support::third_party().join("tests/mesh");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let test = entry.unwrap().path();
        let expected = resolve_test(&test);
        assert!(!expected.status.is_empty(), "{}: no status", test.display());
        for route in &expected.status {
            for parent in route.parents.iter().flatten() {
                let cond = |t: &str| parent.conditions.iter().find(|c| c.type_ == t).unwrap();
                assert!(cond("Accepted").is_true(), "{route:?}");
                if route.name == "mesh-grpc-weighted-backends" {
                    // echo-v3 is not part of the mesh manifests (weight 0).
                    assert_eq!(cond("ResolvedRefs").reason, "BackendNotFound");
                } else {
                    assert!(cond("ResolvedRefs").is_true(), "{route:?}");
                }
            }
        }
    }
}

/// MeshFrontend / MeshClusterIPMatching: the route governs requests sent to
/// the parent's ClusterIP, not to its pods' IPs, nor to another Service's
/// ClusterIP (whatever the Host header would say).
#[test]
fn mesh_frontend_is_matched_by_cluster_ip() {
    let base = support::third_party().join("mesh/manifests.yaml");
    let test = support::third_party().join("tests/mesh/mesh-frontend.yaml");
    let index = support::index(support::cluster(&[base, test]));
    let store = index.store();
    let ns = "gateway-conformance-mesh";
    let ip =
        |name: &str| store.services[&trellis_policy::ResourceRef::new(ns, name)].cluster_ips[0];
    let routes = |p: Option<OutboundPolicy>| p.map(|p| p.http_routes.len());
    assert_eq!(
        routes(resolve::outbound(
            store,
            SocketAddr::new(ip("echo-v2"), 80),
            ns
        )),
        Some(1)
    );
    assert_eq!(
        routes(resolve::outbound(
            store,
            SocketAddr::new(ip("echo"), 80),
            ns
        )),
        Some(0)
    );
    let pod_ip = store.pods[&trellis_policy::ResourceRef::new(ns, "echo-v2-0")].ips[0];
    assert_eq!(
        resolve::outbound(store, SocketAddr::new(pod_ip, 8080), ns),
        None
    );
}
