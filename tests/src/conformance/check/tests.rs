use super::*;
use bytes::Bytes;

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
    let mut h: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        h.entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.to_string());
    }
    Response {
        status,
        headers: h,
        body: Bytes::from(body.to_string()),
    }
}

fn echo(pod: &str, path: &str, headers: &str) -> String {
    format!(
        r#"{{"pod":"{pod}","namespace":"gateway-conformance-mesh","path":"{path}","headers":{headers}}}"#
    )
}

fn test(name: &str) -> Test {
    tests()
        .unwrap()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
}

#[test]
fn the_data_file_lists_every_upstream_mesh_test() {
    let names: Vec<String> = tests().unwrap().into_iter().map(|t| t.name).collect();
    for want in [
        "MeshBasic",
        "MeshTrafficSplit",
        "MeshPorts",
        "MeshFrontend",
        "MeshFrontendHostname",
        "MeshConsumerRoute",
        "MeshHTTPRouteMatching",
        "MeshHTTPRouteQueryParamMatching",
        "MeshHTTPRouteRequestHeaderModifier",
        "MeshHTTPRouteBackendRequestHeaderModifier",
        "MeshHTTPRouteRewritePath",
        "MeshHTTPRouteSchemeRedirect",
        "MeshHTTPRouteRedirectPort",
        "MeshHTTPRouteRedirectPath",
        "MeshHTTPRouteRedirectHostAndStatus",
        "MeshHTTPRoute303Redirect",
        "MeshHTTPRoute307Redirect",
        "MeshHTTPRoute308Redirect",
        "MeshHTTPRouteNamedRule",
        "MeshHTTPRouteSimpleSameNamespace",
        "MeshHTTPRouteWeight",
        "MeshGRPCRouteWeight",
    ] {
        assert!(names.contains(&want.to_string()), "{want} missing");
    }
    let vendored = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../third_party/gateway-api/conformance/tests/mesh"
    ))
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
    .collect::<Vec<_>>();
    for t in tests().unwrap() {
        for m in &t.manifests {
            assert!(vendored.contains(m), "{}: {m} is not vendored", t.name);
        }
    }
    for m in &vendored {
        assert!(
            tests().unwrap().iter().any(|t| t.manifests.contains(m)),
            "no test applies {m}"
        );
    }
    assert_eq!(
        test("MeshHTTPRouteBackendRequestHeaderModifier")
            .cases
            .len(),
        7,
        "shared cases"
    );
}

#[test]
fn status_backend_and_response_headers() {
    let t = test("MeshPorts");
    let c = &t.cases[0];
    let good = resp(
        200,
        &[("X-Header-Set", "v1")],
        &echo("echo-v1-abc", "/", "{}"),
    );
    assert_eq!(compare(&c.request, &c.expect, &good), None);
    let wrong_pod = resp(
        200,
        &[("X-Header-Set", "v1")],
        &echo("echo-v2-abc", "/", "{}"),
    );
    assert_eq!(
        compare(&c.request, &c.expect, &wrong_pod).unwrap(),
        "expected pod name to start with echo-v1, got \"echo-v2-abc\""
    );
    let no_header = resp(200, &[], &echo("echo-v1-abc", "/", "{}"));
    assert!(
        compare(&c.request, &c.expect, &no_header)
            .unwrap()
            .contains("X-Header-Set=v1")
    );
    let absent = &t.cases[1];
    assert!(
        compare(&absent.request, &absent.expect, &good)
            .unwrap()
            .contains("expected no response header")
    );
    let failed = resp(503, &[], "");
    assert_eq!(
        compare(&c.request, &c.expect, &failed).unwrap(),
        "wanted status [200], got 503"
    );
}

#[test]
fn request_headers_join_values_like_upstream() {
    let t = test("MeshHTTPRouteRequestHeaderModifier");
    let c = &t.cases[3];
    let good = resp(
        200,
        &[],
        &echo(
            "echo-v1-a",
            "/add",
            r#"{"Some-Other-Header":["val"],"X-Header-Add":["some-other-value","add-appends-values"]}"#,
        ),
    );
    assert_eq!(compare(&c.request, &c.expect, &good), None);
    let replaced = resp(
        200,
        &[],
        &echo(
            "echo-v1-a",
            "/add",
            r#"{"Some-Other-Header":["val"],"X-Header-Add":["add-appends-values"]}"#,
        ),
    );
    assert!(
        compare(&c.request, &c.expect, &replaced)
            .unwrap()
            .contains("X-Header-Add")
    );
    let removal = &t.cases[4];
    let kept = resp(
        200,
        &[],
        &echo("echo-v1-a", "/remove", r#"{"x-header-remove":["val"]}"#),
    );
    assert!(
        compare(&removal.request, &removal.expect, &kept)
            .unwrap()
            .contains("absent")
    );
}

#[test]
fn rewritten_paths_are_checked_on_the_echo() {
    let t = test("MeshHTTPRouteRewritePath");
    let c = &t.cases[0];
    assert_eq!(
        compare(
            &c.request,
            &c.expect,
            &resp(200, &[], &echo("echo-v1-a", "/one/two", "{}"))
        ),
        None
    );
    assert!(
        compare(
            &c.request,
            &c.expect,
            &resp(200, &[], &echo("echo-v1-a", "/prefix/one/two", "{}"))
        )
        .is_some()
    );
}

#[test]
fn redirects_compare_location_with_upstream_defaults() {
    let t = test("MeshHTTPRouteRedirectPort");
    let c = &t.cases[0];
    let good = resp(302, &[("Location", "http://echo:8083/port")], "");
    assert_eq!(compare(&c.request, &c.expect, &good), None);
    let wrong_port = resp(302, &[("Location", "http://echo/port")], "");
    assert!(compare(&c.request, &c.expect, &wrong_port).is_some());
    let no_location = resp(302, &[], "");
    assert_eq!(
        compare(&c.request, &c.expect, &no_location).unwrap(),
        "expected a Location header"
    );
    let scheme = &test("MeshHTTPRouteSchemeRedirect").cases[1];
    assert_eq!(
        compare(
            &scheme.request,
            &scheme.expect,
            &resp(
                302,
                &[("Location", "https://example.org/scheme-and-host")],
                ""
            )
        ),
        None
    );
    assert!(
        compare(
            &scheme.request,
            &scheme.expect,
            &resp(
                302,
                &[("Location", "http://example.org/scheme-and-host")],
                ""
            )
        )
        .is_some()
    );
    let path = &test("MeshHTTPRouteRedirectPath").cases[0];
    assert_eq!(
        compare(
            &path.request,
            &path.expect,
            &resp(
                302,
                &[("Location", "http://echo/replacement-prefix/lemon")],
                ""
            )
        ),
        None
    );
    // An unrequested port fails, as upstream's default is the request's
    // (none for `http://echo/...`).
    assert!(
        compare(
            &path.request,
            &path.expect,
            &resp(
                302,
                &[("Location", "http://echo:80/replacement-prefix/lemon")],
                ""
            )
        )
        .is_some()
    );
    assert_eq!(
        parse_location("https://example.org:8443/a/b?x=1"),
        Redirect {
            scheme: Some("https".into()),
            host: Some("example.org".into()),
            port: Some("8443".into()),
            path: Some("/a/b".into())
        }
    );
}
