//! trellis-injector: the admission webhook that adds the Trellis sidecar to pods.

use clap::Parser;
use trellis_api::contract::EXIT_USAGE;
use trellis_injector::{Args, UsageError, run};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(trellis_api::contract::env::LOG)
                .unwrap_or_else(|_| "info".into()),
        )
        .json()
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            eprintln!(
                "{}",
                e.render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("bad arguments")
            );
            std::process::exit(EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    if let Err(e) = run(args).await {
        eprintln!("trellis-injector: {e:#}");
        let usage = e.downcast_ref::<UsageError>().is_some();
        std::process::exit(if usage { EXIT_USAGE } else { 1 });
    }
}
