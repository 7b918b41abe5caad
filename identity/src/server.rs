//! Running the CA: load or create the material, publish the bundle, serve
//! `Identity` over TLS (TLS 1.3, aws-lc-rs, a server certificate this CA
//! issues to itself), serve metrics on the admin port, and every reload
//! interval pick up rotation steps and issuer renewals from the store.
//!
//! ```text
//!  Store ──load/create──► Material ──validate──► Authority (ArcSwap) ──► CertifyService
//!    ▲                                              │
//!    └── renew_issuer ◄── reload tick ──────────────┴──► BundleSinks, server certificate
//! ```

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use trellis_api::proto::identity::identity_server::IdentityServer;
use trellis_identity_client::tls::provider;

use crate::auth::Authenticator;
use crate::ca::{self, Authority, CaError, Material};
use crate::limit::RateLimit;
use crate::metrics::CaMetrics;
use crate::service::{Ca, CertifyService};
use crate::store::{BundleSink, Store, StoreError};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a request message (a CSR is a few hundred bytes, a token ~1 KiB).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the CA in {place} is unusable: {source}")]
    Ca { place: String, source: CaError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server certificate: {0}")]
    ServerCert(String),
}

/// What the service is told by its flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub trust_domain: String,
    /// DNS names and addresses of the service's own certificate.
    pub server_names: Vec<String>,
    pub server_ips: Vec<IpAddr>,
    /// Lifetime of workload certificates (and of the server's own).
    pub lifetime: Duration,
    pub rate_burst: u32,
    pub rate_refill: Duration,
    pub reload_interval: Duration,
}

/// What the service talks to.
pub struct Parts {
    pub store: Box<dyn Store>,
    pub sinks: Vec<Box<dyn BundleSink>>,
    pub auth: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// The server's own certificate, swapped as it is re-issued.
#[derive(Debug)]
struct ServerCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The material in use and when the server certificate needs renewing.
struct State {
    material: Material,
    server_renew_at: SystemTime,
}

struct Shared {
    settings: Settings,
    parts: Parts,
    ca: Arc<Ca>,
    metrics: CaMetrics,
    server_cert: Arc<ServerCert>,
    state: tokio::sync::Mutex<State>,
}

/// A running identity service; [`Server::stop`] ends it gracefully.
pub struct Server {
    grpc: SocketAddr,
    admin: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("grpc", &self.grpc)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// The stored material, created (and persisted) on first start, with the
/// issuer renewed when due.
async fn material(store: &dyn Store, trust_domain: &str) -> Result<Material, ServeError> {
    let ca_err = |source| ServeError::Ca {
        place: store.describe(),
        source,
    };
    let mut material = match store.load().await? {
        Some(m) => m,
        None => {
            let generated = ca::generate(trust_domain, SystemTime::now()).map_err(ca_err)?;
            let stored = store.create(&generated).await?;
            if stored == generated {
                tracing::info!(store = %store.describe(), "generated a new trust anchor and issuer");
            }
            stored
        }
    };
    if let Some(renewed) =
        ca::renew_issuer(&material, trust_domain, SystemTime::now()).map_err(ca_err)?
    {
        match store.replace(&material, &renewed).await {
            Ok(()) => {
                tracing::info!(store = %store.describe(), "issuer renewed");
                material = renewed;
            }
            Err(StoreError::Conflict(_)) => {
                material = store.load().await?.unwrap_or(material);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(material)
}

fn server_cert(
    authority: &Authority,
    settings: &Settings,
) -> Result<(Arc<CertifiedKey>, SystemTime), ServeError> {
    let now = SystemTime::now();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ServeError::ServerCert(e.to_string()))?;
    let mut ips = settings.server_ips.clone();
    if !settings.listen.ip().is_unspecified() && !ips.contains(&settings.listen.ip()) {
        ips.push(settings.listen.ip());
    }
    let chain = authority
        .issue_server(&settings.server_names, &ips, &key, settings.lifetime, now)
        .map_err(|e| ServeError::ServerCert(e.to_string()))?;
    let (from, until) = trellis_identity_client::cert::validity(&chain[0])
        .map_err(|e| ServeError::ServerCert(e.to_string()))?;
    let renew_at = from + until.duration_since(from).unwrap_or_default().mul_f64(0.7);
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(chain, der, &provider())
        .map_err(|e| ServeError::ServerCert(e.to_string()))?;
    Ok((Arc::new(certified), renew_at))
}

impl Shared {
    async fn publish(&self, authority: &Authority) {
        let pem = authority.bundle_pem();
        for sink in &self.parts.sinks {
            match sink.publish(&pem).await {
                Ok(true) => tracing::info!(
                    to = %sink.describe(),
                    anchors = authority.bundle().len(),
                    "trust bundle published"
                ),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "publishing the trust bundle failed; will retry")
                }
            }
        }
    }

    /// One reload tick: follow the store, renew what is due, republish.
    /// Returns whether the authority changed.
    async fn reload(&self) -> Result<bool, ServeError> {
        let mut state = self.state.lock().await;
        let material = material(self.parts.store.as_ref(), &self.settings.trust_domain).await?;
        let mut changed = false;
        if material != state.material {
            let authority =
                Authority::from_material(&material, SystemTime::now()).map_err(|source| {
                    ServeError::Ca {
                        place: self.parts.store.describe(),
                        source,
                    }
                })?;
            tracing::info!(
                anchors = authority.bundle().len(),
                "certificate authority reloaded"
            );
            self.metrics.authority(&authority);
            self.ca.authority.store(Arc::new(authority));
            state.material = material;
            changed = true;
        }
        let authority = self.ca.authority.load_full();
        if changed || SystemTime::now() >= state.server_renew_at {
            let (cert, renew_at) = server_cert(&authority, &self.settings)?;
            self.server_cert.0.store(cert);
            state.server_renew_at = renew_at;
        }
        drop(state);
        self.publish(&authority).await;
        Ok(changed)
    }
}

/// A TLS connection as tonic's server sees it.
struct TlsConn(TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Completes once the stop flag is raised (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Accepts TCP, handshakes TLS off the accept loop, hands tonic the result.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<Result<TlsConn, std::io::Error>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(TlsConn(tls))).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Server {
    /// Loads (or creates) the CA, publishes the bundle and starts serving.
    pub async fn start(settings: Settings, parts: Parts) -> Result<Self, ServeError> {
        let material = material(parts.store.as_ref(), &settings.trust_domain).await?;
        let authority =
            Authority::from_material(&material, SystemTime::now()).map_err(|source| {
                ServeError::Ca {
                    place: parts.store.describe(),
                    source,
                }
            })?;
        let metrics = CaMetrics::default();
        metrics.authority(&authority);
        let (cert, server_renew_at) = server_cert(&authority, &settings)?;
        let server_cert = Arc::new(ServerCert(ArcSwap::new(cert)));
        let ca = Arc::new(Ca {
            authority: ArcSwap::from_pointee(authority),
            trust_domain: settings.trust_domain.clone(),
            lifetime: settings.lifetime,
        });
        let service = CertifyService::new(
            ca.clone(),
            parts.auth.clone(),
            RateLimit::new(settings.rate_burst, settings.rate_refill),
            metrics.clone(),
        );
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            parts,
            ca,
            metrics: metrics.clone(),
            server_cert: server_cert.clone(),
            state: tokio::sync::Mutex::new(State {
                material,
                server_renew_at,
            }),
        });
        shared.publish(&shared.ca.authority.load()).await;

        let grpc_listener = bind(settings.listen).await?;
        let admin_listener = bind(settings.admin_listen).await?;
        let grpc = grpc_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: settings.listen,
                source,
            })?;
        let admin = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: settings.admin_listen,
                source,
            })?;

        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ServeError::ServerCert(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(server_cert);
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let (tx, rx) = mpsc::channel(64);
        tasks.spawn(accept(grpc_listener, acceptor, tx, stop_rx.clone()));
        let mut until = stop_rx.clone();
        tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
            let result = tonic::transport::Server::builder()
                .add_service(
                    IdentityServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
                )
                .serve_with_incoming_shutdown(incoming, async move { stopped(&mut until).await })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "the gRPC server failed");
            }
        });
        tasks.spawn(admin_server(admin_listener, metrics, stop_rx.clone()));
        let ticker = shared.clone();
        let mut until = stop_rx;
        tasks.spawn(async move {
            let mut interval = tokio::time::interval(ticker.settings.reload_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = stopped(&mut until) => return,
                    _ = interval.tick() => {}
                }
                if let Err(error) = ticker.reload().await {
                    tracing::warn!(%error, "reload failed; keeping the current authority");
                }
            }
        });
        tracing::info!(%grpc, %admin, "identity service started");
        Ok(Self {
            grpc,
            admin,
            shared,
            stop,
            tasks,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn authority(&self) -> Arc<Authority> {
        self.shared.ca.authority.load_full()
    }

    pub fn metrics(&self) -> &CaMetrics {
        &self.shared.metrics
    }

    /// Runs a reload tick now (what the interval does); `true` when the
    /// authority changed.
    pub async fn reload(&self) -> Result<bool, ServeError> {
        self.shared.reload().await
    }

    /// Stops accepting, lets calls in flight finish, and returns.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Serves until `signal` completes, then stops gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("stopping");
        self.stop().await;
    }
}

async fn admin_server(listener: TcpListener, metrics: CaMetrics, mut stop: watch::Receiver<bool>) {
    use axum::response::IntoResponse;
    use axum::routing::get;
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(_) => (
                            [(http::header::CONTENT_TYPE, "text/plain")],
                            String::from("encoding metrics failed"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/ready", get(|| async { "ready\n" }))
        .route("/live", get(|| async { "live\n" }));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped(&mut stop).await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "the admin server failed");
    }
}
