//! `trellis-proxy`: the sidecar (`sidecar`), the capture-rule installer
//! (`init`) and the ingress gateway (`gateway`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use trellis_api::contract::{EXIT_USAGE, env};
use trellis_proxy::{
    Sidecar,
    config::{Config, ProcessEnv, SidecarArgs},
    gateway::{Gateway, GatewayArgs, GatewayConfig},
    init::{self, InitArgs},
};

#[derive(Debug, Parser)]
#[command(version, about = "The Trellis data plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as a pod's sidecar: transparent outbound and inbound proxy.
    Sidecar(SidecarArgs),
    /// Install the capture rules in this network namespace (no CNI plugin).
    Init(InitArgs),
    /// Run as the proxy of one Gateway: its listeners and routes.
    Gateway(GatewayArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout and succeed; a bad flag is a usage
        // error in one line.
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            std::process::exit(usage(&line.trim_start_matches("error: ")));
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(
                std::env::var(env::LOG).unwrap_or_else(|_| "info".into()),
            )
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Sidecar(args) => match Config::new(&args, &ProcessEnv) {
            Ok(config) => report(sidecar(&config)),
            Err(e) => usage(&e),
        },
        Command::Init(args) => match init::run(&args, &ProcessEnv) {
            Ok(()) => 0,
            Err(e) if e.is_usage() => usage(&e),
            Err(e) => report(Err(e.into())),
        },
        Command::Gateway(args) => match GatewayConfig::new(&args, &ProcessEnv) {
            Ok(config) => report(gateway(&config)),
            Err(e) => usage(&e),
        },
    };
    std::process::exit(code);
}

fn usage(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("trellis-proxy: {e}");
    EXIT_USAGE
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("trellis-proxy: {e:#}");
            1
        }
    }
}

fn sidecar(config: &Config) -> anyhow::Result<()> {
    // One worker: a current-thread runtime, with no work-stealing machinery
    // between the I/O driver and the tasks it wakes.
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let rt = builder
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let sidecar = Sidecar::start(config)
            .await
            .context("starting the sidecar")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
            () = sidecar.shutdown_requested() => {}
        }
        sidecar.drain().await;
        Ok(())
    })
}

fn gateway(config: &GatewayConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let gateway = Gateway::start(config)
            .await
            .context("starting the gateway")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
            () = gateway.shutdown_requested() => {}
        }
        gateway.drain().await;
        Ok(())
    })
}
