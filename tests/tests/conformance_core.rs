//! Tier 2: the conformance runner's MeshBasic and MeshTrafficSplit against
//! the real mesh (the full suite runs with `trellisctl conformance`), and
//! two GATEWAY-HTTP tests against gateway proxies.

mod common;

use common::*;
use trellis_sandbox::conformance::{self, Profile, RunOptions, report::TestResult};

/// Runs `only` of `profile` in a sandbox of its own; each must pass, and
/// the runner must remove the sandbox afterwards.
async fn run_and_pass(sandbox: &str, profile: Profile, only: &[&str]) {
    require_root();
    fresh(sandbox);
    let opts = RunOptions {
        sandbox: sandbox.into(),
        bin_dir: None,
        only: only.iter().map(|t| t.to_string()).collect(),
        keep: false,
        root: root(),
        profile,
    };
    let outcomes = conformance::run(&opts, &|line: &str| eprintln!("{line}"))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), only.len());
    for o in &outcomes {
        assert_eq!(o.result, TestResult::Passed, "{}", o.name);
    }
    assert!(
        namespaces(&format!("trl-{sandbox}-")).is_empty(),
        "the runner removes its sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_basic_and_traffic_split_pass() {
    run_and_pass("it-conf", Profile::Mesh, &["MeshBasic", "MeshTrafficSplit"]).await;
}

/// Tier 2: the GATEWAY-HTTP runner against gateway proxies in the sandbox,
/// over HTTP and HTTPS (the full profile runs with `trellisctl conformance
/// --profile GATEWAY-HTTP`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_simple_same_namespace_and_https_listener_pass() {
    run_and_pass(
        "it-gwconf",
        Profile::GatewayHttp,
        &["HTTPRouteSimpleSameNamespace", "HTTPRouteHTTPSListener"],
    )
    .await;
}
