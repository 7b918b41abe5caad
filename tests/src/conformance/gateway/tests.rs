//! The gateway runner's data file, expectations and status reading.
use super::*;

#[test]
fn the_data_file_reads_and_names_vendored_manifests() {
    let tests = tests().unwrap();
    assert!(tests.len() >= 15);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../third_party/gateway-api/conformance/tests/gateway");
    for t in &tests {
        assert!(t.features.iter().any(|f| f == "Gateway"), "{}", t.name);
        for m in &t.manifests {
            assert!(dir.join(m).is_file(), "{}: {m}", t.name);
        }
        for (i, c) in t.cases.iter().enumerate() {
            c.expectation()
                .unwrap_or_else(|e| panic!("{} {}: {e}", t.name, c.title(i)));
        }
    }
}

#[test]
fn a_200_must_show_the_request_as_sent_unless_the_test_says_otherwise() {
    let case: GatewayCase = serde_json::from_value(serde_json::json!({
        "request": {"host": "example.com:1234", "path": "/a", "headers": {"Version": "one"}},
        "expect": {"backend": "infra-backend-v1"}
    }))
    .unwrap();
    let e = case.expectation().unwrap();
    assert_eq!(e.request_path.as_deref(), Some("/a"));
    assert_eq!(e.request_headers["Version"], "one");
    assert_eq!(e.host.as_deref(), Some("example.com:1234"));
    assert_eq!(e.method.as_deref(), Some("GET"));
    let removed: GatewayCase = serde_json::from_value(serde_json::json!({
        "request": {"path": "/remove", "headers": {"X-Header-Remove": "val"}},
        "expect": {"requestHeaders": {}, "absentRequestHeaders": ["X-Header-Remove"]}
    }))
    .unwrap();
    assert!(removed.expectation().unwrap().request_headers.is_empty());
    let refused: GatewayCase = serde_json::from_value(serde_json::json!({
        "request": {"path": "/"}, "expect": {"status": [404]}
    }))
    .unwrap();
    assert!(
        refused.expectation().unwrap().request_path.is_none(),
        "only a 200 shows the echo"
    );
}

#[test]
fn status_is_read_like_the_api() {
    let all = serde_json::json!([
        {"kind": "HTTPRoute", "namespace": "infra", "name": "r", "parents": [{
            "parentRef": {"name": "gw"}, "controllerName": "trellis.io/controller",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"},
                           {"type": "ResolvedRefs", "status": "False", "reason": "RefNotPermitted"}]}]},
        {"kind": "Gateway", "namespace": "infra", "name": "gw", "conditions": [],
         "extra": {"listeners": [{"name": "http", "attachedRoutes": 1}]}}
    ]);
    let check = |type_: &str, status: &str, reason: Option<&str>| ConditionCheck {
        route: "infra/r".into(),
        gateway: Some("infra/gw".into()),
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(String::from),
    };
    let ok = [
        check("Accepted", "True", None),
        check("ResolvedRefs", "False", Some("RefNotPermitted")),
    ];
    assert_eq!(unmet(&all, &ok, &[]), None);
    let why = unmet(&all, &[check("ResolvedRefs", "True", None)], &[]).unwrap();
    assert!(why.contains("wanted ResolvedRefs=True"), "{why}");
    let listeners = |n: u64| ListenerCheck {
        gateway: "infra/gw".into(),
        attached_routes: BTreeMap::from([("http".to_string(), n)]),
    };
    assert_eq!(unmet(&all, &[], &[listeners(1)]), None);
    assert!(unmet(&all, &[], &[listeners(2)]).is_some());
}

#[test]
fn objects_the_sandbox_cannot_run_are_left_out() {
    let conformance =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../third_party/gateway-api/conformance");
    let dir = tempfile::tempdir().unwrap();
    let (files, trusted, left_out) = prepare_base(&conformance, dir.path()).unwrap();
    assert!(trusted.starts_with("-----BEGIN CERTIFICATE-----"));
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("{GATEWAY_CLASS_NAME}"));
    assert!(text.contains("gatewayClassName: trellis"), "substituted");
    assert!(text.contains("tls-validity-checks-certificate"));
    let names: Vec<&str> = left_out
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert!(
        names.contains(&"Deployment gateway-conformance-infra/coredns"),
        "{left_out:?}"
    );
    assert!(
        names.contains(&"Deployment gateway-conformance-infra/tls-backend"),
        "{left_out:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("infra-backend")),
        "{left_out:?}"
    );
}
