//! trellis-echo: the test backend (HTTP/1.1, h2c, gRPC and TCP echo).

use clap::Parser;

/// trellis-echo: the test backend (HTTP/1.1, h2c, gRPC and TCP echo).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
