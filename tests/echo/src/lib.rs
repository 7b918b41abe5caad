//! `trellis-echo`: the backend the sandbox runs for the conformance echo
//! images and the tests' pods (DESIGN.md, "The echo server"). It speaks the
//! upstream echo's contract so conformance expectations read it unchanged:
//!
//! ```text
//! flags (--port/--grpc/--tcp/--tls …) + env (NAMESPACE, POD_NAME, SERVICE_NAME)
//!   → config::Config → server::start
//!       HTTP port:  [TLS] → HTTP/1.1 | h2c → http::handle → JSON echo,
//!                   /status/NNN, /health, /retry, WebSocket echo
//!       gRPC port:  [TLS] → HTTP/2 → grpc::EchoService (GrpcEcho)
//!       TCP port:   [TLS] → byte echo
//! ```

pub mod config;
pub mod grpc;
pub mod http;
pub mod server;
pub mod tls;

pub use config::{Args, Config, Identity, Listener, Protocol};
pub use server::{Running, ServeError, start};

/// The binary: parse flags and environment, serve until SIGTERM or Ctrl-C.
/// Bad flags exit with status 64 and one line.
pub fn process_main() -> i32 {
    use clap::Parser as _;
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            eprintln!("trellis-echo: {}", first.trim_start_matches("error: "));
            return trellis_api::contract::EXIT_USAGE;
        }
    };
    let config = match Config::from_args(args, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("trellis-echo: {e}");
            return trellis_api::contract::EXIT_USAGE;
        }
    };
    let filter = std::env::var(trellis_api::contract::env::LOG).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trellis-echo: starting the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let running = match start(config).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("trellis-echo: {e}");
                return 1;
            }
        };
        for (listener, addr) in &running.listeners {
            let tls = if listener.tls { " (TLS)" } else { "" };
            tracing::info!("serving {:?}{tls} on {addr}", listener.protocol);
        }
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("trellis-echo: watching SIGTERM: {e}");
                    return 1;
                }
            };
        tokio::select! {
            () = running.wait() => 1,
            _ = term.recv() => 0,
            _ = tokio::signal::ctrl_c() => 0,
        }
    })
}
