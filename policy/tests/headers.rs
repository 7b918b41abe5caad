//! `RequestHeaderModifier` / `ResponseHeaderModifier`, mirroring the
//! upstream `HTTPRouteRequestHeaderModifier`,
//! `HTTPRouteResponseHeaderModifier` and `HTTPRouteRewritePath` cases.

use http::HeaderMap;
use trellis_policy::{HeaderModifier, build::*, filter::FilterError};

/// Every value of every header, joined with `,` the way the conformance
/// suite reads them, sorted by name.
fn flat(map: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = map
        .keys()
        .map(|k| {
            let values: Vec<&str> = map.get_all(k).iter().map(|v| v.to_str().unwrap()).collect();
            (k.as_str().to_string(), values.join(","))
        })
        .collect();
    out.sort();
    out
}

struct Case {
    name: &'static str,
    modifier: HeaderModifier,
    before: &'static [(&'static str, &'static str)],
    after: &'static [(&'static str, &'static str)],
}

#[test]
fn conformance_header_modifiers() {
    let multiple = request_headers()
        .set("X-Header-Set-1", "header-set-1")
        .set("X-Header-Set-2", "header-set-2")
        .add("X-Header-Add-1", "header-add-1")
        .add("X-Header-Add-2", "header-add-2")
        .add("X-Header-Add-3", "header-add-3")
        .remove("X-Header-Remove-1")
        .remove("X-Header-Remove-2")
        .modifier();
    let case_insensitivity = request_headers()
        .set("X-Header-Set", "header-set")
        .add("X-Header-Add", "header-add")
        .remove("X-Header-Remove")
        .modifier();
    let rewrite_and_modify = request_headers()
        .set("X-Header-Set", "set-overwrites-values")
        .add("X-Header-Add", "header-val-1")
        .add("X-Header-Add-Append", "header-val-2")
        .remove("X-Header-Remove")
        .modifier();
    let response_mixed_case = response_headers()
        .set("X-Header-Set", "header-set")
        .add("X-Header-Add", "header-add")
        .add("x-lowercase-add", "lowercase-add")
        .add("x-Mixedcase-ADD-1", "mixedcase-add-1")
        .add("X-mixeDcase-add-2", "mixedcase-add-2")
        .add("X-UPPERCASE-ADD", "uppercase-add")
        .remove("X-Header-Remove")
        .modifier();
    let cases = [
        Case {
            name: "set adds a missing header",
            modifier: request_headers()
                .set("X-Header-Set", "set-overwrites-values")
                .modifier(),
            before: &[("Some-Other-Header", "val")],
            after: &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
        },
        Case {
            name: "set overwrites",
            modifier: request_headers()
                .set("X-Header-Set", "set-overwrites-values")
                .modifier(),
            before: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            after: &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
        },
        Case {
            name: "set overwrites every value of a repeated header",
            modifier: request_headers().set("x-a", "new").modifier(),
            before: &[("x-a", "1"), ("x-a", "2")],
            after: &[("x-a", "new")],
        },
        Case {
            name: "add adds a missing header",
            modifier: request_headers()
                .add("X-Header-Add", "add-appends-values")
                .modifier(),
            before: &[("Some-Other-Header", "val")],
            after: &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
        },
        Case {
            name: "add appends with a comma",
            modifier: request_headers()
                .add("X-Header-Add", "add-appends-values")
                .modifier(),
            before: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            after: &[
                ("some-other-header", "val"),
                ("x-header-add", "some-other-value,add-appends-values"),
            ],
        },
        Case {
            name: "add joins a repeated header into one field",
            modifier: request_headers().add("my-header", "bar,baz").modifier(),
            before: &[("my-header", "foo"), ("my-header", "qux")],
            after: &[("my-header", "foo,qux,bar,baz")],
        },
        Case {
            name: "remove",
            modifier: request_headers().remove("X-Header-Remove").modifier(),
            before: &[("X-Header-Remove", "val")],
            after: &[],
        },
        Case {
            name: "remove of an absent header",
            modifier: request_headers().remove("X-Absent").modifier(),
            before: &[("a", "1")],
            after: &[("a", "1")],
        },
        Case {
            name: "multiple",
            modifier: multiple,
            before: &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            after: &[
                ("another-header", "another-header-val"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val-2,header-add-2"),
                ("x-header-add-3", "header-add-3"),
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
            ],
        },
        Case {
            name: "case insensitivity",
            modifier: case_insensitivity,
            before: &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            after: &[
                ("another-header", "another-header-val"),
                ("x-header-add", "original-val-add,header-add"),
                ("x-header-set", "header-set"),
            ],
        },
        Case {
            name: "rewrite-path-and-modify-headers",
            modifier: rewrite_and_modify,
            before: &[
                ("X-Header-Remove", "remove-val"),
                ("X-Header-Add-Append", "append-val-1"),
            ],
            after: &[
                ("x-header-add", "header-val-1"),
                ("x-header-add-append", "append-val-1,header-val-2"),
                ("x-header-set", "set-overwrites-values"),
            ],
        },
        Case {
            name: "response, mixed-case names",
            modifier: response_mixed_case,
            before: &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
            ],
            after: &[
                ("x-header-add", "original-val-add,header-add"),
                ("x-header-set", "header-set"),
                ("x-lowercase-add", "lowercase-add"),
                ("x-mixedcase-add-1", "mixedcase-add-1"),
                ("x-mixedcase-add-2", "mixedcase-add-2"),
                ("x-uppercase-add", "uppercase-add"),
            ],
        },
        Case {
            name: "only the first set of an equivalent name counts",
            modifier: request_headers()
                .set("X-A", "first")
                .set("x-a", "second")
                .modifier(),
            before: &[],
            after: &[("x-a", "first")],
        },
        Case {
            name: "a name both removed and set ends set",
            modifier: request_headers().remove("x-a").set("x-a", "set").modifier(),
            before: &[("x-a", "old")],
            after: &[("x-a", "set")],
        },
        Case {
            name: "a name both set and added",
            modifier: request_headers()
                .set("x-a", "set")
                .add("x-a", "added")
                .modifier(),
            before: &[("x-a", "old")],
            after: &[("x-a", "set,added")],
        },
        Case {
            name: "Set-Cookie is never joined",
            modifier: response_headers().add("Set-Cookie", "b=2").modifier(),
            before: &[("set-cookie", "a=1; Path=/")],
            after: &[("set-cookie", "a=1; Path=/,b=2")],
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let mut map = header_map(case.before);
        if let Err(e) = case.modifier.apply(&mut map) {
            failures.push(format!("{}: {e}", case.name));
            continue;
        }
        let want: Vec<(String, String)> = case
            .after
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        if flat(&map) != want {
            failures.push(format!(
                "{}: got {:?}, want {want:?}",
                case.name,
                flat(&map)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn set_cookie_values_stay_separate_fields() {
    let mut map = header_map(&[("set-cookie", "a=1")]);
    response_headers()
        .add("Set-Cookie", "b=2")
        .modifier()
        .apply(&mut map)
        .unwrap();
    assert_eq!(map.get_all("set-cookie").iter().count(), 2);
}

/// Invalid names or values fail the whole modifier and change nothing.
#[test]
fn invalid_entries_are_refused_without_changes() {
    let cases = [
        (
            request_headers()
                .set("ok", "1")
                .set("bad name", "v")
                .modifier(),
            FilterError::InvalidHeaderName("bad name".into()),
        ),
        (
            request_headers()
                .set("ok", "1")
                .add("x", "line\nbreak")
                .modifier(),
            FilterError::InvalidHeaderValue {
                name: "x".into(),
                value: "line\nbreak".into(),
            },
        ),
        (
            request_headers().remove("").modifier(),
            FilterError::InvalidHeaderName(String::new()),
        ),
        (
            request_headers().add(":authority", "x").modifier(),
            FilterError::InvalidHeaderName(":authority".into()),
        ),
        (
            request_headers().set("x", "ünïcode").modifier(),
            FilterError::InvalidHeaderValue {
                name: "x".into(),
                value: "ünïcode".into(),
            },
        ),
    ];
    for (modifier, want) in cases {
        let mut map = header_map(&[("keep", "me")]);
        assert_eq!(modifier.validate(), Err(want.clone()));
        assert_eq!(modifier.apply(&mut map), Err(want));
        assert_eq!(flat(&map), vec![("keep".into(), "me".into())]);
    }
}
