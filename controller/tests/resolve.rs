//! Tier 0: the GAMMA rules the resolver implements, one table-like test per
//! rule, on small hand-made clusters.

mod support;

use pretty_assertions::assert_eq;
use std::net::SocketAddr;
use support::{index, pod, slice, svc, yaml};
use trellis_controller::index::{Index, Outbound};
use trellis_controller::objects::{Kind, ObjectKey};
use trellis_controller::{resolve, status};
use trellis_policy::{
    Backend, Fraction, HttpFilter, MtlsMode, OutboundPolicy, PathMatch, Protocol, RequestRedirect,
    ResourceRef,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Two namespaces: `shop` with Service `web` (198.19.0.1:80 → 8080, two
/// meshed pods) and `canary` (198.19.0.2); `client` with nothing.
fn shop() -> Index {
    let mut objects = vec![
        svc("shop", "web")
            .cluster_ip("198.19.0.1")
            .port("http", 80, 8080)
            .app_protocol("http")
            .build(),
        svc("shop", "canary")
            .cluster_ip("198.19.0.2")
            .port("http", 80, 8080)
            .build(),
        pod("shop", "web-0")
            .ip("198.18.0.1")
            .service_account("web")
            .meshed()
            .build(),
        pod("shop", "web-1").ip("198.18.0.2").build(),
        pod("shop", "canary-0").ip("198.18.0.3").meshed().build(),
        slice("shop", "web")
            .port("http", 8080)
            .endpoint("web-0", "198.18.0.1")
            .endpoint("web-1", "198.18.0.2")
            .unready_endpoint("web-2", "198.18.0.9")
            .build(),
        slice("shop", "canary")
            .port("http", 8080)
            .endpoint("canary-0", "198.18.0.3")
            .build(),
    ];
    objects.extend(yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: client}\n",
    ));
    index(objects)
}

fn policy(index: &Index, target: &str, ns: &str) -> OutboundPolicy {
    resolve::outbound(index.store(), addr(target), ns).expect("a Service port")
}

fn route_names(p: &OutboundPolicy) -> Vec<String> {
    p.http_routes.iter().map(|r| r.meta.name.clone()).collect()
}

#[test]
fn a_service_without_routes_goes_to_its_ready_endpoints() {
    let index = shop();
    let p = policy(&index, "198.19.0.1:80", "client");
    assert_eq!(p.service, ResourceRef::new("shop", "web"));
    assert_eq!(p.protocol, Protocol::Http1);
    assert!(p.http_routes.is_empty());
    let Backend::Service(b) = &p.backend else {
        panic!("{:?}", p.backend)
    };
    assert_eq!(b.authority, "web.shop.svc.cluster.local:80");
    let eps: Vec<_> = b
        .endpoints
        .iter()
        .map(|e| (e.addr, e.identity.as_ref().map(|i| i.to_string())))
        .collect();
    assert_eq!(
        eps,
        vec![
            (
                addr("198.18.0.1:8080"),
                Some("spiffe://cluster.local/ns/shop/sa/web".to_string())
            ),
            (addr("198.18.0.2:8080"), None),
        ]
    );
}

#[test]
fn only_cluster_ips_have_policy() {
    let index = shop();
    // A pod IP, an unknown IP, and a port the Service does not have.
    for target in ["198.18.0.1:8080", "10.0.0.1:80", "198.19.0.1:81"] {
        assert_eq!(
            resolve::outbound(index.store(), addr(target), "client"),
            None,
            "{target}"
        );
    }
}

const PRODUCER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80, weight: 90}, {name: canary, port: 80, weight: 10}]
"#;

const CONSUMER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: client}
spec:
  parentRefs: [{group: "", kind: Service, name: web, namespace: shop}]
  rules:
  - backendRefs: [{name: web, namespace: shop, port: 80}]
"#;

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace_only() {
    let mut index = shop();
    for o in yaml(PRODUCER).into_iter().chain(yaml(CONSUMER)) {
        index.apply(o);
    }
    assert_eq!(
        route_names(&policy(&index, "198.19.0.1:80", "client")),
        ["consumer"]
    );
    assert_eq!(
        route_names(&policy(&index, "198.19.0.1:80", "shop")),
        ["producer"]
    );
    assert_eq!(
        route_names(&policy(&index, "198.19.0.1:80", "elsewhere")),
        ["producer"]
    );
    // The consumer route may send to its own parent Service without a grant.
    let c = &policy(&index, "198.19.0.1:80", "client").http_routes[0];
    assert!(matches!(
        c.rules[0].backends[0].backend,
        Backend::Service(_)
    ));
}

#[test]
fn split_weights_and_defaults() {
    let mut index = shop();
    for o in yaml(PRODUCER) {
        index.apply(o);
    }
    let p = policy(&index, "198.19.0.1:80", "client");
    let rule = &p.http_routes[0].rules[0];
    assert_eq!(rule.matches.len(), 1);
    assert_eq!(rule.matches[0].path, Some(PathMatch::Prefix("/".into())));
    let weights: Vec<_> = rule
        .backends
        .iter()
        .map(|b| (b.backend.name(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("shop/web:80".to_string(), 90),
            ("shop/canary:80".to_string(), 10)
        ]
    );
}

#[test]
fn parent_ports_narrow_attachment() {
    let mut index = shop();
    index.apply(
        svc("shop", "web")
            .cluster_ip("198.19.0.1")
            .port("http", 80, 8080)
            .port("admin", 9000, 9000)
            .build(),
    );
    index.apply(yaml(PRODUCER).remove(0));
    assert_eq!(
        route_names(&policy(&index, "198.19.0.1:80", "client")),
        ["producer"]
    );
    assert!(route_names(&policy(&index, "198.19.0.1:9000", "client")).is_empty());
}

#[test]
fn invalid_references_become_invalid_backends_and_status() {
    let mut index = shop();
    for o in yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs:
    - {name: web, port: 80}
    - {name: missing, port: 80}
    - {group: example.com, kind: Bucket, name: b}
    - {name: web, namespace: other, port: 80}
"#,
    ) {
        index.apply(o);
    }
    let p = policy(&index, "198.19.0.1:80", "shop");
    let kinds: Vec<_> = p.http_routes[0].rules[0]
        .backends
        .iter()
        .map(|b| match &b.backend {
            Backend::Service(_) => "service".to_string(),
            Backend::Invalid { message, .. } => message.clone(),
        })
        .collect();
    assert_eq!(kinds[0], "service");
    assert!(kinds[1].contains("shop/missing not found"), "{}", kinds[1]);
    assert!(
        kinds[2].contains("unsupported backend kind"),
        "{}",
        kinds[2]
    );
    assert!(kinds[3].contains("no ReferenceGrant"), "{}", kinds[3]);
    let st = status::routes(index.store());
    let conds = &st[0].parents.as_ref().unwrap()[0].conditions;
    assert_eq!(
        (conds[0].type_.as_str(), conds[0].status.as_str()),
        ("Accepted", "True")
    );
    assert_eq!(
        (conds[1].type_.as_str(), conds[1].reason.as_str()),
        ("ResolvedRefs", "BackendNotFound")
    );
}

#[test]
fn reference_grants_allow_cross_namespace_backends() {
    let mut index = shop();
    index.apply(
        svc("other", "api")
            .cluster_ip("198.19.0.3")
            .port("http", 80, 80)
            .build(),
    );
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: api, namespace: other, port: 80}]
"#;
    index.apply(yaml(route).remove(0));
    let reason = |index: &Index| {
        status::routes(index.store())[0].parents.as_ref().unwrap()[0].conditions[1]
            .reason
            .clone()
    };
    assert_eq!(reason(&index), "RefNotPermitted");
    let grant = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-shop, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service}]
"#;
    index.apply(yaml(grant).remove(0));
    assert_eq!(reason(&index), "ResolvedRefs");
    let p = policy(&index, "198.19.0.1:80", "shop");
    assert!(matches!(
        p.http_routes[0].rules[0].backends[0].backend,
        Backend::Service(_)
    ));
    index.delete(Kind::ReferenceGrant, &ObjectKey::new("other", "allow-shop"));
    assert_eq!(reason(&index), "RefNotPermitted");
}

#[test]
fn routes_are_ordered_oldest_first_then_by_name() {
    let mut index = shop();
    let route = |name: &str, created: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web}}]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n"
        )
    };
    index.apply(yaml(&route("b", "2024-01-01T00:00:00Z")).remove(0));
    index.apply(yaml(&route("a", "2024-01-02T00:00:00Z")).remove(0));
    index.apply(yaml(&route("c", "2024-01-01T00:00:00Z")).remove(0));
    assert_eq!(
        route_names(&policy(&index, "198.19.0.1:80", "shop")),
        ["b", "c", "a"]
    );
}

#[test]
fn filters_get_the_specs_defaults() {
    let mut index = shop();
    index.apply(
        yaml(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - matches: [{path: {type: Exact, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: canary, port: 80}, percent: 25}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {request: 0s, backendRequest: 2s}
    retry: {codes: [503]}
  - matches: [{path: {type: Exact, value: /bad}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]
    backendRefs: [{name: web, port: 80}]
"#,
        )
        .remove(0),
    );
    let p = policy(&index, "198.19.0.1:80", "shop");
    let rules = &p.http_routes[0].rules;
    assert!(matches!(
        &rules[0].filters[0],
        HttpFilter::RequestRedirect(RequestRedirect { status: 302, .. })
    ));
    match &rules[1].filters[0] {
        HttpFilter::RequestMirror(m) => {
            assert_eq!(
                m.fraction,
                Fraction {
                    numerator: 25,
                    denominator: 100
                }
            );
            assert_eq!(m.backend.name(), "shop/canary:80");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rules[1].timeouts.request, None);
    assert_eq!(
        rules[1].timeouts.backend_request,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(
        rules[1]
            .retry
            .as_ref()
            .map(|r| (r.attempts, r.codes.clone())),
        Some((2, vec![503]))
    );
    assert!(matches!(&rules[2].filters[0], HttpFilter::Invalid { .. }));
}

#[test]
fn unsupported_values_make_the_route_unaccepted() {
    let mut index = shop();
    index.apply(
        yaml(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-regex, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{matches: [{path: {type: RegularExpression, value: "/("}}], backendRefs: [{name: web, port: 80}]}]
"#,
        )
        .remove(0),
    );
    assert!(
        policy(&index, "198.19.0.1:80", "shop")
            .http_routes
            .is_empty()
    );
    let st = status::routes(index.store());
    let accepted = &st[0].parents.as_ref().unwrap()[0].conditions[0];
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "UnsupportedValue")
    );
}

#[test]
fn subscribers_see_changes_and_only_changes() {
    let mut index = shop();
    let mut web = index.outbound(addr("198.19.0.1:80"), "shop");
    let mut pod_ip = index.outbound(addr("198.18.0.1:8080"), "shop");
    assert_eq!(*pod_ip.borrow_and_update(), Outbound::NoPolicy);
    web.borrow_and_update();
    // A change elsewhere does not wake this subscriber.
    index.apply(
        svc("shop", "unrelated")
            .cluster_ip("198.19.0.9")
            .port("http", 80, 80)
            .build(),
    );
    assert!(!web.has_changed().unwrap());
    for o in yaml(PRODUCER) {
        index.apply(o);
    }
    assert!(web.has_changed().unwrap());
    let Outbound::Policy(p) = web.borrow_and_update().clone() else {
        panic!()
    };
    assert_eq!(route_names(&p), ["producer"]);
    // An endpoint change of a backend (canary) reaches the parent's subscribers.
    index.apply(slice("shop", "canary").port("http", 8080).build());
    assert!(web.has_changed().unwrap());
    assert!(!pod_ip.has_changed().unwrap());
}

#[test]
fn inbound_protocol_mtls_and_authorization() {
    let mut index = shop();
    index.apply(
        slice("shop", "web")
            .port("http", 8080)
            .app_protocol("http")
            .endpoint("web-0", "198.18.0.1")
            .build(),
    );
    let web0 = ResourceRef::new("shop", "web-0");
    let p = resolve::inbound(index.store(), &web0, 8080);
    assert_eq!(
        (p.protocol, p.mtls),
        (Protocol::Http1, MtlsMode::Permissive)
    );
    assert!(p.authorization.policies.is_empty());
    for o in yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {trellis.io/mtls: strict}}
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: ALLOW
  rules:
  - from: [{namespace: client}, {serviceAccount: {namespace: ops, name: prom}}]
    ports: [8080]
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: canary-only, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: canary}]
  rules: [{from: [{spiffeId: "spiffe://cluster.local/ns/a/sa/b"}]}]
"#,
    ) {
        index.apply(o);
    }
    let p = resolve::inbound(index.store(), &web0, 8080);
    assert_eq!(p.mtls, MtlsMode::Strict);
    let names: Vec<_> = p
        .authorization
        .policies
        .iter()
        .map(|a| a.meta.name.clone())
        .collect();
    assert_eq!(names, ["web-from-client"]);
    let st = status::others(index.store());
    assert!(
        st.iter()
            .all(|s| s.conditions.as_ref().unwrap()[0].is_true()),
        "{st:?}"
    );
    // A pod annotation beats its namespace.
    index.apply(
        pod("shop", "web-0")
            .ip("198.18.0.1")
            .meshed()
            .annotate("trellis.io/mtls", "permissive")
            .build(),
    );
    assert_eq!(
        resolve::inbound(index.store(), &web0, 8080).mtls,
        MtlsMode::Permissive
    );
}
