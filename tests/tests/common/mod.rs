//! Shared by the tier-2 tests: they need root and the workspace binaries
//! (`cargo build --workspace --bins`, which `cargo xtask test` runs first),
//! and fail loudly without them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this sandbox test needs root (network namespaces, CNI plugins, iptables): run it as root, as CI does"
    );
    if let Err(e) = trellis_sandbox::sandbox::preflight() {
        panic!("this sandbox test cannot run: {e}");
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn mesh_manifests() -> PathBuf {
    root().join("third_party/gateway-api/conformance/mesh/manifests.yaml")
}

/// The `trellisctl` binary next to the test executable.
pub fn trellisctl() -> PathBuf {
    let p = trellis_sandbox::spawn::default_dir().join("trellisctl");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        p.display()
    );
    p
}

/// Runs trellisctl; (exit code, stdout, stderr).
pub fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(trellisctl())
        .args(args)
        .output()
        .expect("running trellisctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Network namespaces whose names start with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Interface names in the host's namespace.
pub fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect()
}

/// Removes a sandbox an earlier, interrupted run may have left.
pub fn fresh(name: &str) {
    trellis_sandbox::Sandbox::down(name).expect("cleaning up an earlier run");
}
