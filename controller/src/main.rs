//! trellis-controller: resolves Gateway API routes into per-service policy and streams it to proxies.

use clap::Parser;

/// trellis-controller: resolves Gateway API routes into per-service policy and streams it to proxies.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
