//! The CORS filter, mirroring the upstream `HTTPRouteCORS` cases and the
//! CRD's field descriptions.

use http::{HeaderMap, Method};
use trellis_policy::{Cors, build::*, filter::CorsAction};

fn value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// The response headers: the preflight's own, or what an actual response
/// (with `content-type` and `x-header-3` from the backend) ends up with.
fn outcome(cors: &Cors, method: &str, pairs: &[(&str, &str)]) -> (bool, HeaderMap) {
    let method: Method = method.parse().unwrap();
    match cors.evaluate(&method, &header_map(pairs)) {
        CorsAction::Preflight(h) => (true, h),
        CorsAction::Actual(r) => {
            let mut h = header_map(&[("content-type", "text/plain"), ("x-header-3", "v")]);
            r.apply(&mut h);
            (false, h)
        }
    }
}

struct Case<'a> {
    name: &'a str,
    method: &'a str,
    request: &'a [(&'a str, &'a str)],
    preflight: bool,
    /// Expected values; `None` means the header must be absent.
    expect: &'a [(&'a str, Option<&'a str>)],
}

const ORIGIN_FOO: (&str, &str) = ("origin", "https://www.foo.com");
const ACRM_GET: (&str, &str) = ("access-control-request-method", "GET");
const ACRH: (&str, &str) = ("access-control-request-headers", "x-header-1, x-header-2");

fn run(cors: &Cors, cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for c in cases {
        let (preflight, h) = outcome(cors, c.method, c.request);
        if preflight != c.preflight {
            failures.push(format!(
                "{}: preflight {preflight}, want {}",
                c.name, c.preflight
            ));
        }
        for (name, want) in c.expect {
            if value(&h, name) != *want {
                failures.push(format!(
                    "{}: {name} = {:?}, want {want:?}",
                    c.name,
                    value(&h, name)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `cors-multiple-origins-methods-headers`.
#[test]
fn conformance_exact_and_wildcard_origins() {
    let cors = cors()
        .origin("https://www.foo.com")
        .origin("https://*.bar.com")
        .methods(&["GET", "OPTIONS"])
        .allow_headers(&["x-header-1", "x-header-2"])
        .expose_headers(&["x-header-3", "x-header-4"])
        .credentials()
        .max_age(3600)
        .build();
    let allowed_preflight = |origin: &'static str| {
        [
            ("access-control-allow-origin", Some(origin)),
            ("access-control-allow-methods", Some("GET, OPTIONS")),
            (
                "access-control-allow-headers",
                Some("x-header-1, x-header-2"),
            ),
            (
                "access-control-expose-headers",
                Some("x-header-3, x-header-4"),
            ),
            ("access-control-max-age", Some("3600")),
            ("access-control-allow-credentials", Some("true")),
            ("vary", Some("Origin")),
        ]
    };
    let exact = allowed_preflight("https://www.foo.com");
    let wild = allowed_preflight("https://www.bar.com");
    let deep = allowed_preflight("https://xpto.www.bar.com");
    run(
        &cors,
        &[
            Case {
                name: "preflight from an exact origin",
                method: "OPTIONS",
                request: &[ORIGIN_FOO, ACRM_GET, ACRH],
                preflight: true,
                expect: &exact,
            },
            Case {
                name: "preflight from a wildcard origin",
                method: "OPTIONS",
                request: &[("origin", "https://www.bar.com"), ACRM_GET, ACRH],
                preflight: true,
                expect: &wild,
            },
            Case {
                name: "preflight from a wildcard origin, several labels deep",
                method: "OPTIONS",
                request: &[("origin", "https://xpto.www.bar.com"), ACRM_GET, ACRH],
                preflight: true,
                expect: &deep,
            },
            Case {
                name: "preflight from a non-matching origin",
                method: "OPTIONS",
                request: &[("origin", "https://foobar.com"), ACRM_GET],
                preflight: true,
                expect: &[
                    ("access-control-allow-origin", None),
                    ("access-control-allow-methods", None),
                    ("access-control-allow-credentials", None),
                ],
            },
            Case {
                name: "preflight from the wildcard's bare domain",
                method: "OPTIONS",
                request: &[("origin", "https://bar.com"), ACRM_GET],
                preflight: true,
                expect: &[("access-control-allow-origin", None)],
            },
            Case {
                name: "preflight from the right host with the wrong scheme",
                method: "OPTIONS",
                request: &[("origin", "http://www.foo.com"), ACRM_GET],
                preflight: true,
                expect: &[("access-control-allow-origin", None)],
            },
            Case {
                name: "preflight with the default port spelled out",
                method: "OPTIONS",
                request: &[("origin", "https://www.foo.com:443"), ACRM_GET],
                preflight: true,
                expect: &[(
                    "access-control-allow-origin",
                    Some("https://www.foo.com:443"),
                )],
            },
            Case {
                name: "preflight from another port",
                method: "OPTIONS",
                request: &[("origin", "https://www.foo.com:8443"), ACRM_GET],
                preflight: true,
                expect: &[("access-control-allow-origin", None)],
            },
            Case {
                name: "simple request from an exact origin",
                method: "GET",
                request: &[ORIGIN_FOO, ACRM_GET, ACRH],
                preflight: false,
                expect: &[
                    ("access-control-allow-origin", Some("https://www.foo.com")),
                    ("access-control-allow-credentials", Some("true")),
                    (
                        "access-control-expose-headers",
                        Some("x-header-3, x-header-4"),
                    ),
                    ("vary", Some("Origin")),
                    ("access-control-max-age", None),
                    ("access-control-allow-methods", None),
                ],
            },
            Case {
                name: "simple request from a wildcard origin",
                method: "GET",
                request: &[("origin", "https://www.bar.com"), ACRM_GET, ACRH],
                preflight: false,
                expect: &[("access-control-allow-origin", Some("https://www.bar.com"))],
            },
            Case {
                name: "simple request from a non-matching origin",
                method: "GET",
                request: &[("origin", "https://foobar.com"), ACRM_GET],
                preflight: false,
                expect: &[
                    ("access-control-allow-origin", None),
                    ("access-control-allow-credentials", None),
                    ("vary", Some("Origin")),
                ],
            },
            Case {
                name: "OPTIONS without Access-Control-Request-Method is not a preflight",
                method: "OPTIONS",
                request: &[ORIGIN_FOO],
                preflight: false,
                expect: &[("access-control-allow-origin", Some("https://www.foo.com"))],
            },
            Case {
                name: "no Origin: not a CORS request, but the response varies by origin",
                method: "GET",
                request: &[],
                preflight: false,
                expect: &[
                    ("access-control-allow-origin", None),
                    ("vary", Some("Origin")),
                ],
            },
        ],
    );
}

/// `cors-wildcard-methods`: `*` without credentials.
#[test]
fn conformance_wildcard_methods() {
    let cors = cors().origin("https://www.foo.com").methods(&["*"]).build();
    run(
        &cors,
        &[Case {
            name: "POST allowed by *",
            method: "OPTIONS",
            request: &[ORIGIN_FOO, ("access-control-request-method", "POST")],
            preflight: true,
            expect: &[
                ("access-control-allow-methods", Some("*")),
                ("access-control-allow-origin", Some("https://www.foo.com")),
                ("access-control-allow-credentials", None),
                ("access-control-max-age", Some("5")),
                ("access-control-allow-headers", None),
            ],
        }],
    );
}

/// `cors-wildcard-origin`: origin `*` is echoed, port included.
#[test]
fn conformance_wildcard_origin() {
    let cors = cors().origin("*").methods(&["PUT"]).build();
    run(
        &cors,
        &[
            Case {
                name: "preflight",
                method: "OPTIONS",
                request: &[
                    ("origin", "https://foobar.com"),
                    ("access-control-request-method", "PUT"),
                ],
                preflight: true,
                expect: &[
                    ("access-control-allow-origin", Some("https://foobar.com")),
                    ("access-control-allow-methods", Some("PUT")),
                    ("access-control-allow-credentials", None),
                ],
            },
            Case {
                name: "preflight with a port",
                method: "OPTIONS",
                request: &[
                    ("origin", "https://foobar.com:12345"),
                    ("access-control-request-method", "PUT"),
                ],
                preflight: true,
                expect: &[(
                    "access-control-allow-origin",
                    Some("https://foobar.com:12345"),
                )],
            },
            Case {
                name: "actual request with a port",
                method: "PUT",
                request: &[("origin", "https://foobar.com:12345")],
                preflight: false,
                expect: &[(
                    "access-control-allow-origin",
                    Some("https://foobar.com:12345"),
                )],
            },
            Case {
                name: "opaque origin",
                method: "PUT",
                request: &[("origin", "null")],
                preflight: false,
                expect: &[("access-control-allow-origin", Some("null"))],
            },
        ],
    );
}

/// `cors-wildcard-methods-headers`: with credentials `*` may not be
/// returned; the request's method and headers are echoed.
#[test]
fn conformance_wildcards_with_and_without_credentials() {
    let with = cors()
        .origin("*")
        .methods(&["*"])
        .allow_headers(&["*"])
        .credentials()
        .build();
    let without = cors()
        .origin("*")
        .methods(&["*"])
        .allow_headers(&["*"])
        .build();
    let preflight: &[(&str, &str)] = &[
        ("origin", "https://other.foo.com"),
        ("access-control-request-method", "PUT"),
        ACRH,
    ];
    run(
        &with,
        &[
            Case {
                name: "credentials: echo",
                method: "OPTIONS",
                request: preflight,
                preflight: true,
                expect: &[
                    ("access-control-allow-origin", Some("https://other.foo.com")),
                    ("access-control-allow-methods", Some("PUT")),
                    (
                        "access-control-allow-headers",
                        Some("x-header-1, x-header-2"),
                    ),
                    ("access-control-allow-credentials", Some("true")),
                ],
            },
            Case {
                name: "credentials: no requested headers, no allow-headers",
                method: "OPTIONS",
                request: &[
                    ("origin", "https://other.foo.com"),
                    ("access-control-request-method", "PUT"),
                ],
                preflight: true,
                expect: &[("access-control-allow-headers", None)],
            },
            Case {
                name: "credentials: simple request",
                method: "GET",
                request: &[
                    ("origin", "https://other.foo.com"),
                    ("authorization", "Bearer test"),
                ],
                preflight: false,
                expect: &[
                    ("access-control-allow-origin", Some("https://other.foo.com")),
                    ("access-control-allow-credentials", Some("true")),
                ],
            },
        ],
    );
    run(
        &without,
        &[
            Case {
                name: "no credentials: wildcards",
                method: "OPTIONS",
                request: preflight,
                preflight: true,
                expect: &[
                    ("access-control-allow-origin", Some("https://other.foo.com")),
                    ("access-control-allow-methods", Some("*")),
                    ("access-control-allow-headers", Some("*")),
                    ("access-control-allow-credentials", None),
                ],
            },
            Case {
                name: "no credentials: simple request",
                method: "GET",
                request: &[
                    ("origin", "https://other.foo.com"),
                    ("authorization", "Bearer test"),
                ],
                preflight: false,
                expect: &[
                    ("access-control-allow-origin", Some("https://other.foo.com")),
                    ("access-control-allow-credentials", None),
                ],
            },
        ],
    );
}

/// `exposeHeaders: ["*"]` may be sent as `*` only without credentials;
/// with them the response's own header names are listed.
#[test]
fn expose_wildcard() {
    let without = cors().origin("*").expose_headers(&["*"]).build();
    let with = cors()
        .origin("*")
        .expose_headers(&["*"])
        .credentials()
        .build();
    let (_, h) = outcome(&without, "GET", &[ORIGIN_FOO]);
    assert_eq!(value(&h, "access-control-expose-headers"), Some("*"));
    let (_, h) = outcome(&with, "GET", &[ORIGIN_FOO]);
    assert_eq!(
        value(&h, "access-control-expose-headers"),
        Some("content-type, x-header-3")
    );
}

#[test]
fn vary_is_not_repeated() {
    let cors = cors().origin("*").build();
    let CorsAction::Actual(r) = cors.evaluate(&Method::GET, &header_map(&[ORIGIN_FOO])) else {
        panic!("not a preflight")
    };
    let mut h = header_map(&[("vary", "Accept-Encoding, origin")]);
    r.apply(&mut h);
    assert_eq!(h.get_all("vary").iter().count(), 1);
    assert!(r.is_allowed());
}

#[test]
fn origin_patterns() {
    let cases = [
        ("https://*.example.com", "https://a.example.com", true),
        ("https://*.example.com", "https://a.b.example.com", true),
        ("https://*.example.com", "https://example.com", false),
        ("https://*.example.com", "http://a.example.com", false),
        ("https://*.example.com", "https://a.example.com:444", false),
        ("https://*", "https://anything.org", true),
        ("https://*", "http://anything.org", false),
        (
            "http://a.example.com:8080",
            "http://a.example.com:8080",
            true,
        ),
        ("http://a.example.com:8080", "http://a.example.com", false),
        ("http://a.example.com", "http://a.example.com:80", true),
        ("HTTPS://A.Example.com", "https://a.example.COM", true),
        ("https://a.example.com", "https://a.example.com/path", false),
        ("https://a.example.com", "null", false),
        ("https://[::1]:8443", "https://[::1]:8443", true),
        ("*", "anything at all", true),
    ];
    for (allowed, origin, want) in cases {
        let cors = cors().origin(allowed).build();
        assert_eq!(cors.allows_origin(origin), want, "{allowed} vs {origin}");
    }
}
