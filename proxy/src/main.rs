//! trellis-proxy: the Trellis sidecar and gateway proxy.

use clap::Parser;

/// trellis-proxy: the Trellis sidecar and gateway proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
