//! Properties: weighted shares converge, zero weights are never chosen,
//! rewrites and redirects always produce valid URIs, `find` never panics
//! and its table agrees with the linear search, and every model value
//! survives a JSON and a YAML round trip.

use http::{Uri, uri::PathAndQuery};
use proptest::{collection::vec, option, prelude::*};
use trellis_policy::{
    HttpMatch, PathMatch, PathModifier, RequestRedirect, UrlRewrite,
    build::arbitrary,
    filter,
    find::{self, GrpcRouteTable, HttpRouteTable},
    split::{self, Split},
};

/// SplitMix64: a small, good, deterministic stream of uniform `u64`s.
fn stream(mut seed: u64) -> impl Iterator<Item = u64> {
    std::iter::repeat_with(move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A request path as a client may send it (and `http` accepts).
fn request_path() -> impl Strategy<Value = String> {
    "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,8}){0,5}/?"
        .prop_map(|p| if p.is_empty() { "/".into() } else { p })
}

fn query() -> impl Strategy<Value = Option<String>> {
    option::of("[a-zA-Z0-9=&%._~-]{0,16}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shares_converge_and_zero_is_never_chosen(
        weights in vec(prop_oneof![1 => Just(0u32), 3 => 1u32..100], 1..6),
        seed in any::<u64>(),
    ) {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        const N: usize = 20_000;
        let mut counts = vec![0usize; weights.len()];
        for r in stream(seed).take(N) {
            match split::choose(weights.iter().copied(), r) {
                Some(i) => counts[i] += 1,
                None => prop_assert_eq!(total, 0),
            }
        }
        for (i, &w) in weights.iter().enumerate() {
            if w == 0 {
                prop_assert_eq!(counts[i], 0, "weight 0 chosen");
            } else {
                let want = f64::from(w) / total as f64;
                let got = counts[i] as f64 / N as f64;
                // Six standard deviations of a share measured over N draws.
                prop_assert!((got - want).abs() < 6.0 * (want * (1.0 - want) / N as f64).sqrt() + 1e-9,
                    "weights {:?}: share {} of {} is {}", weights, i, want, got);
            }
        }
    }

    #[test]
    fn split_table_agrees_with_choose(weights in vec(any::<u32>(), 0..20), r in any::<u64>()) {
        let table = Split::new(weights.iter().copied());
        let chosen = split::choose(weights.iter().copied(), r);
        prop_assert_eq!(table.choose(r), chosen);
        if let Some(i) = chosen {
            prop_assert!(weights[i] > 0);
        }
    }

    #[test]
    fn prefix_rewrites_make_valid_paths(
        path in request_path(),
        cut in 0usize..6,
        replacement in "[/a-z0-9._-]{0,12}",
        query in query(),
    ) {
        // A prefix of the path's elements, as the matched PathPrefix would be.
        let elements: Vec<&str> = path.split('/').collect();
        let prefix = elements[..cut.min(elements.len())].join("/");
        let prefix = if prefix.is_empty() { "/".to_string() } else { prefix };
        let matched = HttpMatch { path: Some(PathMatch::Prefix(prefix.clone())), ..HttpMatch::default() };
        prop_assume!(find::prefix_matches(&prefix, &path));
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let parsed = target.parse::<Uri>();
        prop_assume!(parsed.is_ok());
        let uri = parsed.unwrap();
        let rw = UrlRewrite { hostname: None, path: Some(PathModifier::ReplacePrefixMatch(replacement.clone())) };
        let out = filter::rewrite(&rw, Some(&matched), &uri).unwrap().path_and_query.unwrap();
        prop_assert!(out.path().starts_with('/'));
        prop_assert!(!out.path().starts_with("//"));
        prop_assert_eq!(out.query(), uri.query());
        if !path.contains("//") && !replacement.contains("//") {
            prop_assert!(!out.path().contains("//"), "{} → {}", target, out);
        }
        prop_assert!(PathAndQuery::try_from(out.as_str()).is_ok());
    }

    #[test]
    fn full_rewrites_make_valid_paths(
        path in request_path(),
        full in "[/a-z0-9._-]{0,12}",
        query in query(),
    ) {
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let parsed = target.parse::<Uri>();
        prop_assume!(parsed.is_ok());
        let uri = parsed.unwrap();
        let rw = UrlRewrite { hostname: None, path: Some(PathModifier::ReplaceFullPath(full)) };
        let out = filter::rewrite(&rw, None, &uri).unwrap().path_and_query.unwrap();
        prop_assert!(out.path().starts_with('/') && !out.path().starts_with("//"));
        prop_assert_eq!(out.query(), uri.query());
    }

    #[test]
    fn redirects_make_valid_locations(
        redirect in arbitrary::request_redirect(),
        path in request_path(),
        query in query(),
        https in any::<bool>(),
        req_host in "[a-z0-9.-]{1,12}(:[0-9]{1,5})?",
        listener_port in any::<u16>(),
    ) {
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let parsed = target.parse::<Uri>();
        prop_assume!(parsed.is_ok());
        let uri = parsed.unwrap();
        let scheme = if https { "https" } else { "http" };
        let root = HttpMatch::default();
        let got = filter::redirect(&redirect, Some(&root), scheme, &req_host, &uri, listener_port);
        let got = match got {
            Ok(got) => got,
            // A request host the URI grammar refuses (`a..b`, `-a`) is the
            // only reason left to fail.
            Err(filter::FilterError::InvalidUri { .. } | filter::FilterError::InvalidHostname(_))
                if redirect.hostname.is_none() => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{redirect:?} on {req_host}{target}: {e}"))),
        };
        prop_assert_eq!(got.status.as_u16(), redirect.status);
        let location: Uri = got.location.to_str().unwrap().parse().unwrap();
        prop_assert!(location.scheme().is_some() && location.authority().is_some());
        prop_assert!(location.path().starts_with('/'));
        prop_assert_eq!(location.query(), uri.query());
        let RequestRedirect { scheme: want_scheme, port, .. } = &redirect;
        prop_assert_eq!(location.scheme_str(), Some(want_scheme.as_deref().unwrap_or(scheme)));
        if let Some(port) = port {
            let default = if location.scheme_str() == Some("https") { 443 } else { 80 };
            prop_assert_eq!(location.port_u16(), (*port != default).then_some(*port));
        }
    }

    #[test]
    fn find_never_panics_and_the_tables_agree(
        http_routes in vec(arbitrary::http_route(), 0..4),
        grpc_routes in vec(arbitrary::grpc_route(), 0..3),
        path in request_path(),
        query in query(),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "PATCH", "get"]),
        host in option::of("[a-zA-Z0-9.-]{0,12}(:[0-9]{1,5})?"),
        headers in vec(("[a-z][a-z0-9-]{0,6}", "[ -~]{0,10}"), 0..5),
    ) {
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let mut builder = http::Request::builder().method(method).uri(&target);
        if let Some(h) = &host {
            builder = builder.header("host", h);
        }
        for (n, v) in &headers {
            builder = builder.header(n, v);
        }
        let Ok(req) = builder.body(()) else { return Ok(()) };
        let key = |m: find::HttpRouteMatch<'_>| (m.route_index, m.rule_index, m.matched.cloned());
        let linear = find::http(&http_routes, &req).map(key);
        let table = HttpRouteTable::new(http_routes.clone());
        prop_assert_eq!(table.find(&req).map(key), linear);
        let gkey = |m: find::GrpcRouteMatch<'_>| (m.route_index, m.rule_index, m.matched.cloned());
        let linear = find::grpc(&grpc_routes, &req).map(gkey);
        let table = GrpcRouteTable::new(grpc_routes.clone());
        prop_assert_eq!(table.find(&req).map(gkey), linear);
    }

    #[test]
    fn outbound_policies_round_trip(policy in arbitrary::outbound_policy()) {
        round_trip(&policy)?;
    }

    #[test]
    fn inbound_policies_round_trip(policy in arbitrary::inbound_policy()) {
        round_trip(&policy)?;
    }

    #[test]
    fn gateway_policies_round_trip(policy in arbitrary::gateway_policy()) {
        round_trip(&policy)?;
    }
}

fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
    prop_assert_eq!(&back, value, "JSON: {}", json);
    let yaml = serde_saphyr::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        serde_saphyr::from_str(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(&back, value, "YAML:\n{}", yaml);
    Ok(())
}
