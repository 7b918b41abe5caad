//! Tier 2: the conformance runner's MeshBasic and MeshTrafficSplit against
//! the real mesh (the full suite runs with `trellisctl conformance`).

mod common;

use common::*;
use trellis_sandbox::conformance::{self, RunOptions, report::TestResult};

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
