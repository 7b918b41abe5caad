//! `trellis-identity`: flags, tracing, the crypto provider, then the CA.

use std::process::ExitCode;
use trellis_api::contract::{EXIT_USAGE, env};
use trellis_identity::cli::{self, UsageError};

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args()) {
        Ok(cli) => cli,
        Err(e) => return cli::clap_exit(&e),
    };
    trellis_identity::init_tracing(
        std::env::var(env::LOG).ok(),
        std::env::var(env::LOG_FORMAT).is_ok_and(|f| f == "json"),
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trellis-identity: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("trellis-identity: {e}");
            ExitCode::from(EXIT_USAGE as u8)
        }
        Err(e) => {
            eprintln!("trellis-identity: {e:#}");
            ExitCode::FAILURE
        }
    }
}
