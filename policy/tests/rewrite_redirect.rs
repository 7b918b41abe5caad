//! `URLRewrite` and `RequestRedirect`: the spec's ReplacePrefixMatch table,
//! and the upstream `HTTPRouteRewritePath`, `HTTPRouteRewriteHost`,
//! `HTTPRouteRedirect*` and `HTTPRoute30xRedirect` cases.

use http::Uri;
use trellis_policy::{
    HttpMatch, PathMatch, PathModifier,
    build::*,
    filter::{self, FilterError},
    find,
};

fn prefix(p: &str) -> HttpMatch {
    HttpMatch {
        path: Some(PathMatch::Prefix(p.to_string())),
        ..HttpMatch::default()
    }
}

/// The table of the `replacePrefixMatch` description (Gateway API Go docs),
/// plus the conformance rewrites.
#[test]
fn replace_prefix_match_table() {
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        // HTTPRouteRewritePath.
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "/", "/"),
        (
            "/prefix/rewrite-path-and-modify-headers/one",
            "/prefix/rewrite-path-and-modify-headers",
            "/prefix",
            "/prefix/one",
        ),
        // The root prefix.
        ("/", "/", "/x", "/x"),
        ("/a/b", "/", "/x", "/x/a/b"),
        ("/a/", "/", "/x/", "/x/a/"),
        ("/a", "/", "", "/a"),
        // Never `//` at the seam, never without a leading `/`.
        ("/foo//bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "//xyz//", "/xyz/bar"),
    ];
    let mut failures = Vec::new();
    for (path, matched, replacement, want) in cases {
        let got = filter::replace_path(
            &PathModifier::ReplacePrefixMatch(replacement.into()),
            Some(&prefix(matched)),
            path,
        );
        if got.as_deref() != Ok(want) {
            failures.push(format!(
                "{path} / {matched} / {replacement:?}: got {got:?}, want {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn replace_full_path() {
    let cases = [
        ("/full/one/two", "/one", "/one"),
        (
            "/full/rewrite-path-and-modify-headers/test",
            "/test",
            "/test",
        ),
        ("/anything", "/", "/"),
        ("/anything", "", "/"),
        ("/anything", "/trailing/", "/trailing/"),
        ("/anything", "no-slash", "/no-slash"),
    ];
    for (path, full, want) in cases {
        let got = filter::replace_path(&PathModifier::ReplaceFullPath(full.into()), None, path);
        assert_eq!(got.as_deref(), Ok(want), "{path} → {full:?}");
    }
}

#[test]
fn replace_prefix_needs_a_prefix_match() {
    let exact = HttpMatch {
        path: Some(PathMatch::Exact("/a".into())),
        ..HttpMatch::default()
    };
    let modifier = PathModifier::ReplacePrefixMatch("/b".into());
    assert!(matches!(
        filter::replace_path(&modifier, Some(&exact), "/a"),
        Err(FilterError::PrefixReplacementWithoutPrefix { .. })
    ));
    assert!(matches!(
        filter::replace_path(&modifier, Some(&prefix("/a")), "/other"),
        Err(FilterError::PrefixMismatch { .. })
    ));
    // A match without path, or no match at all, is the default `PathPrefix /`.
    assert_eq!(
        filter::replace_path(&modifier, Some(&HttpMatch::default()), "/x").as_deref(),
        Ok("/b/x")
    );
    assert_eq!(
        filter::replace_path(&modifier, None, "/x").as_deref(),
        Ok("/b/x")
    );
}

/// URLRewrite end to end: the rule found for the request supplies the
/// matched prefix; the query survives; the hostname replaces the authority.
#[test]
fn conformance_rewrite_path_and_host() {
    let routes = vec![
        route("mesh", "mesh-rewrite-path")
            .rule(
                rule()
                    .prefix("/prefix/one")
                    .filter(url_rewrite().prefix_path("/one")),
            )
            .rule(
                rule()
                    .prefix("/strip-prefix")
                    .filter(url_rewrite().prefix_path("/")),
            )
            .rule(
                rule()
                    .prefix("/full/one")
                    .filter(url_rewrite().full_path("/one")),
            )
            .rule(
                rule()
                    .prefix("/rewrite-host")
                    .filter(url_rewrite().hostname("one.example.org")),
            )
            .rule(
                rule()
                    .prefix("/both")
                    .filter(url_rewrite().hostname("two.example.org").prefix_path("/v2")),
            )
            .build(),
    ];
    let cases = [
        ("/prefix/one/two", "/one/two", None),
        ("/prefix/one/two?a=1&b=2", "/one/two?a=1&b=2", None),
        ("/strip-prefix/three", "/three", None),
        ("/strip-prefix", "/", None),
        ("/strip-prefix?q", "/?q", None),
        ("/full/one/two", "/one", None),
        ("/full/one?x=y", "/one?x=y", None),
        (
            "/rewrite-host/x",
            "/rewrite-host/x",
            Some("one.example.org"),
        ),
        ("/both/x?y", "/v2/x?y", Some("two.example.org")),
    ];
    for (target, want_path, want_host) in cases {
        let mut req = get(target).host("echo:80").build();
        let found = find::http(&routes, &req).unwrap();
        let trellis_policy::HttpFilter::UrlRewrite(rw) = &found.rule.filters[0] else {
            panic!("fixture has a rewrite")
        };
        let rewritten = filter::rewrite(rw, found.matched, req.uri()).unwrap();
        rewritten.apply(&mut req).unwrap();
        assert_eq!(req.uri().to_string(), want_path, "{target}");
        let host = req.headers().get("host").unwrap().to_str().unwrap();
        assert_eq!(host, want_host.unwrap_or("echo:80"), "{target}");
    }
}

#[test]
fn rewrite_of_an_http2_request_changes_its_authority() {
    let mut req = get("https://a.example.com:8443/x?q").build();
    let rw = url_rewrite().hostname("b.example.com").build();
    filter::rewrite(&rw, None, req.uri())
        .unwrap()
        .apply(&mut req)
        .unwrap();
    assert_eq!(req.uri().to_string(), "https://b.example.com/x?q");
    assert!(req.headers().get("host").is_none());
    assert_eq!(
        filter::rewrite(&url_rewrite().hostname("bad/host").build(), None, req.uri()),
        Err(FilterError::InvalidHostname("bad/host".into()))
    );
}

struct R {
    redirect: RedirectBuilder,
    matched: &'static str,
    scheme: &'static str,
    host: &'static str,
    target: &'static str,
    listener_port: u16,
    status: u16,
    location: &'static str,
}

fn r(redirect: RedirectBuilder, matched: &'static str, target: &'static str) -> R {
    R {
        redirect,
        matched,
        scheme: "http",
        host: "echo",
        target,
        listener_port: 80,
        status: 302,
        location: "",
    }
}

impl R {
    fn on(mut self, scheme: &'static str, host: &'static str, listener_port: u16) -> Self {
        (self.scheme, self.host, self.listener_port) = (scheme, host, listener_port);
        self
    }
    fn to(mut self, status: u16, location: &'static str) -> Self {
        (self.status, self.location) = (status, location);
        self
    }
}

#[test]
fn conformance_redirects() {
    let cases = [
        // HTTPRouteRedirectPath / MeshHTTPRouteRedirectPath.
        r(
            redirect().prefix_path("/replacement-prefix"),
            "/original-prefix",
            "/original-prefix/lemon",
        )
        .to(302, "http://echo/replacement-prefix/lemon"),
        r(
            redirect().full_path("/full-path-replacement"),
            "/full",
            "/full/path/original",
        )
        .to(302, "http://echo/full-path-replacement"),
        r(
            redirect()
                .hostname("example.org")
                .prefix_path("/replacement-prefix"),
            "/path-and-host",
            "/path-and-host",
        )
        .to(302, "http://example.org/replacement-prefix"),
        r(
            redirect().prefix_path("/replacement-prefix").status(301),
            "/path-and-status",
            "/path-and-status",
        )
        .to(301, "http://echo/replacement-prefix"),
        r(
            redirect()
                .hostname("example.org")
                .full_path("/replacement-full"),
            "/full-path-and-host",
            "/full-path-and-host",
        )
        .to(302, "http://example.org/replacement-full"),
        r(
            redirect().full_path("/replacement-full").status(301),
            "/full-path-and-status",
            "/full-path-and-status",
        )
        .to(301, "http://echo/replacement-full"),
        // HTTPRouteRedirectPort / MeshHTTPRouteRedirectPort.
        r(redirect().port(8083), "/port", "/port").to(302, "http://echo:8083/port"),
        r(
            redirect().hostname("example.org").port(8083),
            "/port-and-host",
            "/port-and-host",
        )
        .to(302, "http://example.org:8083/port-and-host"),
        r(
            redirect().port(8083).status(301),
            "/port-and-status",
            "/port-and-status",
        )
        .to(301, "http://echo:8083/port-and-status"),
        r(
            redirect().port(8083).hostname("example.org").status(302),
            "/port-and-host-and-status",
            "/port-and-host-and-status",
        )
        .to(302, "http://example.org:8083/port-and-host-and-status"),
        // HTTPRouteRedirectScheme / MeshHTTPRouteRedirectScheme.
        r(redirect().scheme("https"), "/scheme", "/scheme").to(302, "https://echo/scheme"),
        r(
            redirect().hostname("example.org").scheme("https"),
            "/scheme-and-host",
            "/scheme-and-host",
        )
        .to(302, "https://example.org/scheme-and-host"),
        r(
            redirect().scheme("https").status(301),
            "/scheme-and-status",
            "/scheme-and-status",
        )
        .to(301, "https://echo/scheme-and-status"),
        r(
            redirect()
                .scheme("https")
                .status(302)
                .hostname("example.org"),
            "/scheme-and-host-and-status",
            "/scheme-and-host-and-status",
        )
        .to(302, "https://example.org/scheme-and-host-and-status"),
        // HTTPRouteRedirectHostAndStatus.
        r(
            redirect().hostname("example.org"),
            "/hostname-redirect",
            "/hostname-redirect",
        )
        .to(302, "http://example.org/hostname-redirect"),
        r(
            redirect().status(301).hostname("example.org"),
            "/host-and-status",
            "/host-and-status",
        )
        .to(301, "http://example.org/host-and-status"),
        // HTTPRoute303Redirect, 307, 308: path and query kept.
        r(redirect().status(303), "/redirect", "/redirect?q=1").to(303, "http://echo/redirect?q=1"),
        r(redirect().status(307), "/temporary", "/temporary/x").to(307, "http://echo/temporary/x"),
        r(redirect().status(308), "/permanent", "/permanent").to(308, "http://echo/permanent"),
        // HTTPRouteRedirectPortAndScheme, listener on 80.
        r(
            redirect().hostname("example.org"),
            "/scheme-nil-and-port-nil",
            "/scheme-nil-and-port-nil",
        )
        .to(302, "http://example.org/scheme-nil-and-port-nil"),
        r(
            redirect().port(80).hostname("example.org"),
            "/scheme-nil-and-port-80",
            "/scheme-nil-and-port-80",
        )
        .to(302, "http://example.org/scheme-nil-and-port-80"),
        r(
            redirect().port(8080).hostname("example.org"),
            "/scheme-nil-and-port-8080",
            "/scheme-nil-and-port-8080",
        )
        .to(302, "http://example.org:8080/scheme-nil-and-port-8080"),
        r(
            redirect().scheme("https").hostname("example.org"),
            "/scheme-https-and-port-nil",
            "/scheme-https-and-port-nil",
        )
        .to(302, "https://example.org/scheme-https-and-port-nil"),
        r(
            redirect().scheme("https").port(443).hostname("example.org"),
            "/scheme-https-and-port-443",
            "/scheme-https-and-port-443",
        )
        .to(302, "https://example.org/scheme-https-and-port-443"),
        r(
            redirect()
                .scheme("https")
                .port(8443)
                .hostname("example.org"),
            "/scheme-https-and-port-8443",
            "/scheme-https-and-port-8443",
        )
        .to(302, "https://example.org:8443/scheme-https-and-port-8443"),
        // Listener on 8080.
        r(
            redirect().hostname("example.org"),
            "/scheme-nil-and-port-nil",
            "/scheme-nil-and-port-nil",
        )
        .on("http", "gw:8080", 8080)
        .to(302, "http://example.org:8080/scheme-nil-and-port-nil"),
        r(
            redirect().port(80).hostname("example.org"),
            "/scheme-nil-and-port-80",
            "/scheme-nil-and-port-80",
        )
        .on("http", "gw:8080", 8080)
        .to(302, "http://example.org/scheme-nil-and-port-80"),
        r(
            redirect().scheme("https").hostname("example.org"),
            "/scheme-https-and-port-nil",
            "/scheme-https-and-port-nil",
        )
        .on("http", "gw:8080", 8080)
        .to(302, "https://example.org/scheme-https-and-port-nil"),
        // HTTPS listener on 443.
        r(
            redirect().hostname("example.org"),
            "/scheme-nil-and-port-nil",
            "/scheme-nil-and-port-nil",
        )
        .on("https", "example.org", 443)
        .to(302, "https://example.org/scheme-nil-and-port-nil"),
        r(
            redirect().port(443).hostname("example.org"),
            "/scheme-nil-and-port-443",
            "/scheme-nil-and-port-443",
        )
        .on("https", "example.org", 443)
        .to(302, "https://example.org/scheme-nil-and-port-443"),
        r(
            redirect().port(8443).hostname("example.org"),
            "/scheme-nil-and-port-8443",
            "/scheme-nil-and-port-8443",
        )
        .on("https", "example.org", 443)
        .to(302, "https://example.org:8443/scheme-nil-and-port-8443"),
        r(
            redirect().scheme("http").hostname("example.org"),
            "/scheme-http-and-port-nil",
            "/scheme-http-and-port-nil",
        )
        .on("https", "example.org", 443)
        .to(302, "http://example.org/scheme-http-and-port-nil"),
        r(
            redirect().scheme("http").port(80).hostname("example.org"),
            "/scheme-http-and-port-80",
            "/scheme-http-and-port-80",
        )
        .on("https", "example.org", 443)
        .to(302, "http://example.org/scheme-http-and-port-80"),
        r(
            redirect().scheme("http").port(8080).hostname("example.org"),
            "/scheme-http-and-port-8080",
            "/scheme-http-and-port-8080",
        )
        .on("https", "example.org", 443)
        .to(302, "http://example.org:8080/scheme-http-and-port-8080"),
        // The request host loses its port; IPv6 literals keep brackets.
        r(redirect().scheme("https"), "/", "/a")
            .on("http", "web.shop:8080", 8080)
            .to(302, "https://web.shop/a"),
        r(redirect(), "/", "/a")
            .on("http", "[fd00::1]:8080", 8080)
            .to(302, "http://[fd00::1]:8080/a"),
        r(redirect().status(301), "/", "/a?b=c&d")
            .on("http", "web", 9000)
            .to(301, "http://web:9000/a?b=c&d"),
    ];
    let mut failures = Vec::new();
    for case in cases {
        let rd = case.redirect.build();
        let uri: Uri = case.target.parse().unwrap();
        let got = filter::redirect(
            &rd,
            Some(&prefix(case.matched)),
            case.scheme,
            case.host,
            &uri,
            case.listener_port,
        );
        match got {
            Ok(got) if got.status.as_u16() == case.status && got.location == case.location => {
                let parsed: Uri = got.location.to_str().unwrap().parse().unwrap();
                assert!(parsed.path().starts_with('/'));
            }
            other => failures.push(format!(
                "{rd:?} on {} {}{}: got {other:?}, want {} {}",
                case.scheme, case.host, case.target, case.status, case.location
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_redirects_are_errors() {
    let uri: Uri = "/x".parse().unwrap();
    let call = |rd: RedirectBuilder, scheme: &str, host: &str| {
        filter::redirect(&rd.build(), None, scheme, host, &uri, 80)
    };
    assert_eq!(
        call(redirect().status(300), "http", "h"),
        Err(FilterError::InvalidStatus(300))
    );
    assert_eq!(
        call(redirect().status(200), "http", "h"),
        Err(FilterError::InvalidStatus(200))
    );
    assert_eq!(
        call(redirect().scheme("ftp"), "http", "h"),
        Err(FilterError::InvalidScheme("ftp".into()))
    );
    assert_eq!(
        call(redirect(), "gopher", "h"),
        Err(FilterError::InvalidScheme("gopher".into()))
    );
    assert_eq!(
        call(redirect(), "http", ""),
        Err(FilterError::InvalidHostname("".into()))
    );
    assert_eq!(
        call(redirect().hostname("evil.org/x?"), "http", "h"),
        Err(FilterError::InvalidHostname("evil.org/x?".into()))
    );
    assert!(call(redirect().hostname("a b"), "http", "h").is_err());
    let exact = HttpMatch {
        path: Some(PathMatch::Exact("/x".into())),
        ..HttpMatch::default()
    };
    assert!(matches!(
        filter::redirect(
            &redirect().prefix_path("/y").build(),
            Some(&exact),
            "http",
            "h",
            &uri,
            80
        ),
        Err(FilterError::PrefixReplacementWithoutPrefix { .. })
    ));
}
