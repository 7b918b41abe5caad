//! What the benchmark needs and is not a crate of this workspace: `oha`
//! (installed with `cargo install` when missing), nginx and wrk (from
//! Debian, as root), valgrind for `profile`, a release build of
//! `trellis-proxy` and a build of `trellis-identity` (which only issues the
//! certificates, so its debug build, shared with the tests, will do).

use anyhow::{Context, Result, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Debug)]
pub struct Tools {
    pub oha: PathBuf,
    pub nginx: PathBuf,
    pub wrk: PathBuf,
    pub proxy: PathBuf,
    pub identity: PathBuf,
}

/// The workspace root (this crate lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn which(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("bench: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn tools(nginx: bool) -> Result<Tools> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin"))
        .into_iter()
        .collect::<Vec<_>>();
    let oha = match which("oha", &cargo_bin) {
        Some(p) => p,
        None => {
            run(Command::new(cargo()).args(["install", "oha", "--locked"]))?;
            which("oha", &cargo_bin).context("oha not found after cargo install")?
        }
    };
    let nginx_path = if nginx {
        debian("nginx", "nginx")?
    } else {
        PathBuf::new()
    };
    let wrk = debian("wrk", "wrk")?;
    if which("taskset", &[]).is_none() {
        bail!("taskset is missing (Debian package util-linux)");
    }
    run(Command::new(cargo())
        .args([
            "build",
            "--release",
            "-p",
            "trellis-proxy",
            "--bin",
            "trellis-proxy",
        ])
        .current_dir(root()))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let proxy = target.join("release").join("trellis-proxy");
    if !proxy.is_file() {
        bail!("{} was not built", proxy.display());
    }
    run(Command::new(cargo())
        .args([
            "build",
            "-p",
            "trellis-identity",
            "--bin",
            "trellis-identity",
        ])
        .current_dir(root()))?;
    let identity = target.join("debug").join("trellis-identity");
    if !identity.is_file() {
        bail!("{} was not built", identity.display());
    }
    Ok(Tools {
        oha,
        nginx: nginx_path,
        wrk,
        proxy,
        identity,
    })
}

/// A program from a Debian package, installed when missing (as root).
pub fn debian(program: &str, package: &str) -> Result<PathBuf> {
    let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    if let Some(p) = which(program, &sbin) {
        return Ok(p);
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!("{program} is missing: run as root on Debian to install it (package {package})");
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    which(program, &sbin).with_context(|| format!("{program} not found after apt-get install"))
}
