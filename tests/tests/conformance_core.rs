//! Tier 2: the conformance runner's MeshBasic and MeshTrafficSplit against
//! the real mesh (the full suite runs with `trellisctl conformance`), and
//! two GATEWAY-HTTP tests against gateway proxies.

mod common;

use common::*;
use trellis_sandbox::conformance::{self, Profile, RunOptions, report::TestResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_basic_and_traffic_split_pass() {
    require_root();
    fresh("it-conf");
    let opts = RunOptions {
        sandbox: "it-conf".into(),
        bin_dir: None,
        only: vec!["MeshBasic".into(), "MeshTrafficSplit".into()],
        keep: false,
        root: root(),
        profile: Profile::Mesh,
    };
    let outcomes = conformance::run(&opts, &|line: &str| eprintln!("{line}"))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!(o.result, TestResult::Passed, "{}", o.name);
    }
    assert!(
        namespaces("trl-it-conf-").is_empty(),
        "the runner removes its sandbox"
    );
}

/// Tier 2: the GATEWAY-HTTP runner against gateway proxies in the sandbox,
/// over HTTP and HTTPS (the full profile runs with `trellisctl conformance
/// --profile GATEWAY-HTTP`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_simple_same_namespace_and_https_listener_pass() {
    require_root();
    fresh("it-gwconf");
    let opts = RunOptions {
        sandbox: "it-gwconf".into(),
        bin_dir: None,
        only: vec![
            "HTTPRouteSimpleSameNamespace".into(),
            "HTTPRouteHTTPSListener".into(),
        ],
        keep: false,
        root: root(),
        profile: Profile::GatewayHttp,
    };
    let outcomes = conformance::run(&opts, &|line: &str| eprintln!("{line}"))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!(o.result, TestResult::Passed, "{}", o.name);
    }
    assert!(
        namespaces("trl-it-gwconf-").is_empty(),
        "the runner removes its sandbox"
    );
}
