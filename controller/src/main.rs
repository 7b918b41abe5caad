//! The `trellis-controller` binary: flags, logging, the TLS provider, run.

use anyhow::Context;
use trellis_api::contract::EXIT_USAGE;
use trellis_controller::config::{Invocation, LogFormat, ProcessEnv};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Invocation::parse(std::env::args_os(), &ProcessEnv) {
        Ok(Invocation::Run(c)) => c,
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return Ok(());
        }
        Ok(Invocation::PrintCrds) => {
            print!(
                "{}",
                trellis_controller::crd::authorization_policy_crd_yaml()
            );
            return Ok(());
        }
        Err(e) => {
            eprintln!("trellis-controller: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("trellis-controller: --log {:?}: {e}", config.log);
        std::process::exit(EXIT_USAGE);
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Plain => logs.init(),
    }
    // The one crypto provider of the workspace; installing fails only if one is already set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let running = trellis_controller::server::start(*config)
        .await
        .context("starting the controller")?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::select! {
        r = running.wait() => r.context("controller stopped"),
        _ = shutdown => Ok(()),
    }
}
