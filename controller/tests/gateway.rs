//! Tier 0: Gateways of the Trellis GatewayClass (north-south): listeners,
//! allowedRoutes, hostname intersection, certificates with ReferenceGrant,
//! and the status of Gateways, GatewayClasses and routes with Gateway
//! parents. Also backend policies and the other route kinds on Services.

mod support;

use support::{index, svc, yaml};
use trellis_controller::index::Index;
use trellis_controller::{resolve, status};
use trellis_policy::{Backend, HostMatch, ListenerProtocol, ResourceRef, RetryBudget, TlsMode};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: infra, labels: {shared: "yes"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {shared: "yes"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.io/controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: trellis
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {shared: "yes"}}}}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: edge-cert}, {name: shared-cert, namespace: apps}]}
  - {name: passthrough, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: udp, port: 53, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: infra}
spec:
  gatewayClassName: someone-else
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Secret
metadata: {name: edge-cert, namespace: infra}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: shared-cert, namespace: apps}
type: kubernetes.io/tls
data: {tls.crt: Y2VydDI=, tls.key: a2V5Mg==}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: infra}, {name: foreign, namespace: infra}]
  hostnames: [store.example.com, shop.other.org]
  rules: [{backendRefs: [{name: store, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: outsider, namespace: other}
spec:
  parentRefs: [{name: edge, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: x, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-host, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: infra, sectionName: http}]
  hostnames: [api.example.org]
  rules: [{backendRefs: [{name: store, port: 80}]}]
"#;

fn gateway_index() -> Index {
    let mut objects = yaml(BASE);
    objects.push(
        svc("apps", "store")
            .cluster_ip("198.19.1.1")
            .port("http", 80, 8080)
            .build(),
    );
    index(objects)
}

fn edge() -> ResourceRef {
    ResourceRef::new("infra", "edge")
}

#[test]
fn listeners_routes_and_hostnames() {
    let index = gateway_index();
    let gw = resolve::gateway(index.store(), &edge()).expect("a Trellis gateway");
    let names: Vec<_> = gw
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.protocol))
        .collect();
    assert_eq!(
        names,
        [
            ("http", ListenerProtocol::Http),
            ("https", ListenerProtocol::Https),
            ("passthrough", ListenerProtocol::Tls)
        ]
    );
    let http = &gw.listeners[0];
    let routes: Vec<_> = http
        .http_routes
        .iter()
        .map(|r| (r.meta.name.as_str(), r.hostnames.clone()))
        .collect();
    // Only the intersecting hostname is kept; `outsider`'s namespace is not
    // selected and `wrong-host` does not intersect.
    assert_eq!(
        routes,
        [("store", vec![HostMatch::Exact("store.example.com".into())])]
    );
    assert!(matches!(
        http.http_routes[0].rules[0].backends[0].backend,
        Backend::Service(_)
    ));
    // The HTTPS listener's default namespace policy is Same: `apps` is not allowed.
    assert!(gw.listeners[1].http_routes.is_empty());
    let tls = gw.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.mode, TlsMode::Terminate);
    // The cross-namespace certificate needs a ReferenceGrant.
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].chain_pem, "cert");
    assert_eq!(
        gw.listeners[2].tls.as_ref().unwrap().mode,
        TlsMode::Passthrough
    );
    assert_eq!(
        resolve::gateway(index.store(), &ResourceRef::new("infra", "foreign")),
        None
    );
}

#[test]
fn reference_grants_unlock_certificates() {
    let mut index = gateway_index();
    let condition = |index: &Index| {
        let st = status::others(index.store());
        let gw = st
            .iter()
            .find(|s| s.kind == "Gateway" && s.name == "edge")
            .unwrap();
        gw.extra.as_ref().unwrap()["listeners"][1]["conditions"][1]["reason"].clone()
    };
    assert_eq!(condition(&index), "RefNotPermitted");
    index.apply(
        yaml(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: apps}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  to: [{group: \"\", kind: Secret, name: shared-cert}]\n",
        )
        .remove(0),
    );
    assert_eq!(condition(&index), "ResolvedRefs");
    let gw = resolve::gateway(index.store(), &edge()).unwrap();
    assert_eq!(gw.listeners[1].tls.as_ref().unwrap().certificates.len(), 2);
}

#[test]
fn gateway_and_route_status() {
    let index = gateway_index();
    let others = status::others(index.store());
    let class: Vec<_> = others
        .iter()
        .filter(|s| s.kind == "GatewayClass")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(class, ["trellis"]);
    let gw = others.iter().find(|s| s.kind == "Gateway").unwrap();
    assert_eq!(gw.name, "edge");
    let conds = gw.conditions.as_ref().unwrap();
    assert_eq!(
        (conds[0].type_.as_str(), conds[0].status.as_str()),
        ("Accepted", "True")
    );
    assert_eq!(
        (conds[1].type_.as_str(), conds[1].reason.as_str()),
        ("Programmed", "Pending")
    );
    let listeners = &gw.extra.as_ref().unwrap()["listeners"];
    assert_eq!(listeners[0]["attachedRoutes"], 1);
    assert_eq!(
        listeners[3]["conditions"][0]["reason"],
        "UnsupportedProtocol"
    );

    let routes = status::routes(index.store());
    let reason = |name: &str| {
        let r = routes.iter().find(|r| r.name == name).unwrap();
        let parents = r.parents.as_ref().unwrap();
        // Only the parent of the Trellis class is ours.
        assert_eq!(parents.len(), 1, "{r:?}");
        parents[0].conditions[0].reason.clone()
    };
    assert_eq!(reason("store"), "Accepted");
    assert_eq!(reason("outsider"), "NotAllowedByListeners");
    assert_eq!(reason("wrong-host"), "NoMatchingListenerHostname");
}

#[test]
fn programmed_follows_the_gateway_proxy() {
    let mut index = gateway_index();
    index.set_programmed(edge(), true);
    let others = status::others(index.store());
    let gw = others.iter().find(|s| s.kind == "Gateway").unwrap();
    assert_eq!(gw.conditions.as_ref().unwrap()[1].reason, "Programmed");
}

#[test]
fn in_a_manifest_directory_addresses_in_the_gateway_status_mean_programmed() {
    use trellis_controller::source::dir;
    let programmed = |with_address: bool| {
        let status = if with_address {
            "status: {addresses: [{type: IPAddress, value: 198.19.0.9}]}\n"
        } else {
            ""
        };
        let text = format!("{BASE}---\n").replace(
            "metadata: {name: edge, namespace: infra}\n",
            &format!("metadata: {{name: edge, namespace: infra}}\n{status}"),
        );
        let (objects, errors) = dir::parse(std::path::Path::new("m.yaml"), &text);
        assert!(errors.is_empty(), "{errors:?}");
        let index = Index::shared(Default::default());
        dir::reset_all(&index, objects);
        let index = index.lock();
        let others = status::others(index.store());
        let gw = others.iter().find(|s| s.name == "edge").unwrap();
        gw.conditions.as_ref().unwrap()[1].status.clone()
    };
    assert_eq!(
        programmed(true),
        "True",
        "the sandbox wrote addresses: a proxy is ready"
    );
    assert_eq!(programmed(false), "False");
}

#[test]
fn backend_traffic_policies_set_retry_budgets() {
    let mut index = gateway_index();
    for o in yaml(
        r#"
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: budget, namespace: apps}
spec:
  targetRefs: [{group: "", kind: Service, name: store}]
  retryConstraint: {budget: {percent: 35}}
"#,
    ) {
        index.apply(o);
    }
    let p = resolve::outbound(index.store(), "198.19.1.1:80".parse().unwrap(), "apps").unwrap();
    let Backend::Service(b) = &p.backend else {
        panic!()
    };
    let budget = b.retry_budget.clone().unwrap();
    assert_eq!(
        budget,
        RetryBudget {
            percent: 35,
            ..RetryBudget::default()
        }
    );
}

#[test]
fn grpc_annotations_tcp_and_tls_routes_on_services() {
    let mut index = gateway_index();
    for o in yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc
  namespace: apps
  annotations: {timeout.trellis.io/request: 3s, retry.trellis.io/grpc-codes: "UNAVAILABLE, 4"}
spec:
  parentRefs: [{group: "", kind: Service, name: store, port: 80}]
  rules: [{matches: [{method: {service: shop.Store, method: Get}}], backendRefs: [{name: store, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: store}]
  rules: [{backendRefs: [{name: store, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: tls, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: store}]
  hostnames: [store.example.com]
  rules: [{backendRefs: [{name: store, port: 80}]}]
"#,
    ) {
        index.apply(o);
    }
    let p = resolve::outbound(index.store(), "198.19.1.1:80".parse().unwrap(), "apps").unwrap();
    let rule = &p.grpc_routes[0].rules[0];
    assert_eq!(
        rule.timeouts.request,
        Some(std::time::Duration::from_secs(3))
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!((retry.codes.clone(), retry.attempts), (vec![14, 4], 2));
    assert_eq!(p.tcp_routes[0].meta.name, "tcp");
    assert_eq!(
        p.tls_routes[0].hostnames,
        [HostMatch::Exact("store.example.com".into())]
    );
}
