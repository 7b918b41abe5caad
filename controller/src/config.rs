//! Flags, and what the binary runs from them. Environment variables are read
//! through [`Env`], so tests pass a map.

use clap::{Parser, Subcommand, ValueEnum};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use trellis_api::contract::{self, env, port};
use trellis_policy::MtlsMode;

/// Reads environment variables.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MtlsFlag {
    Permissive,
    Strict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// trellis-controller: resolves Gateway API routes (GAMMA and Gateways) into
/// per-service policy, streams it to Trellis proxies over gRPC and reports
/// route status. Objects come from Kubernetes, or from a directory of
/// manifests with --manifests.
///
/// With TRELLIS_IDENTITY_ADDR set (and TRELLIS_IDENTITY_TOKEN,
/// TRELLIS_TRUST_BUNDLE, TRELLIS_POD_NAMESPACE, TRELLIS_SERVICE_ACCOUNT,
/// optionally TRELLIS_IDENTITY_NAME, as for a sidecar) the controller
/// obtains its own mesh certificate from trellis-identity and serves the
/// discovery service over mTLS only.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Read objects from this directory (recursively; multi-document YAML or
    /// JSON; changes are picked up within 200 ms) instead of Kubernetes.
    /// Repeatable.
    #[arg(long, value_name = "DIR")]
    pub manifests: Vec<PathBuf>,

    /// Kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the gRPC discovery service.
    #[arg(long, value_name = "IP:PORT", default_value_t = SocketAddr::from(([0, 0, 0, 0], port::CONTROLLER_GRPC)))]
    pub grpc_addr: SocketAddr,

    /// Address of the admin server (/status, /policy, /metrics, /ready, /live).
    #[arg(long, value_name = "IP:PORT", default_value_t = SocketAddr::from(([0, 0, 0, 0], port::CONTROLLER_ADMIN)))]
    pub admin_addr: SocketAddr,

    /// SPIFFE trust domain of endpoint identities [env: TRELLIS_TRUST_DOMAIN; default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    pub trust_domain: Option<String>,

    /// Kubernetes cluster domain, for backend authorities [env: TRELLIS_CLUSTER_DOMAIN; default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,

    /// Mesh-wide mTLS mode when neither pod nor namespace has a trellis.io/mtls annotation.
    #[arg(long, value_enum, default_value_t = MtlsFlag::Permissive)]
    pub mtls_mode: MtlsFlag,

    /// Namespace of the status-writing lease (Kubernetes mode) [env: TRELLIS_POD_NAMESPACE; default: trellis-system].
    #[arg(long, value_name = "NS")]
    pub lease_namespace: Option<String>,

    /// Name of the status-writing lease (Kubernetes mode).
    #[arg(long, value_name = "NAME", default_value = "trellis-controller")]
    pub lease_name: String,

    /// This replica's identity in the lease [env: TRELLIS_POD_NAME; default: the host name].
    #[arg(long, value_name = "ID")]
    pub identity: Option<String>,

    /// Log filter (tracing EnvFilter syntax) [env: TRELLIS_LOG; default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format [env: TRELLIS_LOG_FORMAT; default: plain].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions Trellis owns (AuthorizationPolicy) as YAML.
    Crds,
}

/// Where objects come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    Manifests(Vec<PathBuf>),
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        lease_namespace: String,
        lease_name: String,
        identity: String,
    },
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: SourceConfig,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub settings: crate::index::Settings,
    pub log: String,
    pub log_format: LogFormat,
    /// The controller's own certificate source; with it the discovery
    /// service is served over mTLS only.
    pub identity: Option<trellis_identity_client::IdentityConfig>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    PrintCrds,
    /// `--help` or `--version`: print this and exit 0.
    Print(String),
}

/// Bad flags, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn host_name(env: &dyn Env) -> String {
    env.var("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "trellis-controller".to_string())
}

impl Invocation {
    /// Parses `args` (the first one is the program name).
    pub fn parse<I, T>(args: I, env: &dyn Env) -> Result<Self, UsageError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = match Args::try_parse_from(args) {
            Ok(a) => a,
            Err(e) => {
                use clap::error::ErrorKind;
                return match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        Ok(Invocation::Print(e.render().to_string()))
                    }
                    _ => {
                        let text = e.render().to_string();
                        let line = text.lines().next().unwrap_or("invalid arguments");
                        Err(UsageError(line.trim_start_matches("error: ").to_string()))
                    }
                };
            }
        };
        if let Some(Command::Crds) = args.command {
            return Ok(Invocation::PrintCrds);
        }
        for dir in &args.manifests {
            if !dir.exists() {
                return Err(UsageError(format!(
                    "--manifests {}: no such file or directory",
                    dir.display()
                )));
            }
        }
        let source = if args.manifests.is_empty() {
            SourceConfig::Kubernetes {
                kubeconfig: args.kubeconfig,
                lease_namespace: args
                    .lease_namespace
                    .or_else(|| env.var(env::POD_NAMESPACE))
                    .unwrap_or_else(|| "trellis-system".to_string()),
                lease_name: args.lease_name,
                identity: args
                    .identity
                    .or_else(|| env.var(env::POD_NAME))
                    .unwrap_or_else(|| host_name(env)),
            }
        } else {
            SourceConfig::Manifests(args.manifests)
        };
        let log_format = match args.log_format {
            Some(f) => f,
            None => match env.var(env::LOG_FORMAT).as_deref() {
                None | Some("plain") => LogFormat::Plain,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(UsageError(format!(
                        "{}={other:?}: expected plain or json",
                        env::LOG_FORMAT
                    )));
                }
            },
        };
        let settings = crate::index::Settings {
            trust_domain: args
                .trust_domain
                .or_else(|| env.var(env::TRUST_DOMAIN))
                .unwrap_or_else(|| contract::DEFAULT_TRUST_DOMAIN.to_string()),
            cluster_domain: args
                .cluster_domain
                .or_else(|| env.var(env::CLUSTER_DOMAIN))
                .unwrap_or_else(|| contract::DEFAULT_CLUSTER_DOMAIN.to_string()),
            mtls_mode: match args.mtls_mode {
                MtlsFlag::Permissive => MtlsMode::Permissive,
                MtlsFlag::Strict => MtlsMode::Strict,
            },
        };
        if trellis_policy::SpiffeId::parse(&format!("spiffe://{}/x", settings.trust_domain))
            .is_err()
        {
            return Err(UsageError(format!(
                "--trust-domain {:?}: not a SPIFFE trust domain",
                settings.trust_domain
            )));
        }
        let identity = match env.var(env::IDENTITY_ADDR) {
            None => None,
            Some(_) => {
                let trust_domain = settings.trust_domain.clone();
                let get = |name: &str| match name {
                    env::TRUST_DOMAIN => Some(trust_domain.clone()),
                    other => env.var(other),
                };
                let identity = trellis_identity_client::IdentityConfig::from_env(get)
                    .map_err(|e| UsageError(format!("identity: {e}")))?;
                Some(identity)
            }
        };
        Ok(Invocation::Run(Box::new(Config {
            source,
            grpc_addr: args.grpc_addr,
            admin_addr: args.admin_addr,
            settings,
            log: args
                .log
                .or_else(|| env.var(env::LOG))
                .unwrap_or_else(|| "info".to_string()),
            log_format,
            identity,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, UsageError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::parse(
            std::iter::once("trellis-controller").chain(args.iter().copied()),
            &env,
        )
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env) {
            Ok(Invocation::Run(c)) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_environment() {
        let c = config(
            &[],
            &[
                ("TRELLIS_POD_NAMESPACE", "mesh"),
                ("TRELLIS_POD_NAME", "ctl-0"),
            ],
        );
        assert_eq!(c.grpc_addr.port(), port::CONTROLLER_GRPC);
        assert_eq!(c.admin_addr.port(), port::CONTROLLER_ADMIN);
        assert_eq!(c.settings.trust_domain, "cluster.local");
        assert_eq!(c.settings.mtls_mode, MtlsMode::Permissive);
        assert_eq!(
            c.source,
            SourceConfig::Kubernetes {
                kubeconfig: None,
                lease_namespace: "mesh".into(),
                lease_name: "trellis-controller".into(),
                identity: "ctl-0".into(),
            }
        );
        let dir = std::env::temp_dir();
        let d = dir.to_str().unwrap();
        let c = config(
            &[
                "--manifests",
                d,
                "--grpc-addr",
                "127.0.0.1:1",
                "--mtls-mode",
                "strict",
            ],
            &[("TRELLIS_TRUST_DOMAIN", "example.org")],
        );
        assert_eq!(c.source, SourceConfig::Manifests(vec![dir.clone()]));
        assert_eq!(c.grpc_addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.settings.trust_domain, "example.org");
        assert_eq!(c.settings.mtls_mode, MtlsMode::Strict);
    }

    #[test]
    fn bad_flags_are_one_line() {
        for args in [
            &["--grpc-addr", "nonsense"][..],
            &["--bogus"],
            &["--mtls-mode", "sometimes"],
            &["--manifests", "/nonexistent/trellis"],
            &["--trust-domain", "Not Valid"],
        ] {
            let err = parse(args, &[]).expect_err("should be refused");
            assert!(
                !err.0.contains('\n') && !err.0.is_empty(),
                "{args:?}: {err}"
            );
        }
        assert!(matches!(parse(&["--help"], &[]), Ok(Invocation::Print(_))));
        assert!(matches!(parse(&["crds"], &[]), Ok(Invocation::PrintCrds)));
    }

    #[test]
    fn an_identity_service_turns_discovery_mtls_on() {
        assert!(config(&["--manifests", "."], &[]).identity.is_none());
        let env = [
            (env::IDENTITY_ADDR, "trellis-identity.trellis.svc:8083"),
            (env::IDENTITY_TOKEN, "/var/run/secrets/trellis/token"),
            (env::TRUST_BUNDLE, "/var/run/trellis/bundle/ca-bundle.crt"),
            (env::POD_NAMESPACE, "trellis"),
            (env::SERVICE_ACCOUNT, "trellis-controller"),
        ];
        let c = config(&["--manifests", ".", "--trust-domain", "example.org"], &env);
        let id = c.identity.expect("an identity");
        assert_eq!(
            id.id.as_str(),
            "spiffe://example.org/ns/trellis/sa/trellis-controller",
            "the controller's trust domain is the identity's"
        );
        assert_eq!(id.server_name, "trellis-identity.trellis.svc");
        let Err(e) = parse(&["--manifests", "."], &env[..1]) else {
            panic!("an identity address without the rest was accepted");
        };
        assert!(e.0.starts_with("identity: "), "{e}");
    }
}
