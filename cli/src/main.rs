//! trellisctl: the Trellis operator tool.

use clap::Parser;

/// trellisctl: the Trellis operator tool.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
