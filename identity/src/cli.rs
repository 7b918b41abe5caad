//! The command line: serving (the default) and the steps of a trust-anchor
//! rotation. Bad flags are a [`UsageError`]: one line, exit status 64.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trellis_api::contract::{DEFAULT_TRUST_DOMAIN, port};

use crate::auth::{Authenticator, TokenFile, TokenReviewer};
use crate::bundles::NamespaceBundles;
use crate::ca;
use crate::server::{Parts, ServeError, Server, Settings};
use crate::store::{BundleSink, ConfigMapBundle, DirStore, FileBundle, SecretStore, Store};

/// The admin port (metrics, ready, live) when `--admin-listen` is not given.
pub const ADMIN_PORT: u16 = 9983;
/// The DNS name of the service's certificate when no `--server-name` is given.
pub const DEFAULT_SERVER_NAME: &str = "trellis-identity.trellis-system.svc";

/// A bad flag or configuration: printed as one line, exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// trellis-identity: the Trellis CA. Issues short-lived SPIFFE certificates
/// to proxies that prove their service account.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rotate the trust anchor in the CA's store, one step at a time; a
    /// running service picks each step up at its next reload.
    Anchors {
        #[arg(value_enum)]
        step: AnchorStep,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AnchorStep {
    /// Generate a new anchor and add it to the trust bundle (still issuing
    /// from the current one).
    Add,
    /// Issue from the added anchor; the old one stays in the bundle.
    Promote,
    /// Remove every anchor but the current one from the bundle.
    Retire,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Keep the CA in this directory (created 0700, files 0600).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep the CA in this Kubernetes Secret.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub ca_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the gRPC (TLS) listener.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], port::IDENTITY_GRPC)))]
    pub listen: SocketAddr,
    /// Address of the admin listener (/metrics, /ready, /live).
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)))]
    pub admin_listen: SocketAddr,
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// DNS name of the service's own certificate (repeatable).
    #[arg(long = "server-name", value_name = "DNS")]
    pub server_names: Vec<String>,
    /// IP address of the service's own certificate (repeatable; the listen
    /// address is added when it is not a wildcard).
    #[arg(long = "server-ip", value_name = "IP")]
    pub server_ips: Vec<IpAddr>,
    /// Publish the trust bundle (PEM) to this file.
    #[arg(long, value_name = "PATH")]
    pub bundle_file: Option<PathBuf>,
    /// Publish the trust bundle to this ConfigMap (key `ca-bundle.crt`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub bundle_configmap: Option<String>,
    /// Also publish it, under the name of --bundle-configmap, in every
    /// namespace matching this label selector (empty: every namespace), for
    /// injected pods to mount.
    #[arg(long, value_name = "SELECTOR")]
    pub bundle_namespaces: Option<String>,
    /// Authenticate callers with this sandbox token file instead of the
    /// Kubernetes TokenReview API.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,
    /// Lifetime of issued certificates (Gateway API duration, e.g. 24h, 90s).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub certificate_lifetime: String,
    /// Requests a caller address may make at once.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rate_limit_burst: u32,
    /// After the burst, one more request per this interval.
    #[arg(long, value_name = "DURATION", default_value = "6s")]
    pub rate_limit_interval: String,
    /// How often the store is re-read for rotation steps and the bundle
    /// re-published.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub reload_interval: String,
}

/// Parses the command line; `Err` carries clap's error (help and version
/// included, which the caller prints as they are).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(args)
}

fn duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let d =
        trellis_policy::duration::parse(value).map_err(|e| UsageError(format!("--{flag}: {e}")))?;
    if d.is_zero() {
        return Err(UsageError(format!("--{flag}: must be more than zero")));
    }
    Ok(d)
}

fn namespaced(flag: &str, value: &str) -> Result<(String, String), UsageError> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(UsageError(format!(
            "--{flag} {value:?}: expected NAMESPACE/NAME"
        ))),
    }
}

impl ServeArgs {
    /// Checks the flags that clap cannot.
    pub fn settings(&self) -> Result<Settings, UsageError> {
        let mut names = self.server_names.clone();
        if names.is_empty() {
            names.push(DEFAULT_SERVER_NAME.to_string());
        }
        for name in &names {
            let ok = rustls_pki_types::DnsName::try_from(name.as_str()).is_ok();
            if !ok || name.parse::<IpAddr>().is_ok() {
                return Err(UsageError(format!(
                    "--server-name {name:?}: not a DNS name (use --server-ip for addresses)"
                )));
            }
        }
        let td = &self.trust_domain;
        trellis_policy::SpiffeId::parse(&format!("spiffe://{td}"))
            .map_err(|e| UsageError(format!("--trust-domain {td:?}: {}", e.reason)))?;
        if self.rate_limit_burst == 0 {
            return Err(UsageError("--rate-limit-burst: must be at least 1".into()));
        }
        self.store.check()?;
        if let Some(cm) = &self.bundle_configmap {
            namespaced("bundle-configmap", cm)?;
        }
        if self.bundle_namespaces.is_some() && self.bundle_configmap.is_none() {
            return Err(UsageError(
                "--bundle-namespaces needs --bundle-configmap (it names the ConfigMap)".into(),
            ));
        }
        Ok(Settings {
            listen: self.listen,
            admin_listen: self.admin_listen,
            trust_domain: td.clone(),
            server_names: names,
            server_ips: self.server_ips.clone(),
            lifetime: duration("certificate-lifetime", &self.certificate_lifetime)?,
            rate_burst: self.rate_limit_burst,
            rate_refill: duration("rate-limit-interval", &self.rate_limit_interval)?,
            reload_interval: duration("reload-interval", &self.reload_interval)?,
        })
    }

    /// Whether serving needs the Kubernetes API.
    pub fn needs_kube(&self) -> bool {
        self.store.ca_secret.is_some()
            || self.bundle_configmap.is_some()
            || self.bundle_namespaces.is_some()
            || self.tokens_file.is_none()
    }

    /// The store, bundle sinks and authenticator the flags name.
    pub fn parts(&self, kube: Option<kube::Client>) -> Result<Parts, UsageError> {
        let store = self.store.open(kube.clone())?;
        let mut sinks: Vec<Box<dyn BundleSink>> = Vec::new();
        if let Some(path) = &self.bundle_file {
            sinks.push(Box::new(FileBundle::new(path.clone())));
        }
        if let Some(cm) = &self.bundle_configmap {
            let (ns, name) = namespaced("bundle-configmap", cm)?;
            let client = kube.clone().ok_or_else(no_kube)?;
            sinks.push(Box::new(ConfigMapBundle::new(client.clone(), &ns, &name)));
            if let Some(selector) = &self.bundle_namespaces {
                sinks.push(Box::new(NamespaceBundles::new(client, &name, selector)));
            }
        }
        let auth: Arc<dyn Authenticator> = match &self.tokens_file {
            Some(path) => Arc::new(TokenFile::new(path.clone())),
            None => Arc::new(TokenReviewer::new(kube.ok_or_else(no_kube)?)),
        };
        Ok(Parts { store, sinks, auth })
    }
}

fn no_kube() -> UsageError {
    UsageError("the Kubernetes API is needed but no client was configured".into())
}

impl StoreArgs {
    fn check(&self) -> Result<(), UsageError> {
        match (&self.state_dir, &self.ca_secret) {
            (Some(_), Some(_)) => Err(UsageError(
                "--state-dir and --ca-secret: give one, not both".into(),
            )),
            (None, None) => Err(UsageError(
                "give --state-dir (sandbox) or --ca-secret (Kubernetes) for the CA".into(),
            )),
            (None, Some(s)) => namespaced("ca-secret", s).map(|_| ()),
            (Some(_), None) => Ok(()),
        }
    }

    pub fn open(&self, kube: Option<kube::Client>) -> Result<Box<dyn Store>, UsageError> {
        self.check()?;
        match (&self.state_dir, &self.ca_secret) {
            (Some(dir), _) => Ok(Box::new(DirStore::new(dir.clone()))),
            (None, Some(secret)) => {
                let (ns, name) = namespaced("ca-secret", secret)?;
                Ok(Box::new(SecretStore::new(
                    kube.ok_or_else(no_kube)?,
                    &ns,
                    &name,
                )))
            }
            (None, None) => Err(no_kube()),
        }
    }
}

/// Runs one rotation step against the store.
pub async fn anchor_step(
    store: &dyn Store,
    step: AnchorStep,
    trust_domain: &str,
) -> anyhow::Result<()> {
    let current = store
        .load()
        .await?
        .with_context(|| format!("{} holds no CA yet", store.describe()))?;
    let now = SystemTime::now();
    let next = match step {
        AnchorStep::Add => ca::add_anchor(&current, trust_domain, now),
        AnchorStep::Promote => ca::promote(&current, trust_domain, now),
        AnchorStep::Retire => ca::retire(&current),
    }
    .with_context(|| format!("{step:?} in {}", store.describe()))?;
    ca::Authority::from_material(&next, now).context("the rotated CA does not validate")?;
    store.replace(&current, &next).await?;
    Ok(())
}

/// What `main` runs once flags are parsed and tracing is up.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Anchors {
            step,
            store,
            trust_domain,
        }) => {
            store.check()?;
            let kube = match store.ca_secret {
                Some(_) => Some(kube_client().await?),
                None => None,
            };
            let store = store.open(kube)?;
            anchor_step(store.as_ref(), step, &trust_domain).await?;
            let name = match step {
                AnchorStep::Add => "add",
                AnchorStep::Promote => "promote",
                AnchorStep::Retire => "retire",
            };
            println!("anchors {name}: done in {}", store.describe());
            Ok(())
        }
        None => {
            let settings = cli.serve.settings()?;
            let kube = match cli.serve.needs_kube() {
                true => Some(kube_client().await?),
                false => None,
            };
            let parts = cli.serve.parts(kube)?;
            let server = Server::start(settings, parts).await.map_err(|e| match e {
                ServeError::Ca { .. } => anyhow::Error::new(UsageError(e.to_string())),
                e => anyhow::Error::new(e),
            })?;
            server.run_until(shutdown_signal()).await;
            Ok(())
        }
    }
}

async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How `main` ends on a clap error: help and version print as they are
/// (status 0); anything else becomes one line and status 64.
pub fn clap_exit(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "trellis-identity: {}",
                line.strip_prefix("error: ").unwrap_or(line)
            );
            std::process::ExitCode::from(trellis_api::contract::EXIT_USAGE as u8)
        }
    }
}
