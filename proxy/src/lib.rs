//! `trellis-proxy` is the Trellis data plane: the sidecar that transparently
//! captures a pod's traffic (this crate's [`Sidecar`]), the capture-rule
//! installer for pods without the CNI plugin ([`init`]), and the ingress
//! gateway ([`gateway::Gateway`]), whose listeners send requests through the
//! same outbound stages. It depends on `trellis-policy` for every routing
//! decision, on `trellis-api` for the discovery contract, and never on
//! Kubernetes crates.
//!
//! ```text
//!  app ─► iptables ─► outbound :15101 ─► orig dst ─► discovery (lazy, cached)
//!                     ─► detect ─► HTTP: route ─► filters ─► split ─► retries/timeouts ─► balance ─► endpoint
//!                               └► opaque: backend ─► balance ─► splice
//!                     endpoint: unmeshed ─► as the app sent it
//!                               meshed ───► mesh (preamble, one HTTP/2 per peer) ─┐
//!                                                                                 ▼
//!  peer inbound :15106 ─► accept (mTLS) ─► preamble ─► restore protocol ─► admit ─► app at pod IP
//! ```
//!
//! Modules, in the order a connection meets them: [`transport`] (sockets,
//! original destination), [`detect`], [`discovery`], [`outbound`] /
//! [`inbound`] (with [`inbound::admit`]: mTLS mode and authorization),
//! [`balance`], [`upstream`] and [`client`] (pools), [`mesh`] (the
//! proxy-to-proxy format and the connection seam) and [`tls`] (mesh mTLS
//! with the workload certificate of `trellis-identity-client`), [`admin`]
//! and [`metrics`]. The HTTP traffic policy around the endpoint stage:
//! [`retry`] (policies, backoff, budgets), [`replay`] (request bodies sent
//! more than once), [`mirror`], [`accrual`] (failure accrual) and [`grpc`]
//! (deadlines and status answers).
//!
//! With identity configured ([`config::Config::identity`]) the sidecar
//! obtains its certificate at start, `/ready` waits for it, and every mesh
//! connection is mTLS; without it mesh connections are plaintext.

pub mod accrual;
pub mod admin;
pub mod balance;
pub mod body;
pub mod client;
pub mod config;
pub mod detect;
pub mod discovery;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod inbound;
pub mod init;
pub mod mesh;
pub mod metrics;
pub mod mirror;
pub mod outbound;
pub mod replay;
pub mod retry;
pub mod tls;
pub mod transport;
pub mod upstream;

use crate::{
    config::{Config, SourceConfig},
    discovery::{Controller, Discovery, Ready, Source},
    inbound::AdmitMetrics,
    metrics::Metrics,
    upstream::Upstreams,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use trellis_identity_client::{Identity, TlsMetrics};

/// Stops the listeners and tracks the connections still being served.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

impl Drain {
    /// Stops the listeners and waits up to `grace` for the connections in
    /// flight; returns whether they all finished in time (those left are
    /// closed when the runtime stops).
    pub async fn finish(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                open = self.tracker.len(),
                "grace period over; closing the remaining connections"
            );
        }
        finished
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bind(#[from] transport::Error),
    #[error(transparent)]
    PolicyFile(#[from] discovery::file::Error),
    #[error(transparent)]
    Controller(#[from] discovery::InvalidAddress),
    #[error(transparent)]
    Config(#[from] config::Error),
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The actual addresses of `--outbound-fixed` / `--inbound-fixed`
    /// listeners, in order.
    pub outbound_fixed: Vec<SocketAddr>,
    pub inbound_fixed: Vec<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub admit: AdmitMetrics,
    pub discovery: Arc<Discovery>,
    pub ready: Arc<Ready>,
    /// The workload identity, when mesh connections are mTLS.
    pub identity: Option<Identity>,
    drain: Drain,
    admin_stop: CancellationToken,
    grace: Duration,
}

impl Sidecar {
    /// Binds every listener and starts serving: with the identity service
    /// of `config.identity` (mTLS), else with plaintext mesh connections.
    pub async fn start(config: &Config) -> Result<Self, Error> {
        match &config.identity {
            Some(id) => {
                tracing::info!(identity = %id.id, service = %id.addr, "obtaining the workload certificate");
                let identity = Identity::start(id.clone(), TlsMetrics::default());
                Self::start_with_identity(config, identity).await
            }
            None => Self::start_with(config, Arc::new(mesh::Plain), Arc::new(mesh::Plain)).await,
        }
    }

    /// Starts with mTLS mesh connections under `identity` (its metrics are
    /// served with the proxy's); `/ready` holds while it has no certificate.
    pub async fn start_with_identity(config: &Config, identity: Identity) -> Result<Self, Error> {
        let tls = Arc::new(tls::MeshTls::new(identity.clone()));
        Self::build(config, tls.clone(), tls, Some(identity)).await
    }

    /// Starts with the given mesh connection establishment and no identity.
    pub async fn start_with(
        config: &Config,
        connector: Arc<dyn mesh::Connect>,
        acceptor: Arc<dyn mesh::Accept>,
    ) -> Result<Self, Error> {
        Self::build(config, connector, acceptor, None).await
    }

    async fn build(
        config: &Config,
        connector: Arc<dyn mesh::Connect>,
        acceptor: Arc<dyn mesh::Accept>,
        identity: Option<Identity>,
    ) -> Result<Self, Error> {
        let admit = AdmitMetrics::default();
        let metrics = Arc::new(Metrics::with_extra(|r| {
            admit.register(r);
            if let Some(id) = &identity {
                id.metrics().register(r);
            }
        }));
        let ready = Ready::new();
        if let Some(id) = &identity {
            follow_certificate(id, ready.clone());
        }
        let source = match &config.source {
            SourceConfig::Controller(addr) => Source::Controller(Controller::new(
                addr,
                controller_tls(config.controller_identity.as_ref(), identity.as_ref())?,
            )?),
            SourceConfig::File(path) => Source::File(discovery::file::watch_file(path.clone())?),
            SourceConfig::None => Source::None,
        };
        let upstreams = Upstreams::new(config.mesh_port, connector);
        let discovery = Discovery::new(
            source,
            discovery::Config {
                workload: config.workload.clone(),
                idle_timeout: config.idle_timeout,
            },
            upstreams.clone(),
            metrics.clone(),
            &ready,
        );
        let drain = Drain::default();
        let outbound = Arc::new(outbound::Outbound {
            discovery: discovery.clone(),
            upstreams: upstreams.clone(),
            metrics: metrics.clone(),
            detect_timeout: config.detect_timeout,
        });
        let inbound = Arc::new(inbound::Inbound {
            discovery: discovery.clone(),
            upstreams,
            metrics: metrics.clone(),
            admit: admit.clone(),
            acceptor,
            detect_timeout: config.detect_timeout,
        });

        let out_l = transport::bind(config.outbound_addr)?;
        let in_l = transport::bind(config.inbound_addr)?;
        let admin_l = transport::bind(config.admin_addr)?;
        let addr = |l: &tokio::net::TcpListener| l.local_addr().map(transport::unmap);
        let local = |l: &tokio::net::TcpListener, a: SocketAddr| addr(l).unwrap_or(a);
        let outbound_addr = local(&out_l, config.outbound_addr);
        let inbound_addr = local(&in_l, config.inbound_addr);
        let admin_addr = local(&admin_l, config.admin_addr);

        let mut outbound_fixed = Vec::new();
        for (listen, target) in &config.outbound_fixed {
            let l = transport::bind(*listen)?;
            outbound_fixed.push(local(&l, *listen));
            tokio::spawn(outbound.clone().serve(l, Some(*target), drain.clone()));
        }
        let mut inbound_fixed = Vec::new();
        for (listen, app) in &config.inbound_fixed {
            let l = transport::bind(*listen)?;
            inbound_fixed.push(local(&l, *listen));
            tokio::spawn(inbound.clone().serve(l, Some(*app), drain.clone()));
        }
        tokio::spawn(outbound.serve(out_l, None, drain.clone()));
        tokio::spawn(inbound.serve(in_l, None, drain.clone()));

        let admin_stop = CancellationToken::new();
        let admin = Arc::new(admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
            config: discovery.clone(),
            shutdown: drain.token.clone(),
        });
        tokio::spawn(admin.serve(admin_l, admin_stop.clone()));
        tracing::info!(%outbound_addr, %inbound_addr, %admin_addr, "sidecar started");
        Ok(Self {
            outbound_addr,
            inbound_addr,
            admin_addr,
            outbound_fixed,
            inbound_fixed,
            metrics,
            admit,
            discovery,
            ready,
            identity,
            drain,
            admin_stop,
            grace: config.shutdown_grace,
        })
    }

    /// Resolves when a drain was requested (`POST /shutdown`).
    pub async fn shutdown_requested(&self) {
        self.drain.token.cancelled().await;
    }

    /// Stops accepting, lets connections in flight finish within the grace
    /// period, then stops the admin listener. Returns whether everything
    /// finished in time.
    pub async fn drain(self) -> bool {
        let finished = self.drain.finish(self.grace).await;
        self.admin_stop.cancel();
        finished
    }
}

/// mTLS to the controller when its identity is named; naming it without
/// an identity of our own is a configuration error.
pub(crate) fn controller_tls(
    controller: Option<&trellis_policy::SpiffeId>,
    identity: Option<&Identity>,
) -> Result<Option<trellis_identity_client::serve::Connector>, config::Error> {
    match (controller, identity) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(config::Error::ControllerIdentityWithoutIdentity),
        (Some(c), Some(i)) => Ok(Some(trellis_identity_client::serve::Connector::new(
            i.clone(),
            c.clone(),
        ))),
    }
}

/// Keeps `/ready` false while the identity holds no certificate (before the
/// first one, and after one expired unrenewed).
pub(crate) fn follow_certificate(identity: &Identity, ready: Arc<Ready>) {
    let mut certs = identity.watch();
    ready.set_identity(certs.borrow().is_some());
    tokio::spawn(async move {
        loop {
            let held = certs.borrow_and_update().clone();
            ready.set_identity(held.is_some());
            match held {
                Some(c) => {
                    tracing::info!(identity = %c.id(), not_after = ?c.not_after(), "workload certificate held")
                }
                None => tracing::warn!("no workload certificate: not ready"),
            }
            if certs.changed().await.is_err() {
                return;
            }
        }
    });
}
