//! Wiring: binds the gRPC and admin listeners, starts the source, and runs
//! until shutdown. Tests and the sandbox start it in-process with
//! [`start`]; the binary calls it from `main`.

use crate::admin::Admin;
use crate::config::{Config, SourceConfig};
use crate::grpc::Discovery;
use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;
use crate::source::{self, Source};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use trellis_identity_client::{Identity, TlsMetrics};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("kubernetes configuration: {0}")]
    KubeConfig(String),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    #[error("controller task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running controller.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub index: SharedIndex,
    pub ready: watch::Receiver<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Runs until a part fails (or [`Self::shutdown`] from elsewhere).
    pub async fn wait(mut self) -> Result<(), RunError> {
        (&mut self.task).await?
    }

    /// Stops serving and waits for the servers to close.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.shutdown.take() {
            // The task may already have ended; then there is nothing to stop.
            let _ = tx.send(());
        }
        (&mut self.task).await?
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

async fn source(config: &SourceConfig) -> Result<Box<dyn Source>, RunError> {
    Ok(match config {
        SourceConfig::Manifests(dirs) => Box::new(source::dir::Directory::new(dirs.clone())),
        SourceConfig::Kubernetes {
            kubeconfig,
            lease_namespace,
            lease_name,
            identity,
        } => {
            let kc = match kubeconfig {
                Some(path) => {
                    let kc = kube::config::Kubeconfig::read_from(path)
                        .map_err(|e| RunError::KubeConfig(format!("{}: {e}", path.display())))?;
                    kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .map_err(|e| RunError::KubeConfig(e.to_string()))?
                }
                None => kube::Config::infer()
                    .await
                    .map_err(|e| RunError::KubeConfig(e.to_string()))?,
            };
            let client =
                kube::Client::try_from(kc).map_err(|e| RunError::KubeConfig(e.to_string()))?;
            Box::new(source::kube::Kubernetes::new(
                client,
                source::kube::LeaseConfig {
                    namespace: lease_namespace.clone(),
                    name: lease_name.clone(),
                    identity: identity.clone(),
                },
            ))
        }
    })
}

type GrpcTask = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// `ready` (every kind listed) while `identity` holds a certificate: a
/// controller serving mTLS cannot serve anyone before it has one.
fn ready_with_certificate(
    mut listed: watch::Receiver<bool>,
    identity: &Identity,
) -> watch::Receiver<bool> {
    let mut certs = identity.watch();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        // A fixed certificate's watch has no sender: it never changes.
        let mut renewing = true;
        loop {
            let both = *listed.borrow_and_update() && certs.borrow_and_update().is_some();
            tx.send_if_modified(|r| std::mem::replace(r, both) != both);
            tokio::select! {
                r = listed.changed() => if r.is_err() { return },
                r = certs.changed(), if renewing => renewing = r.is_ok(),
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// Starts a controller with its own source; see [`start_with`].
pub async fn start(config: Config) -> Result<Running, RunError> {
    let src = source(&config.source).await?;
    start_with(config, src).await
}

/// Binds the listeners and starts serving with `src` feeding a new index;
/// with `config.identity`, over mTLS under a certificate from the identity
/// service.
pub async fn start_with(config: Config, src: Box<dyn Source>) -> Result<Running, RunError> {
    let identity = config.identity.as_ref().map(|id| {
        tracing::info!(identity = %id.id, service = %id.addr, "obtaining the controller's certificate");
        Identity::start(id.clone(), TlsMetrics::default())
    });
    start_with_identity(config, src, identity).await
}

/// [`start_with`], serving mTLS under `identity` when given (tests pass a
/// fixed one).
pub async fn start_with_identity(
    config: Config,
    src: Box<dyn Source>,
    identity: Option<Identity>,
) -> Result<Running, RunError> {
    let grpc = bind("gRPC", config.grpc_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let grpc_addr = grpc.local_addr().map_err(|source| RunError::Bind {
        what: "gRPC",
        addr: config.grpc_addr,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| RunError::Bind {
        what: "admin",
        addr: config.admin_addr,
        source,
    })?;
    let index = Index::shared(config.settings.clone());
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(false);

    let src_task = src.run(index.clone(), ready_tx);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // Either a stop was sent or the sender is gone: both mean stop.
        let _ = rx.wait_for(|s| *s).await;
    };
    let discovery = Discovery::new(index.clone(), metrics.clone());
    let mtls = identity.is_some();
    let (grpc_task, ready): (GrpcTask, _) = match identity {
        None => (
            Box::pin(discovery.serve(grpc, stopped(stop_rx.clone()))),
            ready,
        ),
        Some(identity) => {
            let ready = ready_with_certificate(ready, &identity);
            let stop = stopped(stop_rx.clone());
            (
                Box::pin(async move { discovery.serve_mtls(grpc, &identity, stop).await }),
                ready,
            )
        }
    };
    let admin_task =
        Admin::new(index.clone(), metrics, ready.clone()).serve(admin, stopped(stop_rx));
    tracing::info!(%grpc_addr, %admin_addr, mtls, "serving");

    let task = tokio::spawn(async move {
        let result = tokio::select! {
            r = src_task => r.map_err(RunError::from),
            r = grpc_task => r.map_err(RunError::from),
            r = admin_task => r.map_err(RunError::Admin),
            _ = shutdown_rx => Ok(()),
        };
        // Whatever ended first, the servers stop too.
        let _ = stop_tx.send(true);
        result
    });
    Ok(Running {
        grpc_addr,
        admin_addr,
        index,
        ready,
        shutdown: Some(shutdown_tx),
        task,
    })
}
