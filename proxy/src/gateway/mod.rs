//! `trellis-proxy gateway`: the north-south mode of the proxy. It serves one
//! Gateway: it watches the Gateway's resolved configuration
//! (`GatewayConfig.Watch`, a [`GatewayPolicy`]), binds one socket per
//! listener port, and sends each request or connection through the same
//! stages as a sidecar's outbound traffic, with the listener's routes.
//!
//! ```text
//!  controller ══GatewayConfig.Watch══► GatewayPolicy ──► plan (listeners by port)
//!                                                          │ Ports::apply: bind new ports,
//!                                                          │ stop removed ones, swap the rest
//!                                                          ▼
//!  client ──► port (plan::PortKind) ──► listener by SNI / Host ──► route ──► filters ──► split
//!          ──► retries/timeouts ──► balance ──► endpoint: meshed ─► mTLS (own SPIFFE id)
//!                                                      unmeshed ─► plaintext
//! ```
//!
//! The gateway is a meshed workload: with identity configured it obtains a
//! certificate for its service account and speaks mTLS to meshed
//! endpoints, exactly as a sidecar does ([`crate::tls::MeshTls`]). Modules:
//! [`plan`] (pure: ports and listener choice), [`port`] (sockets and
//! connections), [`http`] (requests, 404/421), [`tls`] (ClientHello, SNI,
//! certificates), [`config`].

pub mod config;
pub mod http;
pub mod plan;
pub mod port;
pub mod tls;

pub use self::config::{GatewayArgs, GatewayConfig};
pub use self::http::backend_version;

use self::port::{ListenerState, Port, PortState, Shared};
use crate::{
    Drain, admin,
    discovery::{Backoff, Controller, InvalidAddress, Ready},
    follow_certificate, mesh,
    metrics::{Metrics, Name},
    transport,
    upstream::Upstreams,
};
use arc_swap::ArcSwap;
use futures::StreamExt;
use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};
use tokio::{sync::watch, task::AbortHandle};
use tokio_util::sync::CancellationToken;
use trellis_api::{
    GatewayTarget, proto::discovery::gateway_config_client::GatewayConfigClient,
    watch::Error as WatchError,
};
use trellis_identity_client::{Identity, TlsMetrics};
use trellis_policy::{GatewayPolicy, ResourceRef};

/// How often ports that could not be bound are tried again.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bind(#[from] transport::Error),
    #[error(transparent)]
    Controller(#[from] InvalidAddress),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
}

/// A running gateway proxy.
#[derive(Debug)]
pub struct Gateway {
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Ready>,
    /// The workload identity, when mesh connections are mTLS.
    pub identity: Option<Identity>,
    ports: Arc<Ports>,
    drain: Drain,
    admin_stop: CancellationToken,
    grace: Duration,
    follow: AbortHandle,
}

impl Gateway {
    /// Starts serving: with the identity service of `config.identity`
    /// (mTLS to meshed endpoints), else with plaintext mesh connections.
    pub async fn start(config: &GatewayConfig) -> Result<Self, Error> {
        match &config.identity {
            Some(id) => {
                tracing::info!(identity = %id.id, service = %id.addr, "obtaining the workload certificate");
                let identity = Identity::start(id.clone(), TlsMetrics::default());
                Self::start_with_identity(config, identity).await
            }
            None => Self::build(config, Arc::new(mesh::Plain), None).await,
        }
    }

    /// Starts with mTLS to meshed endpoints under `identity`; `/ready`
    /// holds while it has no certificate.
    pub async fn start_with_identity(
        config: &GatewayConfig,
        identity: Identity,
    ) -> Result<Self, Error> {
        let tls = Arc::new(crate::tls::MeshTls::new(identity.clone()));
        Self::build(config, tls, Some(identity)).await
    }

    async fn build(
        config: &GatewayConfig,
        connector: Arc<dyn mesh::Connect>,
        identity: Option<Identity>,
    ) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::with_extra(|r| {
            if let Some(id) = &identity {
                id.metrics().register(r);
            }
        }));
        let ready = Ready::new();
        if let Some(id) = &identity {
            follow_certificate(id, ready.clone());
        }
        let tls = crate::controller_tls(config.controller_identity.as_ref(), identity.as_ref())?;
        let controller = Controller::new(&config.controller, tls)?;
        let drain = Drain::default();
        let shared = Arc::new(Shared {
            gateway: config.gateway.clone(),
            metrics: metrics.clone(),
            upstreams: Upstreams::new(config.mesh_port, connector),
            label: Name::from(config.gateway.to_string()),
        });
        let ports = Arc::new(Ports {
            shared,
            listen_ip: config.listen_ip,
            drain: drain.clone(),
            inner: Mutex::default(),
            applied: watch::channel(0).0,
        });
        let admin_l = transport::bind(config.admin_addr)?;
        let admin_addr = admin_l
            .local_addr()
            .map(transport::unmap)
            .unwrap_or(config.admin_addr);
        let follow = tokio::spawn(follow(
            controller,
            config.gateway.clone(),
            ports.clone(),
            ready.clone(),
            metrics.clone(),
        ))
        .abort_handle();
        let admin_stop = CancellationToken::new();
        let admin = Arc::new(admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
            config: ports.clone(),
            shutdown: drain.token.clone(),
        });
        tokio::spawn(admin.serve(admin_l, admin_stop.clone()));
        tracing::info!(gateway = %config.gateway, %admin_addr, "gateway started");
        Ok(Self {
            admin_addr,
            metrics,
            ready,
            identity,
            ports,
            drain,
            admin_stop,
            grace: config.shutdown_grace,
            follow,
        })
    }

    /// The address each listener port is bound to.
    pub fn ports(&self) -> BTreeMap<u16, SocketAddr> {
        self.ports
            .inner
            .lock()
            .ports
            .iter()
            .map(|(p, port)| (*p, port.addr))
            .collect()
    }

    /// How many configurations were applied so far, and each new count.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.ports.applied.subscribe()
    }

    /// Resolves when a drain was requested (`POST /shutdown`).
    pub async fn shutdown_requested(&self) {
        self.drain.token.cancelled().await;
    }

    /// Stops accepting on every port, lets connections in flight finish
    /// within the grace period, then stops the admin listener. Returns
    /// whether everything finished in time.
    pub async fn drain(self) -> bool {
        self.follow.abort();
        let finished = self.drain.finish(self.grace).await;
        self.admin_stop.cancel();
        finished
    }
}

/// The gateway's sockets and what each serves.
#[derive(Debug)]
pub struct Ports {
    shared: Arc<Shared>,
    listen_ip: IpAddr,
    drain: Drain,
    inner: Mutex<Inner>,
    /// Counts applied configurations.
    applied: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    policy: Option<Arc<GatewayPolicy>>,
    ports: BTreeMap<u16, Arc<Port>>,
    /// Ports of the configuration that could not be bound, and why.
    unbound: BTreeMap<u16, String>,
}

impl Ports {
    /// Brings the sockets in line with `policy`: ports no longer used stop
    /// accepting (their connections go on), new ports are bound, the
    /// listeners of the others are swapped in place.
    pub fn apply(&self, policy: GatewayPolicy) {
        let plans = plan::plan(&policy);
        let mut inner = self.inner.lock();
        let prev: HashMap<String, Arc<ListenerState>> = inner
            .ports
            .values()
            .flat_map(|p| p.state.load().listeners.clone())
            .map(|l| (l.name.clone(), l))
            .collect();
        inner.ports.retain(|port, p| {
            let keep = plans.contains_key(port);
            if !keep {
                tracing::info!(port, "no listener left on this port; closing its socket");
                p.stop.cancel();
            }
            keep
        });
        inner.unbound.clear();
        for (&number, plan) in &plans {
            let state = Arc::new(PortState::build(&self.shared, plan, &prev));
            if let Some(p) = inner.ports.get(&number) {
                p.state.store(state);
                continue;
            }
            let addr = SocketAddr::new(self.listen_ip, number);
            match transport::bind(addr) {
                Ok(l) => {
                    let addr = l.local_addr().map(transport::unmap).unwrap_or(addr);
                    tracing::info!(%addr, kind = plan.kind.as_str(), "listening");
                    let port = Arc::new(Port {
                        port: number,
                        addr,
                        state: ArcSwap::new(state),
                        stop: self.drain.token.child_token(),
                    });
                    tokio::spawn(
                        port.clone()
                            .serve(l, self.shared.clone(), self.drain.clone()),
                    );
                    inner.ports.insert(number, port);
                }
                Err(e) => {
                    tracing::warn!("{e}; trying again in {BIND_RETRY:?}");
                    inner.unbound.insert(number, e.to_string());
                }
            }
        }
        inner.policy = Some(Arc::new(policy));
        drop(inner);
        self.applied.send_modify(|n| *n += 1);
    }

    /// Applies the current configuration again when a port of it is not
    /// bound (another process held it).
    fn retry_unbound(&self) {
        let policy = {
            let inner = self.inner.lock();
            if inner.unbound.is_empty() {
                return;
            }
            inner.policy.clone()
        };
        if let Some(p) = policy {
            self.apply((*p).clone());
        }
    }
}

impl admin::Snapshot for Ports {
    fn snapshot(&self) -> serde_json::Value {
        let inner = self.inner.lock();
        let ports: Vec<serde_json::Value> = inner
            .ports
            .values()
            .map(|p| {
                let state = p.state.load();
                let listeners: Vec<serde_json::Value> = state
                    .listeners
                    .iter()
                    .map(|l| {
                        let resolved = l.watch.load_full();
                        serde_json::json!({
                            "name": l.name,
                            "hostname": l.hostname.as_ref().map(ToString::to_string),
                            "protocol": l.protocol,
                            "passthrough": l.passthrough,
                            "terminates": l.tls.is_some(),
                            "certificateErrors": l.tls_errors,
                            "endpoints": resolved.endpoints_json(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "port": p.port,
                    "addr": p.addr.to_string(),
                    "kind": state.kind.as_str(),
                    "listeners": listeners,
                    "conflicts": state.conflicts,
                })
            })
            .collect();
        // Private keys never leave the proxy: certificates are counted.
        let policy = inner.policy.as_deref().map(|p| {
            let mut p = p.clone();
            let counts: Vec<usize> = p
                .listeners
                .iter_mut()
                .map(|l| {
                    l.tls
                        .as_mut()
                        .map_or(0, |t| std::mem::take(&mut t.certificates).len())
                })
                .collect();
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            if let Some(ls) = v["listeners"].as_array_mut() {
                for (l, n) in ls.iter_mut().zip(counts) {
                    l["certificates"] = n.into();
                }
            }
            v
        });
        serde_json::json!({
            "gateway": self.shared.gateway.to_string(),
            "policy": policy,
            "ports": ports,
            "unbound": inner.unbound,
        })
    }
}

/// Follows the Gateway's configuration from the controller, reconnecting
/// with backoff; the last good configuration keeps serving meanwhile.
async fn follow(
    controller: Controller,
    gateway: ResourceRef,
    ports: Arc<Ports>,
    ready: Arc<Ready>,
    metrics: Arc<Metrics>,
) {
    let request = trellis_api::proto::discovery::GatewayTarget::from(&GatewayTarget {
        gateway: gateway.clone(),
    });
    let mut backoff = Backoff::default();
    let mut retry = tokio::time::interval(BIND_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut client = GatewayConfigClient::new(controller.channel());
        match client.watch(tonic::Request::new(request.clone())).await {
            Ok(rsp) => {
                metrics.controller_connected(true);
                let mut updates = trellis_api::watch::updates::<_, GatewayPolicy>(rsp.into_inner());
                loop {
                    tokio::select! {
                        next = updates.next() => match next {
                            Some(Ok(policy)) => {
                                backoff.reset();
                                tracing::info!(gateway = %gateway, listeners = policy.listeners.len(), "configuration applied");
                                ports.apply(policy);
                                metrics.update_applied();
                                ready.set_policy();
                            }
                            Some(Err(WatchError::Invalid(e))) => {
                                tracing::warn!(gateway = %gateway, error = %e, "refused a configuration update; keeping the previous one");
                                metrics.update_invalid();
                            }
                            Some(Err(WatchError::Status(s))) => {
                                tracing::warn!(gateway = %gateway, status = %s, "configuration stream broke");
                                break;
                            }
                            None => break,
                        },
                        _ = retry.tick() => ports.retry_unbound(),
                    }
                }
            }
            Err(status) => {
                tracing::warn!(gateway = %gateway, %status, "configuration watch failed");
                if status.code() == tonic::Code::Unavailable {
                    metrics.controller_connected(false);
                }
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}
