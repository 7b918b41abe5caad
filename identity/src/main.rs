//! trellis-identity: the Trellis CA, issuing short-lived SPIFFE certificates to proxies.

use clap::Parser;

/// trellis-identity: the Trellis CA, issuing short-lived SPIFFE certificates to proxies.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
