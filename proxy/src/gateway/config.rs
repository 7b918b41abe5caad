//! Configuration of `trellis-proxy gateway`: flags, then the environment the
//! gateway deployer sets (read through [`Env`] so tests pass a map). The
//! identity flags and variables are the sidecar's: a gateway proxy is a
//! meshed workload with the Gateway's service account.

use crate::config::{Env, IdentityArgs};
use clap::Args;
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};
use trellis_api::contract::{env, port};
use trellis_identity_client::IdentityConfig;
use trellis_policy::ResourceRef;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --gateway {0:?}: expected NAMESPACE/NAME")]
    Gateway(String),
    #[error("no controller: give --controller or set {}", env::CONTROLLER_ADDR)]
    NoController,
    #[error("invalid duration {value:?} for {flag}: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Sidecar(#[from] crate::config::Error),
}

/// Flags of `trellis-proxy gateway`.
#[derive(Clone, Debug, Args)]
pub struct GatewayArgs {
    /// The Gateway to serve: NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub gateway: String,
    /// The controller's discovery service, host:port (default: $TRELLIS_CONTROLLER_ADDR).
    #[arg(long)]
    pub controller: Option<String>,
    /// The address every listener port is bound on.
    #[arg(long, default_value_t = IpAddr::V6(Ipv6Addr::UNSPECIFIED))]
    pub listen_ip: IpAddr,
    /// The admin listener: /metrics, /ready, /live, /config, POST /shutdown.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port::PROXY_ADMIN)))]
    pub admin_addr: SocketAddr,
    /// The port meshed endpoints' proxies accept mesh connections on.
    #[arg(long, default_value_t = port::PROXY_INBOUND)]
    pub mesh_port: u16,
    /// Runtime worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// On SIGTERM or POST /shutdown, how long in-flight work may take.
    #[arg(long, default_value = "25s")]
    pub shutdown_grace: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// The gateway's configuration, validated.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub gateway: ResourceRef,
    /// `host:port` or a URI of the controller's discovery service.
    pub controller: String,
    pub listen_ip: IpAddr,
    pub admin_addr: SocketAddr,
    pub mesh_port: u16,
    /// 0: one per CPU.
    pub worker_threads: usize,
    pub shutdown_grace: Duration,
    /// The workload certificate's source; `None` runs the mesh in plaintext.
    pub identity: Option<IdentityConfig>,
    /// The controller's SPIFFE id when it is reached over mTLS.
    pub controller_identity: Option<trellis_policy::SpiffeId>,
}

impl GatewayConfig {
    pub fn new(args: &GatewayArgs, env: &dyn Env) -> Result<Self, Error> {
        let gateway = match args.gateway.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                ResourceRef::new(ns, name)
            }
            _ => return Err(Error::Gateway(args.gateway.clone())),
        };
        let identity = args.identity.config(env)?;
        let controller = args
            .controller
            .clone()
            .or_else(|| env.get(env::CONTROLLER_ADDR))
            .ok_or(Error::NoController)?;
        let shutdown_grace =
            trellis_policy::duration::parse(&args.shutdown_grace).map_err(|e| Error::Duration {
                flag: "--shutdown-grace",
                value: args.shutdown_grace.clone(),
                reason: e.reason.to_string(),
            })?;
        Ok(Self {
            gateway,
            controller,
            listen_ip: args.listen_ip,
            admin_addr: args.admin_addr,
            mesh_port: args.mesh_port,
            worker_threads: args.worker_threads,
            shutdown_grace,
            controller_identity: args.identity.controller_identity(env, identity.as_ref())?,
            identity,
        })
    }

    /// The runtime's worker threads.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<GatewayConfig, Error> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GatewayConfig::new(&cli.gateway, &env)
    }

    #[test]
    fn flags_and_environment() {
        let c = config(
            &["--gateway", "edge/web"],
            &[
                (env::CONTROLLER_ADDR, "ctl:8090"),
                (env::IDENTITY_ADDR, "id:8083"),
                (env::IDENTITY_TOKEN, "/t"),
                (env::TRUST_BUNDLE, "/b.pem"),
                (env::POD_NAMESPACE, "edge"),
                (env::SERVICE_ACCOUNT, "web-trellis"),
            ],
        )
        .unwrap();
        assert_eq!(c.gateway, ResourceRef::new("edge", "web"));
        assert_eq!(c.controller, "ctl:8090");
        assert_eq!(c.admin_addr.port(), port::PROXY_ADMIN);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert!(c.workers() >= 1);
        let id = c.identity.unwrap();
        assert_eq!(
            id.id.as_str(),
            "spiffe://cluster.local/ns/edge/sa/web-trellis"
        );
        let c = config(
            &["--gateway=edge/web", "--controller", "other:1"],
            &[(env::CONTROLLER_ADDR, "ctl:8090")],
        )
        .unwrap();
        assert_eq!(c.controller, "other:1", "the flag wins");
        assert!(c.identity.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let ctl = [(env::CONTROLLER_ADDR, "ctl:8090")];
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (&["--gateway", "web"], &ctl, "NAMESPACE/NAME"),
            (&["--gateway", "edge/"], &ctl, "\"edge/\""),
            (&["--gateway", "a/b/c"], &ctl, "a/b/c"),
            (&["--gateway", "edge/web"], &[], env::CONTROLLER_ADDR),
            (
                &["--gateway", "edge/web", "--shutdown-grace", "soon"],
                &ctl,
                "--shutdown-grace",
            ),
            (
                &["--gateway", "edge/web", "--identity-addr", "id:8083"],
                &ctl,
                env::POD_NAMESPACE,
            ),
        ];
        for (args, env, want) in cases {
            let err = config(args, env).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
