use super::*;
use trellis_policy::build::{
    self, cors, get, invalid_filter, mirror, redirect, request_headers, response_headers, service,
    url_rewrite,
};

const ORIGIN: Origin<'static> = Origin {
    scheme: "http",
    port: 80,
    service: "echo",
};

fn prefix(p: &str) -> HttpMatch {
    HttpMatch {
        path: Some(trellis_policy::PathMatch::Prefix(p.into())),
        ..HttpMatch::default()
    }
}

/// Runs the request filters over a GET of `path` to host `echo`.
fn run(
    filters: &[HttpFilter],
    matched: Option<&HttpMatch>,
    path: &str,
) -> (Result<Option<Response<Body>>, Refusal>, Request<()>) {
    let mut req = get(path).host("echo").build();
    let mut plan = Plan::default();
    let r = request(filters, matched, &mut req, ORIGIN, &mut plan);
    (r, req)
}

fn location(r: Result<Option<Response<Body>>, Refusal>) -> (u16, String) {
    let rsp = r.unwrap().expect("the proxy answers a redirect itself");
    let loc = rsp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    (rsp.status().as_u16(), loc)
}

/// A filter, the match that selected its rule, the request path, and the
/// expected status and `Location`.
type RedirectCase = (
    HttpFilter,
    Option<HttpMatch>,
    &'static str,
    (u16, &'static str),
);

#[test]
fn redirects_answer_with_the_exact_location() {
    let cases: Vec<RedirectCase> = vec![
        (
            redirect().scheme("https").into(),
            None,
            "/scheme?a=1",
            (302, "https://echo/scheme?a=1"),
        ),
        (
            redirect().hostname("example.org").status(301).into(),
            None,
            "/host",
            (301, "http://example.org/host"),
        ),
        (
            redirect().port(8083).into(),
            None,
            "/port",
            (302, "http://echo:8083/port"),
        ),
        (
            redirect().prefix_path("/replacement-prefix").into(),
            Some(prefix("/original-prefix")),
            "/original-prefix/lemon",
            (302, "http://echo/replacement-prefix/lemon"),
        ),
        (
            redirect()
                .full_path("/full-path-replacement")
                .status(308)
                .into(),
            Some(prefix("/full")),
            "/full/path/original",
            (308, "http://echo/full-path-replacement"),
        ),
    ];
    for (f, matched, path, (status, want)) in cases {
        let (r, _) = run(std::slice::from_ref(&f), matched.as_ref(), path);
        assert_eq!(location(r), (status, want.to_string()), "{path}");
    }
}

#[test]
fn a_redirect_without_a_host_uses_the_service_name() {
    let mut req = build::request("GET", "/x").build();
    let f: HttpFilter = redirect().status(307).into();
    let r = request(
        std::slice::from_ref(&f),
        None,
        &mut req,
        ORIGIN,
        &mut Plan::default(),
    );
    assert_eq!(location(r), (307, "http://echo/x".to_string()));
}

#[test]
fn rewrites_and_header_modifiers_change_the_request_in_order() {
    let filters: Vec<HttpFilter> = vec![
        request_headers()
            .set("x-set", "one")
            .add("x-add", "b")
            .remove("x-gone")
            .into(),
        url_rewrite()
            .prefix_path("/")
            .hostname("elsewhere.example")
            .into(),
    ];
    let mut req = get("/strip-prefix/three?q=1")
        .host("echo")
        .header("x-add", "a")
        .header("x-gone", "1")
        .build();
    let r = request(
        &filters,
        Some(&prefix("/strip-prefix")),
        &mut req,
        ORIGIN,
        &mut Plan::default(),
    );
    assert!(r.unwrap().is_none(), "the request goes on");
    assert_eq!(req.uri(), "/three?q=1");
    assert_eq!(req.headers()[header::HOST], "elsewhere.example");
    assert_eq!(req.headers()["x-set"], "one");
    assert_eq!(req.headers()["x-add"], "a,b");
    assert!(req.headers().get("x-gone").is_none());
}

#[test]
fn a_filter_that_cannot_apply_answers_500() {
    let f: HttpFilter = url_rewrite().prefix_path("/new").into();
    let (r, req) = run(
        std::slice::from_ref(&f),
        Some(&HttpMatch {
            path: Some(trellis_policy::PathMatch::Exact("/exact".into())),
            ..HttpMatch::default()
        }),
        "/exact",
    );
    assert_eq!(r.unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(req.uri(), "/exact", "nothing half applied");

    let filters = [
        request_headers().set("x", "1").into(),
        invalid_filter("extensionRef example.com/Auth is not supported"),
    ];
    let (r, req) = run(&filters, None, "/");
    let refusal = r.unwrap_err();
    assert_eq!(refusal.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(refusal.why.contains("extensionRef"), "{}", refusal.why);
    assert!(
        req.headers().get("x").is_none(),
        "an invalid filter stops all"
    );
}

#[test]
fn cors_preflights_are_answered_and_actual_requests_get_headers() {
    let f: HttpFilter = cors()
        .origin("https://app.example")
        .methods(&["GET", "POST"])
        .into();
    let mut preflight = build::request("OPTIONS", "/api")
        .host("echo")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .build();
    let rsp = request(
        std::slice::from_ref(&f),
        None,
        &mut preflight,
        ORIGIN,
        &mut Plan::default(),
    )
    .unwrap()
    .expect("a preflight is answered by the proxy");
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );

    let mut actual = get("/api")
        .host("echo")
        .header("origin", "https://app.example")
        .build();
    let mut plan = Plan::default();
    assert!(
        request(
            std::slice::from_ref(&f),
            None,
            &mut actual,
            ORIGIN,
            &mut plan
        )
        .unwrap()
        .is_none()
    );
    let mut rsp = Response::new(Body::empty());
    plan.cors
        .expect("CORS noted for the response")
        .apply(rsp.headers_mut());
    assert_eq!(
        rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
}

#[test]
fn mirrors_are_noted_and_response_modifiers_apply() {
    let filters: Vec<HttpFilter> = vec![
        mirror(service("shop", "shadow", 80)).percent(50).into(),
        mirror(service("shop", "audit", 80)).into(),
        response_headers().set("x-served-by", "trellis").into(),
    ];
    let mut req = get("/").host("echo").build();
    let mut plan = Plan::default();
    assert!(
        request(&filters, None, &mut req, ORIGIN, &mut plan)
            .unwrap()
            .is_none()
    );
    assert_eq!(plan.mirrors.len(), 2);
    let mut rsp = Response::new(Body::empty());
    response(&filters, &mut rsp).unwrap();
    assert_eq!(rsp.headers()["x-served-by"], "trellis");
}
