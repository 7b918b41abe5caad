//! trellis-injector: the admission webhook that adds the Trellis sidecar to pods.

use clap::Parser;

/// trellis-injector: the admission webhook that adds the Trellis sidecar to pods.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
