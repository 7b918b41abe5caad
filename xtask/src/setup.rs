//! Installs what the tests need and is not a crate: iptables and nftables for
//! capture rules, iproute2 for network namespaces, Debian's reference CNI
//! plugins, curl, and the Helm engine (PyPI `helm-python-sdk`) for the chart.

use anyhow::{Context, Result, bail};
use std::{path::Path, process::Command};

/// A system package and a file whose presence says it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("iptables", "/usr/sbin/iptables-restore"),
    ("nftables", "/usr/sbin/nft"),
    ("iproute2", "/usr/sbin/ip"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("curl", "/usr/bin/curl"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("util-linux", "/usr/bin/setpriv"),
];

/// Python packages, by import name and PyPI name.
const PYTHON: &[(&str, &str)] = &[
    // Helm 4 as a native library (`import helm_python`): no helm binary.
    ("helm_python", "helm-python-sdk"),
    ("yaml", "pyyaml"),
    ("jsonschema", "jsonschema"),
    // The Kubernetes OpenAPI schemas (v1.25 on) for validating rendered objects.
    ("kubernetes_validate", "kubernetes-validate"),
];

pub fn run() -> Result<()> {
    system()?;
    python_packages()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Only the Debian packages: what the sandbox (demo, conformance) needs.
pub fn system() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing system packages: {} (run `cargo xtask setup` as root on Debian, or install them yourself)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn python_packages() -> Result<()> {
    let python = python();
    let missing: Vec<&str> = PYTHON
        .iter()
        .filter(|(module, _)| {
            !Command::new(&python)
                .args(["-c", &format!("import {module}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: pip installing {}", missing.join(" "));
    run_cmd(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(&missing),
    )
}

/// The Python the chart tests use: `TRELLIS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
