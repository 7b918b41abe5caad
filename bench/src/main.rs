//! `trellis-bench`: benchmarks that print numbers, never timed tests.
//!
//! - `proxy` measures the proxy against direct traffic and nginx in one
//!   run (see [`proxy`]) and writes JSON to `target/bench/proxy.json`.
//! - `profile` counts what a request costs the proxy — instructions
//!   (callgrind), system calls and context switches (perf) — figures that a
//!   busy machine does not blur (see [`profile`]); JSON to
//!   `target/bench/profile.json`.

mod fleet;
mod oha;
mod procs;
mod profile;
mod proxy;
mod report;
mod setup;
mod upstream;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Parser)]
#[command(about = "Trellis benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Direct vs one proxy vs two proxies (plaintext and mTLS mesh) vs
    /// nginx: latency, throughput, CPU, memory.
    Proxy {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Interleaved rounds of the 1,000 rps latency scenarios.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Leave nginx out.
        #[arg(long)]
        no_nginx: bool,
        /// Where to write the JSON report.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Instructions, system calls and context switches per request.
    Profile {
        /// Requests counted per workload.
        #[arg(long, default_value_t = 20_000)]
        requests: u32,
        /// Keep the callgrind profiles in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The benchmark's upstream server (started by `proxy`).
    #[command(hide = true)]
    Upstream {
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Proxy {
            duration,
            rounds,
            no_nginx,
            json,
        } => {
            let tools = setup::tools(!no_nginx)?;
            let opts = proxy::Options {
                duration: std::time::Duration::from_secs(duration.max(3)),
                rounds,
                nginx: !no_nginx,
                json: json.unwrap_or_else(|| setup::root().join("target/bench/proxy.json")),
            };
            proxy::run(&tools, &opts)
        }
        Cmd::Profile {
            requests,
            keep,
            json,
        } => {
            let tools = setup::tools(false)?;
            let opts = profile::Options {
                requests: requests.max(100),
                keep,
                json: json.unwrap_or_else(|| setup::root().join("target/bench/profile.json")),
            };
            profile::run(&tools, &opts)
        }
        Cmd::Upstream { addr } => upstream::run(addr),
    }
}
