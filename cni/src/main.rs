//! trellis-cni: the chained CNI plugin that installs Trellis capture rules.

use clap::Parser;

/// trellis-cni: the chained CNI plugin that installs Trellis capture rules.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
