//! Configuration of `trellis-proxy sidecar`: flags, then the environment the
//! injector sets (read through [`Env`] so tests pass a map).
//!
//! Identity is on when the identity service's address is given
//! (`--identity-addr` or `TRELLIS_IDENTITY_ADDR`); then the token, the trust
//! bundle, the namespace and the service account are required too, and the
//! proxy speaks mTLS to every meshed peer. Without it the proxy runs with
//! plaintext mesh connections (debugging with `--policy-file`, tests).

use clap::Args;
use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};
use trellis_api::contract::{env, port};
use trellis_identity_client::IdentityConfig;
use trellis_policy::{ResourceRef, SpiffeId};

/// Reads environment variables.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid listener {value:?}: expected LISTEN_ADDR=TARGET_ADDR (e.g. 127.0.0.1:9000=198.19.0.10:80)"
    )]
    Fixed { value: String },
    #[error("invalid duration {value:?} for {flag}: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--controller and --policy-file exclude each other")]
    TwoSources,
    #[error("{0} is set without {1}")]
    HalfWorkload(&'static str, &'static str),
    #[error("identity: {0}")]
    Identity(#[from] trellis_identity_client::ConfigError),
    #[error(
        "invalid controller identity {value:?} ({}): {reason}",
        env::CONTROLLER_IDENTITY
    )]
    ControllerIdentity { value: String, reason: String },
    #[error(
        "a controller identity ({}) needs this proxy's own identity: give --identity-addr or set {}",
        env::CONTROLLER_IDENTITY,
        env::IDENTITY_ADDR
    )]
    ControllerIdentityWithoutIdentity,
}

/// Flags of `trellis-proxy sidecar`.
#[derive(Clone, Debug, Args)]
pub struct SidecarArgs {
    /// The outbound listener (iptables OUTPUT redirects here).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port::PROXY_OUTBOUND)))]
    pub outbound_addr: SocketAddr,
    /// The inbound listener (iptables PREROUTING redirects here; peers dial it).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port::PROXY_INBOUND)))]
    pub inbound_addr: SocketAddr,
    /// The admin listener: /metrics, /ready, /live, /config, POST /shutdown.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port::PROXY_ADMIN)))]
    pub admin_addr: SocketAddr,
    /// The controller's discovery service, host:port (default: $TRELLIS_CONTROLLER_ADDR).
    #[arg(long)]
    pub controller: Option<String>,
    /// Serve policies from this YAML file instead of the controller; reloaded on change.
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
    /// An extra outbound listener with a fixed target instead of SO_ORIGINAL_DST:
    /// LISTEN=TARGET (repeatable).
    #[arg(long = "outbound-fixed", value_name = "LISTEN=TARGET")]
    pub outbound_fixed: Vec<String>,
    /// An extra inbound listener forwarding to a fixed application address:
    /// LISTEN=APP (repeatable).
    #[arg(long = "inbound-fixed", value_name = "LISTEN=APP")]
    pub inbound_fixed: Vec<String>,
    /// The port peers' proxies accept mesh connections on.
    #[arg(long, default_value_t = port::PROXY_INBOUND)]
    pub mesh_port: u16,
    /// Runtime worker threads (a sidecar needs few).
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
    /// How long to wait for a client's first bytes before treating the
    /// connection as opaque (server-speaks-first protocols).
    #[arg(long, default_value = "300ms")]
    pub detect_timeout: String,
    /// Drop the policy watch of a target unused for this long.
    #[arg(long, default_value = "10m")]
    pub idle_target_timeout: String,
    /// On SIGTERM or POST /shutdown, how long in-flight work may take.
    #[arg(long, default_value = "25s")]
    pub shutdown_grace: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Where the workload certificate comes from; each flag overrides the
/// environment variable named in its help.
#[derive(Clone, Debug, Default, Args)]
pub struct IdentityArgs {
    /// The identity service, host:port; turns mTLS on ($TRELLIS_IDENTITY_ADDR).
    #[arg(long)]
    pub identity_addr: Option<String>,
    /// The name the identity service's certificate carries (default: the
    /// address' host) ($TRELLIS_IDENTITY_NAME).
    #[arg(long)]
    pub identity_name: Option<String>,
    /// The token file proving the service account ($TRELLIS_IDENTITY_TOKEN).
    #[arg(long)]
    pub identity_token: Option<PathBuf>,
    /// The trust bundle file (PEM), followed as it changes ($TRELLIS_TRUST_BUNDLE).
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    /// The SPIFFE trust domain (default cluster.local) ($TRELLIS_TRUST_DOMAIN).
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// The pod's service account ($TRELLIS_SERVICE_ACCOUNT).
    #[arg(long)]
    pub service_account: Option<String>,
    /// The controller's SPIFFE id: reach the controller over mTLS and refuse
    /// any other server ($TRELLIS_CONTROLLER_IDENTITY).
    #[arg(long)]
    pub controller_identity: Option<String>,
}

impl IdentityArgs {
    /// The flag standing for an environment variable, if given.
    fn flag(&self, name: &str) -> Option<String> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match name {
            env::IDENTITY_ADDR => self.identity_addr.clone(),
            env::IDENTITY_NAME => self.identity_name.clone(),
            env::IDENTITY_TOKEN => path(&self.identity_token),
            env::TRUST_BUNDLE => path(&self.trust_bundle),
            env::TRUST_DOMAIN => self.trust_domain.clone(),
            env::SERVICE_ACCOUNT => self.service_account.clone(),
            env::CONTROLLER_IDENTITY => self.controller_identity.clone(),
            _ => None,
        }
        .filter(|v| !v.is_empty())
    }

    /// The identity configuration when an identity service is named.
    pub fn config(&self, env: &dyn Env) -> Result<Option<IdentityConfig>, Error> {
        let get = |name: &str| self.flag(name).or_else(|| env.get(name));
        if get(env::IDENTITY_ADDR).is_none() {
            return Ok(None);
        }
        Ok(Some(IdentityConfig::from_env(get)?))
    }

    /// The controller's SPIFFE id when the controller is to be reached over
    /// mTLS; it needs `identity`, this proxy's own.
    pub fn controller_identity(
        &self,
        env: &dyn Env,
        identity: Option<&IdentityConfig>,
    ) -> Result<Option<SpiffeId>, Error> {
        let Some(value) = self
            .flag(env::CONTROLLER_IDENTITY)
            .or_else(|| env.get(env::CONTROLLER_IDENTITY))
        else {
            return Ok(None);
        };
        let id = SpiffeId::parse(&value).map_err(|e| Error::ControllerIdentity {
            value: value.clone(),
            reason: e.reason.to_string(),
        })?;
        if identity.is_none() {
            return Err(Error::ControllerIdentityWithoutIdentity);
        }
        Ok(Some(id))
    }
}

/// Where policies come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    Controller(String),
    File(PathBuf),
    None,
}

/// The sidecar's configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub outbound_fixed: Vec<(SocketAddr, SocketAddr)>,
    pub inbound_fixed: Vec<(SocketAddr, SocketAddr)>,
    pub source: SourceConfig,
    pub workload: Option<ResourceRef>,
    pub mesh_port: u16,
    pub worker_threads: usize,
    pub detect_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The workload certificate's source; `None` runs the mesh in plaintext.
    pub identity: Option<IdentityConfig>,
    /// The controller's SPIFFE id when it is reached over mTLS.
    pub controller_identity: Option<SpiffeId>,
}

impl Config {
    pub fn new(args: &SidecarArgs, env: &dyn Env) -> Result<Self, Error> {
        let source = match (
            args.controller
                .clone()
                .or_else(|| env.get(env::CONTROLLER_ADDR)),
            &args.policy_file,
        ) {
            (Some(_), Some(_)) if args.controller.is_some() => return Err(Error::TwoSources),
            (_, Some(f)) => SourceConfig::File(f.clone()),
            (Some(c), None) => SourceConfig::Controller(c),
            (None, None) => SourceConfig::None,
        };
        let identity = args.identity.config(env)?;
        let workload = match (env.get(env::POD_NAMESPACE), env.get(env::POD_NAME)) {
            (Some(ns), Some(name)) => Some(ResourceRef::new(ns, name)),
            (None, None) => None,
            (Some(_), None) => return Err(Error::HalfWorkload(env::POD_NAMESPACE, env::POD_NAME)),
            (None, Some(_)) => return Err(Error::HalfWorkload(env::POD_NAME, env::POD_NAMESPACE)),
        };
        Ok(Self {
            outbound_addr: args.outbound_addr,
            inbound_addr: args.inbound_addr,
            admin_addr: args.admin_addr,
            outbound_fixed: fixed(&args.outbound_fixed)?,
            inbound_fixed: fixed(&args.inbound_fixed)?,
            source,
            workload,
            mesh_port: args.mesh_port,
            worker_threads: args.worker_threads.max(1),
            detect_timeout: duration("--detect-timeout", &args.detect_timeout)?,
            idle_timeout: duration("--idle-target-timeout", &args.idle_target_timeout)?,
            shutdown_grace: duration("--shutdown-grace", &args.shutdown_grace)?,
            identity: identity.clone(),
            controller_identity: args.identity.controller_identity(env, identity.as_ref())?,
        })
    }
}

fn fixed(values: &[String]) -> Result<Vec<(SocketAddr, SocketAddr)>, Error> {
    values
        .iter()
        .map(|v| {
            let err = || Error::Fixed { value: v.clone() };
            let (l, t) = v.split_once('=').ok_or_else(err)?;
            Ok((l.parse().map_err(|_| err())?, t.parse().map_err(|_| err())?))
        })
        .collect()
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, Error> {
    trellis_policy::duration::parse(value).map_err(|e| Error::Duration {
        flag,
        value: value.to_string(),
        reason: e.reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sidecar: SidecarArgs,
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Error> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::new(&cli.sidecar, &env)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[], &[]).unwrap();
        assert_eq!(c.outbound_addr.port(), port::PROXY_OUTBOUND);
        assert_eq!(c.inbound_addr.port(), port::PROXY_INBOUND);
        assert_eq!(c.admin_addr.port(), port::PROXY_ADMIN);
        assert_eq!(c.detect_timeout, Duration::from_millis(300));
        assert_eq!(c.source, SourceConfig::None);
        assert_eq!(c.workload, None);
        assert!(c.identity.is_none(), "plaintext unless identity is named");
    }

    #[test]
    fn the_controller_identity_needs_our_own_and_a_valid_spiffe_id() {
        let identity = [
            (env::IDENTITY_ADDR, "198.18.0.1:8083"),
            (env::IDENTITY_TOKEN, "/t"),
            (env::TRUST_BUNDLE, "/b.pem"),
            (env::POD_NAMESPACE, "shop"),
            (env::POD_NAME, "web-0"),
            (env::SERVICE_ACCOUNT, "web"),
        ];
        let controller = "spiffe://cluster.local/ns/trellis/sa/trellis-controller";
        let mut env = identity.to_vec();
        env.push((env::CONTROLLER_IDENTITY, controller));
        let c = config(&[], &env).unwrap();
        assert_eq!(c.controller_identity.unwrap().as_str(), controller);
        assert!(
            config(&[], &identity)
                .unwrap()
                .controller_identity
                .is_none()
        );

        let flag = config(&["--controller-identity", "spiffe://td/ns/a/sa/b"], &env).unwrap();
        assert_eq!(
            flag.controller_identity.unwrap().as_str(),
            "spiffe://td/ns/a/sa/b",
            "the flag wins"
        );
        let e = config(&["--controller-identity", "trellis-controller"], &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid controller identity \"trellis-controller\""),
            "{e}"
        );
        let e = config(&["--controller-identity", controller], &[]).unwrap_err();
        assert!(matches!(e, Error::ControllerIdentityWithoutIdentity), "{e}");
        assert!(e.to_string().contains(env::IDENTITY_ADDR), "{e}");
    }

    #[test]
    fn identity_comes_from_the_environment_and_flags_override_it() {
        let env = [
            (env::IDENTITY_ADDR, "198.18.0.1:8083"),
            (env::IDENTITY_TOKEN, "/var/run/trellis/identity-token"),
            (env::TRUST_BUNDLE, "/var/run/trellis/trust-bundle.pem"),
            (env::POD_NAMESPACE, "shop"),
            (env::POD_NAME, "web-0"),
            (env::SERVICE_ACCOUNT, "web"),
        ];
        let id = config(&[], &env).unwrap().identity.unwrap();
        assert_eq!(id.addr, "198.18.0.1:8083");
        assert_eq!(id.server_name, "198.18.0.1");
        assert_eq!(id.id.as_str(), "spiffe://cluster.local/ns/shop/sa/web");
        let id = config(
            &[
                "--trust-domain",
                "example.org",
                "--identity-name",
                "identity.trellis",
                "--trust-bundle",
                "/b.pem",
            ],
            &env,
        )
        .unwrap()
        .identity
        .unwrap();
        assert_eq!(id.id.as_str(), "spiffe://example.org/ns/shop/sa/web");
        assert_eq!(id.server_name, "identity.trellis");
        assert_eq!(id.trust_bundle, PathBuf::from("/b.pem"));
    }

    #[test]
    fn the_environment_names_controller_and_workload() {
        let c = config(
            &[],
            &[
                (env::CONTROLLER_ADDR, "ctl:8090"),
                (env::POD_NAMESPACE, "shop"),
                (env::POD_NAME, "web-0"),
            ],
        )
        .unwrap();
        assert_eq!(c.source, SourceConfig::Controller("ctl:8090".into()));
        assert_eq!(c.workload, Some(ResourceRef::new("shop", "web-0")));
        // A policy file wins over a controller from the environment.
        let c = config(
            &["--policy-file", "/p.yaml"],
            &[(env::CONTROLLER_ADDR, "ctl:8090")],
        )
        .unwrap();
        assert_eq!(c.source, SourceConfig::File("/p.yaml".into()));
    }

    #[test]
    fn bad_values_are_named() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (&["--outbound-fixed", "127.0.0.1:1"], &[], "127.0.0.1:1"),
            (&["--detect-timeout", "3 s"], &[], "--detect-timeout"),
            (
                &["--controller", "c:1", "--policy-file", "p"],
                &[],
                "exclude",
            ),
            (&[], &[(env::POD_NAME, "p")], env::POD_NAMESPACE),
            (
                &["--identity-addr", "id:8083"],
                &[(env::POD_NAMESPACE, "shop"), (env::POD_NAME, "p")],
                env::SERVICE_ACCOUNT,
            ),
        ];
        for (args, env, want) in cases {
            let err = config(args, env).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
        let c = config(&["--outbound-fixed", "127.0.0.1:9000=198.19.0.1:80"], &[]).unwrap();
        assert_eq!(
            c.outbound_fixed,
            vec![(
                "127.0.0.1:9000".parse().unwrap(),
                "198.19.0.1:80".parse().unwrap()
            )]
        );
    }
}
