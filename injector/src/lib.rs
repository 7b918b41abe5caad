//! `trellis-injector`: the mutating admission webhook that adds the Trellis
//! sidecar to pods of namespaces labelled `trellis.io/inject: enabled` (the
//! chart's `MutatingWebhookConfiguration` selects them). Used by the chart;
//! the pure [`patch`] is also what tests and `trellisctl` reason about.
//!
//! ```text
//! API server ──HTTPS POST /inject (AdmissionReview)──► server ──► review ──► patch (pure)
//!                                                        ▲
//! Secret trellis-injector-tls ◄──► sync ──► tls (rcgen) ─┘  (serving certificate)
//!                                   └──► MutatingWebhookConfiguration caBundle
//! ```

pub mod config;
pub mod patch;
pub mod review;
pub mod server;
pub mod sync;
pub mod tls;

pub use config::InjectConfig;
pub use patch::{Plan, Skip, patch, plan};

use anyhow::{Context, Result};
use clap::Parser;
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use trellis_api::contract::{env, port};

/// trellis-injector: the admission webhook that adds the Trellis sidecar to pods.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Address of the HTTPS webhook.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], port::INJECTOR_WEBHOOK)))]
    pub listen: SocketAddr,
    /// The injection configuration (YAML, rendered by the chart).
    #[arg(long, default_value = "/etc/trellis/injector/injector.yaml")]
    pub config: PathBuf,
    /// The trust anchors (PEM) given to every proxy.
    #[arg(long, default_value = "/etc/trellis/trust/ca.crt")]
    pub trust_bundle: PathBuf,
    /// The namespace the injector runs in.
    #[arg(long, env = env::POD_NAMESPACE)]
    pub namespace: String,
    /// The Service the API server calls (its DNS names go on the certificate).
    #[arg(long, default_value = "trellis-injector")]
    pub service: String,
    /// The Secret the replicas share their serving certificate through.
    #[arg(long, default_value = "trellis-injector-tls")]
    pub tls_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long, default_value = "trellis-injector")]
    pub webhook_config: String,
    /// The cluster's DNS domain.
    #[arg(long, env = env::CLUSTER_DOMAIN, default_value = trellis_api::contract::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Seconds between checks of the certificate and the caBundle.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
}

/// Bad configuration, reported with exit status 64.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageError(#[from] config::ConfigError);

/// Loads the configuration, takes or creates the shared certificate, keeps
/// it and the caBundle current, and serves until the process ends.
pub async fn run(args: Args) -> Result<()> {
    let cfg = InjectConfig::load(&args.config, Some(&args.trust_bundle)).map_err(UsageError)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let target = sync::Target {
        namespace: args.namespace.clone(),
        secret: args.tls_secret.clone(),
        webhook_config: args.webhook_config.clone(),
        dns_names: tls::dns_names(&args.service, &args.namespace, &args.cluster_domain),
    };
    let now = time::OffsetDateTime::now_utc;
    let material = sync::ensure_material(&client, &target, now()).await?;
    let (tx, rx) = tokio::sync::watch::channel(tls::server_config(&material)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving the webhook");
    let (cfg_tx, cfg_rx) = tokio::sync::watch::channel(Arc::new(cfg));
    let server = tokio::spawn(server::serve(listener, rx, server::router(cfg_rx)));

    let mut current = material;
    let mut tick = tokio::time::interval(Duration::from_secs(args.resync_seconds.max(1)));
    loop {
        tick.tick().await;
        if server.is_finished() {
            anyhow::bail!("the webhook server stopped");
        }
        match sync::ensure_material(&client, &target, now()).await {
            Ok(m) if m != current => {
                tx.send_replace(tls::server_config(&m)?);
                current = m;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("keeping the current certificate: {e}"),
        }
        // The trust bundle ConfigMap changes during an anchor rotation.
        match InjectConfig::load(&args.config, Some(&args.trust_bundle)) {
            Ok(c) if c != **cfg_tx.borrow() => {
                tracing::info!("injection configuration or trust bundle changed");
                cfg_tx.send_replace(Arc::new(c));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("keeping the current configuration: {e}"),
        }
        if let Err(e) = sync::sync_ca_bundle(&client, &target, &current.ca_pem).await {
            tracing::warn!("caBundle not updated: {e}");
        }
    }
}
