//! The dependency directions of the design, checked on the graph cargo really
//! builds (`cargo tree`, which applies the feature resolver; `cargo metadata`
//! over-approximates optional dependencies):
//!
//! - `trellis-policy` is pure: no async runtime, no gRPC, no Kubernetes;
//! - the proxy and everything it builds on never reach the Kubernetes client;
//! - the proxy and the controller never depend on each other;
//! - one TLS crypto provider (aws-lc-rs): neither `ring` nor OpenSSL anywhere;
//! - no deprecated YAML or PEM crates.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::process::Command;

const KUBE: &[&str] = &[
    "kube",
    "kube-client",
    "kube-runtime",
    "kube-core",
    "k8s-openapi",
    "gateway-api",
];

/// (package, crates that must not be in its normal dependency tree, why)
fn rules() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let mut policy = vec!["tokio", "tonic", "hyper", "mio"];
    policy.extend(KUBE);
    let mut proxy = KUBE.to_vec();
    proxy.push("trellis-controller");
    vec![
        ("trellis-policy", policy, "trellis-policy is pure"),
        (
            "trellis-api",
            KUBE.to_vec(),
            "the proxy builds on trellis-api",
        ),
        (
            "trellis-capture",
            KUBE.to_vec(),
            "the proxy builds on trellis-capture",
        ),
        (
            "trellis-identity-client",
            KUBE.to_vec(),
            "the proxy builds on trellis-identity-client",
        ),
        (
            "trellis-proxy",
            proxy,
            "the proxy never reaches Kubernetes or the controller",
        ),
        (
            "trellis-controller",
            vec!["trellis-proxy"],
            "the controller never depends on the proxy",
        ),
    ]
}

const BANNED_EVERYWHERE: &[(&str, &str)] = &[
    ("ring", "the workspace's one crypto provider is aws-lc-rs"),
    ("openssl-sys", "the workspace uses rustls with aws-lc-rs"),
    ("serde_yaml", "deprecated; use serde-saphyr"),
    ("serde_yml", "unmaintained; use serde-saphyr"),
    ("rustls-pemfile", "unmaintained; use rustls-pki-types"),
];

pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    for (package, banned, why) in rules() {
        let tree = tree(&["-p", package, "-e", "normal"])?;
        for b in banned {
            if tree.contains(b) {
                problems.push(format!("{package} depends on {b}: {why}"));
            }
        }
    }
    let everything = tree(&["--workspace", "-e", "normal,build,dev"])?;
    for (name, why) in BANNED_EVERYWHERE {
        if everything.contains(*name) {
            problems.push(format!("{name} is in the dependency graph: {why}"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "dependency directions violated:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!("xtask: dependency directions hold");
    cargo_deny()
}

/// Runs cargo-deny on `deny.toml` when it is installed (CI installs it). The
/// advisory database is fetched from GitHub, which CI cannot reach, so only
/// bans, licences and sources are checked.
fn cargo_deny() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["deny", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !installed {
        eprintln!(
            "xtask: cargo-deny is not installed; `cargo install cargo-deny --locked` to check deny.toml too"
        );
        return Ok(());
    }
    let status = Command::new(&cargo)
        .args([
            "deny",
            "--log-level",
            "error",
            "check",
            "bans",
            "licenses",
            "sources",
        ])
        .current_dir(crate::root())
        .status()
        .context("running cargo deny")?;
    if !status.success() {
        bail!("cargo deny check failed (see deny.toml)");
    }
    Ok(())
}

/// The names of every crate `cargo tree` prints for these arguments.
fn tree(args: &[&str]) -> Result<BTreeSet<String>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--format", "{p}", "--target", "all"])
        .current_dir(crate::root())
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}
