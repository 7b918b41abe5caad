//! `trellis-proxy init`: installs the capture rules of `trellis-capture` in
//! the pod's network namespace when no CNI plugin does (run as an init
//! container with `NET_ADMIN`). The rules themselves are planned by
//! `trellis_capture::plan`; this module only gathers the configuration.

use crate::config::Env;
use clap::Args;
use trellis_api::contract::env;
use trellis_capture::{Backend, CaptureConfig, Families};

/// Flags of `trellis-proxy init`; skip lists default to the injector's
/// environment (`TRELLIS_SKIP_INBOUND_PORTS`, ...).
#[derive(Clone, Debug, Args)]
pub struct InitArgs {
    /// `iptables` (iptables-restore) or `nft`.
    #[arg(long, default_value = "iptables")]
    pub backend: Backend,
    /// Inbound ports that go straight to the application, e.g. `22,8000-8100`.
    #[arg(long)]
    pub skip_inbound_ports: Option<String>,
    /// Outbound ports that bypass the proxy.
    #[arg(long)]
    pub skip_outbound_ports: Option<String>,
    /// Outbound networks that bypass the proxy, e.g. `10.0.0.0/8`.
    #[arg(long)]
    pub skip_outbound_cidrs: Option<String>,
    /// Only check that the installed rules match the plan.
    #[arg(long)]
    pub check: bool,
    /// Remove the capture rules instead of installing them.
    #[arg(long, conflicts_with = "check")]
    pub remove: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] trellis_capture::ConfigError),
    #[error(transparent)]
    Apply(#[from] trellis_capture::ApplyError),
}

impl Error {
    /// Whether the error is the operator's input (exit 64) rather than the
    /// system's.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config(_))
    }
}

/// The capture configuration the flags and environment describe.
pub fn capture_config(args: &InitArgs, env: &dyn Env) -> Result<CaptureConfig, Error> {
    let pick = |flag: &Option<String>, var: &str| {
        flag.clone().or_else(|| env.get(var)).unwrap_or_default()
    };
    Ok(CaptureConfig::default()
        .families(Families::host())
        .skip_inbound(&pick(&args.skip_inbound_ports, env::SKIP_INBOUND_PORTS))?
        .skip_outbound(&pick(&args.skip_outbound_ports, env::SKIP_OUTBOUND_PORTS))?
        .skip_cidrs(&pick(&args.skip_outbound_cidrs, env::SKIP_OUTBOUND_CIDRS))?)
}

/// Installs (or checks, or removes) the capture rules in the current
/// network namespace.
pub fn run(args: &InitArgs, env: &dyn Env) -> Result<(), Error> {
    let config = capture_config(args, env)?;
    if args.remove {
        trellis_capture::remove(config.families, args.backend)?;
        return Ok(());
    }
    let plan = trellis_capture::plan(&config);
    if args.check {
        trellis_capture::check(&plan, args.backend)?;
    } else {
        trellis_capture::apply(&plan, args.backend)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    #[test]
    fn flags_win_over_the_environment() {
        let cli = Cli::try_parse_from(["x", "--skip-inbound-ports", "22"]).unwrap();
        let env: HashMap<String, String> = [
            (env::SKIP_INBOUND_PORTS.to_string(), "9999".to_string()),
            (
                env::SKIP_OUTBOUND_CIDRS.to_string(),
                "10.0.0.0/8".to_string(),
            ),
        ]
        .into();
        let c = capture_config(&cli.init, &env).unwrap();
        assert_eq!(
            c.skip_inbound_ports,
            trellis_capture::parse_ports("22").unwrap()
        );
        assert_eq!(c.skip_outbound_cidrs.len(), 1);
    }

    #[test]
    fn bad_lists_are_usage_errors() {
        let cli = Cli::try_parse_from(["x", "--skip-outbound-ports", "http"]).unwrap();
        let err = capture_config(&cli.init, &HashMap::new()).unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().contains("http"), "{err}");
    }
}
