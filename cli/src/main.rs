//! trellisctl: the Trellis operator tool. One module per subcommand; each
//! has an `Args` (clap) and a `run(Args) -> anyhow::Result<ExitCode>`, listed
//! once in `commands!` below.

mod check;
mod conformance;
mod demo;
mod install;
mod sandbox;
mod table;

use clap::Parser;
use std::process::ExitCode;

/// Declares the subcommands: `module::Variant` per line.
macro_rules! commands {
    ($($module:ident :: $variant:ident),* $(,)?) => {
        #[derive(Debug, clap::Subcommand)]
        enum Command { $($variant($module::Args),)* }
        impl Command {
            fn run(self) -> anyhow::Result<ExitCode> {
                match self { $(Command::$variant(a) => $module::run(a),)* }
            }
        }
    };
}

commands! {
    demo::Demo,
    sandbox::Sandbox,
    conformance::Conformance,
    install::Install,
    check::Check,
}

/// trellisctl: the Trellis operator tool.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("trellisctl: {}", first.trim_start_matches("error: "));
            return ExitCode::from(trellis_api::contract::EXIT_USAGE as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(trellis_api::contract::env::LOG)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trellisctl: {e:#}");
            if is_usage(&e) {
                ExitCode::from(trellis_api::contract::EXIT_USAGE as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Bad input on the command line (a sandbox name, an unknown test) exits 64.
fn is_usage(e: &anyhow::Error) -> bool {
    use trellis_sandbox::{conformance, names, sandbox};
    e.chain().any(|c| {
        c.downcast_ref::<names::Error>().is_some()
            || c.downcast_ref::<install::UsageError>().is_some()
            || matches!(
                c.downcast_ref::<sandbox::Error>(),
                Some(sandbox::Error::Names(_))
            )
            || matches!(
                c.downcast_ref::<conformance::Error>(),
                Some(
                    conformance::Error::UnknownTest(_)
                        | conformance::Error::Sandbox(sandbox::Error::Names(_))
                )
            )
    })
}
