//! HTTPRoute matching and precedence, as the Gateway API v1.6.1 CRD
//! descriptions spell it out and as the upstream conformance tests expect
//! (each table names the test it mirrors).

mod common;

use common::{check, rule_of};
use trellis_policy::build::*;

const V1: Option<&str> = Some("infra-backend-v1");
const V2: Option<&str> = Some("infra-backend-v2");
const V3: Option<&str> = Some("infra-backend-v3");
const NOT_FOUND: Option<&str> = None;

fn v(n: u8) -> BackendBuilder {
    service(
        "gateway-conformance-infra",
        &format!("infra-backend-v{n}"),
        8080,
    )
}

/// `HTTPRouteMatching` / `MeshHTTPRouteMatching`.
#[test]
fn conformance_matching() {
    let routes = vec![
        route("infra", "matching")
            .rule(
                rule()
                    .prefix("/")
                    .or()
                    .header("version", "one")
                    .backend(v(1)),
            )
            .rule(
                rule()
                    .prefix("/v2")
                    .or()
                    .header("version", "two")
                    .backend(v(2)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/"), V1),
            (get("/example"), V1),
            (get("/").header("Version", "one"), V1),
            (get("/v2"), V2),
            (get("/v2/example"), V2),
            (get("/").header("version", "two"), V2),
            (get("/v2example"), V1),
            (get("/foo/v2/example"), V1),
        ],
    );
}

/// `HTTPRouteMatchingAcrossRoutes`: rules of two routes compete; the
/// hostnames decide which apply.
#[test]
fn conformance_matching_across_routes() {
    let routes = vec![
        route("infra", "matching-part1")
            .host("example.com")
            .host("example.net")
            .rule(
                rule()
                    .prefix("/")
                    .or()
                    .header("version", "one")
                    .backend(v(1)),
            )
            .build(),
        route("infra", "matching-part2")
            .host("example.com")
            .rule(
                rule()
                    .prefix("/v2")
                    .or()
                    .header("version", "two")
                    .backend(v(2)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/").host("example.com"), V1),
            (get("/example").host("example.com"), V1),
            (get("/example").host("example.net"), V1),
            (get("/").host("example.com").header("version", "one"), V1),
            (get("/v2").host("example.com"), V2),
            (get("/v2/example").host("example.com"), V2),
            (get("/").host("example.com").header("version", "two"), V2),
            (get("/v2").host("example.net"), V1),
            (get("/").host("example.net").header("version", "two"), V1),
            (get("/").host("example.org"), NOT_FOUND),
        ],
    );
}

/// `HTTPRoutePathMatchOrder`.
#[test]
fn conformance_path_match_order() {
    let routes = vec![
        route("infra", "path-matching-order")
            .rule(rule().exact("/match").backend(v(1)))
            .rule(rule().exact("/match/exact").backend(v(2)))
            .rule(rule().exact("/match/exact/one").backend(v(3)))
            .rule(rule().prefix("/match/").backend(v(3)))
            .rule(rule().prefix("/match/prefix/").backend(v(1)))
            .rule(rule().prefix("/match/prefix/one").backend(v(2)))
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/match/exact/one"), V3),
            (get("/match/exact"), V2),
            (get("/match"), V1),
            (get("/match/prefix/one/any"), V2),
            (get("/match/prefix/any"), V1),
            (get("/match/any"), V3),
        ],
    );
}

/// `HTTPExactPathMatching`.
#[test]
fn conformance_exact_path_matching() {
    let routes = vec![
        route("infra", "exact-matching")
            .rule(rule().exact("/one").backend(v(1)))
            .rule(rule().exact("/two").backend(v(2)))
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/one"), V1),
            (get("/two"), V2),
            (get("/"), NOT_FOUND),
            (get("/one/example"), NOT_FOUND),
            (get("/two/"), NOT_FOUND),
        ],
    );
}

/// `HTTPRouteMethodMatching`.
#[test]
fn conformance_method_matching() {
    let routes = vec![
        route("infra", "method-matching")
            .rule(rule().method("POST").backend(v(1)))
            .rule(rule().method("GET").backend(v(2)))
            .rule(rule().prefix("/path1").method("GET").backend(v(1)))
            .rule(rule().header("version", "one").method("PUT").backend(v(2)))
            .rule(
                rule()
                    .prefix("/path2")
                    .header("version", "two")
                    .method("POST")
                    .backend(v(3)),
            )
            .rule(
                rule()
                    .prefix("/path3")
                    .method("PATCH")
                    .or()
                    .prefix("/path4")
                    .header("version", "three")
                    .method("DELETE")
                    .backend(v(1)),
            )
            .rule(rule().prefix("/path5").backend(v(1)))
            .rule(rule().method("PATCH").backend(v(2)))
            .rule(rule().header("version", "four").backend(v(3)))
            .build(),
    ];
    check(
        &routes,
        vec![
            (request("POST", "/"), V1),
            (request("GET", "/"), V2),
            (request("HEAD", "/"), NOT_FOUND),
            (request("GET", "/path1"), V1),
            (request("PUT", "/").header("version", "one"), V2),
            (request("POST", "/path2").header("version", "two"), V3),
            (request("PATCH", "/path3"), V1),
            (request("DELETE", "/path4").header("version", "three"), V1),
            (request("PUT", "/"), NOT_FOUND),
            (request("DELETE", "/path4"), NOT_FOUND),
            (request("PATCH", "/path5"), V1),
            (request("PATCH", "/").header("version", "four"), V2),
        ],
    );
}

/// `HTTPRouteHeaderMatching`.
#[test]
fn conformance_header_matching() {
    let routes = vec![
        route("infra", "header-matching")
            .rule(rule().header("version", "one").backend(v(1)))
            .rule(rule().header("version", "two").backend(v(2)))
            .rule(
                rule()
                    .header("version", "two")
                    .header("color", "orange")
                    .backend(v(1)),
            )
            .rule(
                rule()
                    .header("color", "blue")
                    .or()
                    .header("color", "green")
                    .backend(v(1)),
            )
            .rule(
                rule()
                    .header("color", "red")
                    .or()
                    .header("color", "yellow")
                    .backend(v(2)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/").header("Version", "one"), V1),
            (get("/").header("Version", "two"), V2),
            (
                get("/").header("Version", "two").header("Color", "orange"),
                V1,
            ),
            (
                get("/").header("Version", "two").header("Color", "blue"),
                V2,
            ),
            (get("/").header("Color", "orange"), NOT_FOUND),
            (get("/").header("Some-Other-Header", "one"), NOT_FOUND),
            (get("/").header("Color", "blue"), V1),
            (get("/").header("Color", "green"), V1),
            (get("/").header("Color", "red"), V2),
            (get("/").header("Color", "yellow"), V2),
            (get("/").header("Color", "purple"), NOT_FOUND),
        ],
    );
}

/// `HTTPRouteQueryParamMatching`.
#[test]
fn conformance_query_param_matching() {
    let routes = vec![
        route("infra", "query-param-matching")
            .rule(rule().query("animal", "whale").backend(v(1)))
            .rule(rule().query("animal", "dolphin").backend(v(2)))
            .rule(
                rule()
                    .query("animal", "dolphin")
                    .query("color", "blue")
                    .or()
                    .query("ANIMAL", "Whale")
                    .backend(v(3)),
            )
            .rule(
                rule()
                    .prefix("/path1")
                    .query("animal", "whale")
                    .backend(v(1)),
            )
            .rule(
                rule()
                    .header("version", "one")
                    .query("animal", "whale")
                    .backend(v(2)),
            )
            .rule(
                rule()
                    .prefix("/path2")
                    .header("version", "two")
                    .query("animal", "whale")
                    .backend(v(3)),
            )
            .rule(
                rule()
                    .prefix("/path3")
                    .query("animal", "shark")
                    .or()
                    .prefix("/path4")
                    .header("version", "three")
                    .query("animal", "kraken")
                    .backend(v(1)),
            )
            .rule(rule().prefix("/path5").backend(v(1)))
            .rule(rule().query("animal", "hydra").backend(v(2)))
            .rule(rule().header("version", "four").backend(v(3)))
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/?animal=whale"), V1),
            (get("/?animal=dolphin"), V2),
            (get("/?animal=dolphin&color=blue"), V3),
            (get("/?ANIMAL=Whale"), V3),
            (get("/?animal=whale&otherparam=irrelevant"), V1),
            (get("/?animal=dolphin&color=yellow"), V2),
            (get("/?color=blue"), NOT_FOUND),
            (get("/?animal=dog"), NOT_FOUND),
            (get("/?animal=whaledolphin"), NOT_FOUND),
            (get("/"), NOT_FOUND),
            (get("/path1?animal=whale"), V1),
            (get("/?animal=whale").header("version", "one"), V2),
            (get("/path2?animal=whale").header("version", "two"), V3),
            (get("/path3?animal=shark"), V1),
            (get("/path4?animal=kraken").header("version", "three"), V1),
            (get("/?animal=shark"), NOT_FOUND),
            (get("/path4?animal=kraken"), NOT_FOUND),
            (get("/path5?animal=hydra"), V1),
            (get("/?animal=hydra").header("version", "four"), V3),
        ],
    );
}

/// `HTTPRouteNamedRule` / `MeshHTTPRouteNamedRule`: a rule's name changes
/// nothing about matching.
#[test]
fn conformance_named_rule() {
    let routes = vec![
        route("mesh", "mesh-http-named-rules")
            .rule(rule().named("named-rule").prefix("/named").backend(v(1)))
            .rule(rule().prefix("/unnamed").backend(v(2)))
            .build(),
    ];
    check(&routes, vec![(get("/named"), V1), (get("/unnamed"), V2)]);
    let req = get("/named").build();
    let found = trellis_policy::find::http(&routes, &req).unwrap();
    assert_eq!(found.rule.name.as_deref(), Some("named-rule"));
}

/// `HTTPRouteHostnameIntersection`: a route with a more specific hostname
/// whose rules do not match lets the request fall through to a route with
/// a less specific hostname.
#[test]
fn conformance_hostname_intersection() {
    let routes = vec![
        route("infra", "specific-host-matches-listener-specific-host")
            .host("very.specific.com")
            .rule(rule().prefix("/s1").backend(v(1)))
            .build(),
        route("infra", "specific-host-matches-listener-wildcard-host")
            .host("foo.wildcard.io")
            .host("bar.wildcard.io")
            .host("foo.bar.wildcard.io")
            .rule(rule().prefix("/s2").backend(v(2)))
            .build(),
        route("infra", "wildcard-host-matches-listener-specific-host")
            .host("*.specific.com")
            .rule(rule().prefix("/s3").backend(v(3)))
            .build(),
        route("infra", "wildcard-host-matches-listener-wildcard-host")
            .host("*.anotherwildcard.io")
            .rule(rule().prefix("/s4").backend(v(1)))
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/s1").host("very.specific.com"), V1),
            (get("/s1").host("non.matching.com"), NOT_FOUND),
            (get("/s1").host("foo.nonmatchingwildcard.io"), NOT_FOUND),
            (get("/s2").host("foo.wildcard.io"), V2),
            (get("/s2").host("bar.wildcard.io"), V2),
            (get("/s2").host("foo.bar.wildcard.io"), V2),
            (get("/s2").host("wildcard.io"), NOT_FOUND),
            (get("/s3").host("very.specific.com"), V3),
            (get("/s3").host("anything.specific.com"), V3),
            (get("/s3").host("specific.com"), NOT_FOUND),
            (get("/s4").host("hello.anotherwildcard.io"), V1),
            (get("/s4").host("anotherwildcard.io"), NOT_FOUND),
        ],
    );
}

/// Hostname precedence from the `hostnames` description: the most
/// characters in a matching exact hostname, then in a matching hostname;
/// routes without hostnames last. Host comes from `Host` (port ignored,
/// case ignored) or the URI's authority.
#[test]
fn hostname_precedence() {
    let routes = vec![
        route("ns", "any")
            .rule(rule().backend(service("ns", "any", 80)))
            .build(),
        route("ns", "wild-short")
            .host("*.com")
            .rule(rule().backend(service("ns", "wild-short", 80)))
            .build(),
        route("ns", "wild-long")
            .host("*.example.com")
            .rule(rule().backend(service("ns", "wild-long", 80)))
            .build(),
        route("ns", "exact")
            .host("a.example.com")
            .rule(rule().backend(service("ns", "exact", 80)))
            .build(),
        route("ns", "exact-other")
            .host("b.example.com")
            .host("*.b.example.com")
            .rule(
                rule()
                    .prefix("/only")
                    .backend(service("ns", "exact-other", 80)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/").host("a.example.com"), Some("exact")),
            (get("/").host("A.Example.COM:8080"), Some("exact")),
            (get("http://a.example.com:9090/"), Some("exact")),
            (
                get("http://a.example.com/").host("other.org"),
                Some("exact"),
            ),
            (get("/").host("a.example.com."), Some("exact")),
            (get("/").host("z.example.com"), Some("wild-long")),
            (get("/").host("x.z.example.com"), Some("wild-long")),
            (get("/").host("example.com"), Some("wild-short")),
            (get("/").host("other.com"), Some("wild-short")),
            (get("/").host("other.org"), Some("any")),
            (get("/"), Some("any")),
            (get("/").host("[::1]:8080"), Some("any")),
            (get("/only").host("b.example.com"), Some("exact-other")),
            (get("/elsewhere").host("b.example.com"), Some("wild-long")),
            (get("/only").host("c.b.example.com"), Some("exact-other")),
        ],
    );
}

/// Path conditions: whole path elements for PathPrefix, byte-exact Exact,
/// whole-value regular expressions.
#[test]
fn path_elements() {
    let routes = vec![
        route("ns", "paths")
            .rule(rule().prefix("/v2").backend(service("ns", "v2", 80)))
            .rule(rule().prefix("/v3/").backend(service("ns", "v3", 80)))
            .rule(rule().exact("/exact").backend(service("ns", "exact", 80)))
            .rule(
                rule()
                    .path_regex("/re/[0-9]+")
                    .backend(service("ns", "re", 80)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/v2"), Some("v2")),
            (get("/v2/"), Some("v2")),
            (get("/v2/x/y"), Some("v2")),
            (get("/v2?q=1"), Some("v2")),
            (get("/v2example"), NOT_FOUND),
            (get("/V2"), NOT_FOUND),
            (get("/v3"), Some("v3")),
            (get("/v3/x"), Some("v3")),
            (get("/v3x"), NOT_FOUND),
            (get("/exact"), Some("exact")),
            (get("/exact/"), NOT_FOUND),
            (get("/Exact"), NOT_FOUND),
            (get("/re/42"), Some("re")),
            (get("/re/42/x"), NOT_FOUND),
            (get("/re/x"), NOT_FOUND),
        ],
    );
}

/// The precedence list of the `matches` description, one step at a time.
#[test]
fn precedence_between_rules() {
    let routes = vec![
        route("ns", "order")
            .rule(
                rule()
                    .header_regex("h", ".*")
                    .backend(service("ns", "regex-header", 80)),
            )
            .rule(
                rule()
                    .path_regex("/a/.*")
                    .backend(service("ns", "regex-long", 80)),
            )
            .rule(
                rule()
                    .path_regex("/a.*")
                    .backend(service("ns", "regex-short", 80)),
            )
            .rule(rule().prefix("/a").backend(service("ns", "prefix-a", 80)))
            .rule(
                rule()
                    .prefix("/a/b")
                    .backend(service("ns", "prefix-ab", 80)),
            )
            .rule(rule().exact("/a/b/c").backend(service("ns", "exact", 80)))
            .rule(
                rule()
                    .prefix("/m")
                    .header("x", "1")
                    .header("y", "2")
                    .backend(service("ns", "two-headers", 80)),
            )
            .rule(
                rule()
                    .prefix("/m")
                    .method("GET")
                    .backend(service("ns", "method", 80)),
            )
            .rule(
                rule()
                    .prefix("/q")
                    .query("a", "1")
                    .query("b", "2")
                    .backend(service("ns", "two-queries", 80)),
            )
            .rule(
                rule()
                    .prefix("/q")
                    .header("x", "1")
                    .backend(service("ns", "one-header", 80)),
            )
            .rule(
                rule()
                    .prefix("/d")
                    .header("x", "1")
                    .header("X", "ignored")
                    .backend(service("ns", "dup-header", 80)),
            )
            .rule(
                rule()
                    .prefix("/d")
                    .header("x", "1")
                    .query("q", "1")
                    .backend(service("ns", "header-and-query", 80)),
            )
            .build(),
    ];
    check(
        &routes,
        vec![
            (get("/a/b/c"), Some("exact")),
            (get("/a/b/c/d"), Some("prefix-ab")),
            (get("/a/bc"), Some("prefix-a")),
            (get("/a/x"), Some("prefix-a")),
            (get("/ab"), Some("regex-short")),
            (get("/zz").header("h", "v"), Some("regex-header")),
            (get("/m").header("x", "1").header("y", "2"), Some("method")),
            (
                request("POST", "/m").header("x", "1").header("y", "2"),
                Some("two-headers"),
            ),
            (get("/q?a=1&b=2").header("x", "1"), Some("one-header")),
            (get("/q?a=1&b=2"), Some("two-queries")),
            (get("/d?q=1").header("x", "1"), Some("header-and-query")),
            (get("/d").header("x", "1"), Some("dup-header")),
        ],
    );
}

/// A regular expression ranks after every PathPrefix, so a longer regex
/// loses to `/` but beats having no match at all.
#[test]
fn regex_paths_rank_after_prefixes() {
    let routes = vec![
        route("ns", "r")
            .rule(
                rule()
                    .path_regex("/api/v[0-9]+/.*")
                    .backend(service("ns", "regex", 80)),
            )
            .rule(rule().prefix("/api").backend(service("ns", "api", 80)))
            .build(),
    ];
    check(
        &routes,
        vec![(get("/api/v1/x"), Some("api")), (get("/x"), NOT_FOUND)],
    );
    let only_regex = vec![
        route("ns", "r")
            .rule(
                rule()
                    .path_regex("/api/v[0-9]+/.*")
                    .backend(service("ns", "regex", 80)),
            )
            .build(),
    ];
    check(
        &only_regex,
        vec![
            (get("/api/v1/x"), Some("regex")),
            (get("/api/x"), NOT_FOUND),
        ],
    );
}

/// Ties across routes: the oldest route, then `{namespace}/{name}`
/// compared as one string; within a route, the first rule, then the first
/// match.
#[test]
fn ties_across_routes() {
    let same = |ns: &str, name: &str, created: i64| {
        route(ns, name)
            .created(created)
            .rule(rule().prefix("/").backend(service(ns, name, 80)))
            .build()
    };
    let cases: Vec<(Vec<_>, &str)> = vec![
        (vec![same("a", "new", 20), same("a", "old", 10)], "old"),
        (vec![same("b", "x", 10), same("a", "y", 10)], "y"),
        (vec![same("a", "b", 10), same("a", "a", 10)], "a"),
        // `a-b/x` < `a/y` because `-` sorts before `/`.
        (vec![same("a", "y", 10), same("a-b", "x", 10)], "x"),
        (vec![same("z", "z", 1), same("a", "a", 2)], "z"),
    ];
    for (routes, want) in cases {
        let got = rule_of(&routes, get("/")).map(|(name, _)| name);
        assert_eq!(got.as_deref(), Some(want), "{routes:?}");
    }

    let in_one = vec![
        route("ns", "r")
            .rule(rule().prefix("/x").backend(service("ns", "first", 80)))
            .rule(rule().prefix("/x").backend(service("ns", "second", 80)))
            .build(),
    ];
    check(&in_one, vec![(get("/x"), Some("first"))]);

    // A more specific match of an older route loses to nothing; an equal
    // one of an older route wins over a younger route's.
    let routes = vec![
        route("ns", "young")
            .created(20)
            .rule(rule().prefix("/a/b").backend(service("ns", "young-ab", 80)))
            .build(),
        route("ns", "old")
            .created(10)
            .rule(rule().prefix("/a").backend(service("ns", "old-a", 80)))
            .rule(rule().prefix("/a/b").backend(service("ns", "old-ab", 80)))
            .build(),
    ];
    check(
        &routes,
        vec![(get("/a/b"), Some("old-ab")), (get("/a/c"), Some("old-a"))],
    );
}

/// Which match of a rule is reported (`ReplacePrefixMatch` needs it): the
/// most specific that holds, else the first.
#[test]
fn reports_the_match_that_selected_the_rule() {
    let routes = vec![
        route("ns", "r")
            .rule(
                rule()
                    .prefix("/a")
                    .or()
                    .prefix("/a/b")
                    .or()
                    .header("x", "1"),
            )
            .rule(rule())
            .build(),
    ];
    let cases = [
        (get("/a/b/c"), Some(1), 0),
        (get("/a/c"), Some(0), 0),
        (get("/z").header("x", "1"), Some(2), 0),
        (get("/z"), None, 1),
    ];
    for (req, want_match, want_rule) in cases {
        let req = req.build();
        let found = trellis_policy::find::http(&routes, &req).unwrap();
        let index = found
            .matched
            .map(|m| found.rule.matches.iter().position(|x| x == m).unwrap());
        assert_eq!(
            (index, found.rule_index),
            (want_match, want_rule),
            "{}",
            req.uri()
        );
    }
}
