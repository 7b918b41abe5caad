//! `cargo xtask`: the project's tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask test` sets up what the tests need (system packages when run
//!   as root, the Helm engine from PyPI), builds every binary and runs every
//!   test of the workspace. It is the command of the README and of `.ci/run`.
//! - `cargo xtask deps` checks the dependency directions of the design.
//! - `cargo xtask chart` tests the Helm chart; `chart-sync` refreshes its CRDs.

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
    }
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
