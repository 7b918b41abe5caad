//! `trellis-bench`: benchmarks that print numbers, never timed tests.
//!
//! `cargo run --release -p trellis-bench -- proxy` measures the proxy against
//! direct traffic and nginx in one run (see [`proxy`]) and writes JSON to
//! `target/bench/proxy.json`.

mod oha;
mod procs;
mod proxy;
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
    /// Direct vs one proxy vs two proxies vs nginx: latency, throughput, CPU, memory.
    Proxy {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Leave nginx out.
        #[arg(long)]
        no_nginx: bool,
        /// Where to write the JSON report.
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
            no_nginx,
            json,
        } => {
            let tools = setup::tools(!no_nginx)?;
            let opts = proxy::Options {
                duration: std::time::Duration::from_secs(duration.max(1)),
                nginx: !no_nginx,
                json: json.unwrap_or_else(|| setup::root().join("target/bench/proxy.json")),
            };
            proxy::run(&tools, &opts)
        }
        Cmd::Upstream { addr } => upstream::run(addr),
    }
}
