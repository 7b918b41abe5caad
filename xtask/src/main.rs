//! `cargo xtask`: the project's tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask test` sets up what the tests need (system packages when run
//!   as root, the Helm engine from PyPI), builds every binary and runs every
//!   test of the workspace. It is the command of the README and of `.ci/run`.
//! - `cargo xtask deps` checks the dependency directions of the design.
//! - `cargo xtask chart` tests the Helm chart; `chart-sync` refreshes its CRDs.
//! - `cargo xtask demo`, `cargo xtask conformance` and `cargo xtask sandbox`
//!   build every binary first (the sandbox runs them all) and then run the
//!   matching `trellisctl` command; `cargo xtask bench` runs the benchmarks.

mod chart;
mod deps;
mod setup;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::Command};

#[derive(Debug, Parser)]
#[command(about = "Trellis project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing (as root), build every binary, run every test.
    Test {
        /// Skip installing system and Python packages.
        #[arg(long)]
        no_setup: bool,
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Install the system and Python packages the tests and the sandbox need.
    Setup,
    /// Check the dependency directions of the design (policy is pure, the
    /// proxy never reaches Kubernetes, proxy and controller stay apart).
    Deps,
    /// Lint, render and validate the Helm chart for a matrix of values.
    Chart,
    /// Copy the CRDs the chart installs into charts/trellis/files/.
    ChartSync,
    /// Build every binary and run `trellisctl demo` (as root).
    Demo {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build every binary and run the Gateway API mesh conformance suite in a
    /// sandbox (`trellisctl conformance`, as root).
    Conformance {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build every binary and run `trellisctl sandbox ...` (as root).
    Sandbox {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a benchmark in release mode (`proxy`, or `controller`).
    Bench {
        /// Which benchmark.
        #[arg(default_value = "proxy")]
        which: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.task {
        Task::Test {
            no_setup,
            cargo_args,
        } => {
            if !no_setup {
                setup::run()?;
            }
            deps::check()?;
            cargo(&["build", "--workspace", "--bins"])?;
            let mut test = vec!["test", "--workspace", "--no-fail-fast"];
            if !cargo_args.is_empty() {
                test.push("--");
                test.extend(cargo_args.iter().map(String::as_str));
            }
            let tests = cargo(&test);
            chart::test().and(tests)
        }
        Task::Setup => setup::run(),
        Task::Deps => deps::check(),
        Task::Chart => chart::test(),
        Task::ChartSync => chart::sync(),
        Task::Demo { args } => trellisctl("demo", &args),
        Task::Conformance { args } => trellisctl("conformance", &args),
        Task::Sandbox { args } => trellisctl("sandbox", &args),
        Task::Bench { which, args } => bench(&which, &args),
    }
}

/// Installs what is missing, builds every binary, then runs a `trellisctl`
/// subcommand from the target directory so it finds its sibling binaries.
fn trellisctl(command: &str, args: &[String]) -> Result<()> {
    setup::system()?;
    cargo(&["build", "--workspace", "--bins"])?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let bin = target.join("debug").join("trellisctl");
    let status = Command::new(&bin)
        .arg(command)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("trellisctl {command} failed ({status})");
    }
    Ok(())
}

fn bench(which: &str, args: &[String]) -> Result<()> {
    let mut cmd: Vec<&str> = match which {
        "proxy" => vec!["run", "--release", "-p", "trellis-bench", "--", "proxy"],
        "controller" => vec![
            "bench",
            "-p",
            "trellis-controller",
            "--bench",
            "scale",
            "--",
        ],
        other => bail!("unknown benchmark {other:?}: expected proxy or controller"),
    };
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd)
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
