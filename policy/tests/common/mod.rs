//! Helpers shared by the table tests.

#![allow(dead_code)]

use trellis_policy::{
    Backend, GrpcRoute, HttpRoute,
    build::RequestBuilder,
    find::{self, GrpcRouteTable, HttpRouteTable},
};

/// The Service name of the first backend of the rule `find` picks for
/// `req`, `None` for no match (404), checking that the linear search and
/// the precomputed table agree.
pub fn backend(routes: &[HttpRoute], req: RequestBuilder) -> Option<String> {
    let req = req.build();
    let table = HttpRouteTable::new(routes.to_vec());
    let linear = find::http(routes, &req);
    let tabled = table.find(&req);
    assert_eq!(
        linear.map(|m| (m.route_index, m.rule_index, m.matched)),
        tabled.map(|m| (m.route_index, m.rule_index, m.matched)),
        "find::http and HttpRouteTable disagree for {} {}",
        req.method(),
        req.uri()
    );
    linear.map(|m| first_backend(&m.rule.backends))
}

/// `(route name, rule index)` of the rule `find` picks.
pub fn rule_of(routes: &[HttpRoute], req: RequestBuilder) -> Option<(String, usize)> {
    let req = req.build();
    let table = HttpRouteTable::new(routes.to_vec());
    let linear = find::http(routes, &req).map(|m| (m.route.meta.name.clone(), m.rule_index));
    let tabled = table
        .find(&req)
        .map(|m| (m.route.meta.name.clone(), m.rule_index));
    assert_eq!(linear, tabled, "find::http and HttpRouteTable disagree");
    linear
}

/// The same as [`backend`] for gRPC.
pub fn grpc_backend(routes: &[GrpcRoute], req: RequestBuilder) -> Option<String> {
    let req = req.build();
    let table = GrpcRouteTable::new(routes.to_vec());
    let linear = find::grpc(routes, &req);
    let tabled = table.find(&req);
    assert_eq!(
        linear.map(|m| (m.route_index, m.rule_index, m.matched)),
        tabled.map(|m| (m.route_index, m.rule_index, m.matched)),
        "find::grpc and GrpcRouteTable disagree for {}",
        req.uri()
    );
    linear.map(|m| first_backend(&m.rule.backends))
}

fn first_backend(backends: &[trellis_policy::HttpBackend]) -> String {
    match backends.first().map(|b| &b.backend) {
        Some(Backend::Service(s)) => s.service.name.clone(),
        Some(Backend::Invalid { name, .. }) => name.clone(),
        None => "<no backend>".to_string(),
    }
}

/// Runs a table of `(request, expected backend)` cases and reports every
/// failing case at once.
pub fn check(routes: &[HttpRoute], cases: Vec<(RequestBuilder, Option<&str>)>) {
    let mut failures = Vec::new();
    for (req, want) in cases {
        let label = format!("{req:?}");
        let got = backend(routes, req);
        if got.as_deref() != want {
            failures.push(format!("{label}\n    want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

pub fn check_grpc(routes: &[GrpcRoute], cases: Vec<(RequestBuilder, Option<&str>)>) {
    let mut failures = Vec::new();
    for (req, want) in cases {
        let label = format!("{req:?}");
        let got = grpc_backend(routes, req);
        if got.as_deref() != want {
            failures.push(format!("{label}\n    want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
