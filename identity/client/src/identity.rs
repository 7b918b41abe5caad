//! The workload's identity: a background task that obtains the certificate,
//! renews it at 70 % of its life (with jitter, so a fleet started together
//! does not renew together), retries with backoff while the identity service
//! is unreachable and keeps the current certificate until it expires; and
//! [`Identity`], the handle the proxy reads it through.

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use trellis_api::contract::env;
use trellis_policy::SpiffeId;

use crate::tls::{ALPN_H2, ALPN_TCP, BundleWatch, CertWatch};
use crate::{
    Certificate, Certifier, Direction, GrpcCertifier, KeyRequest, TlsMetrics, TrustBundle, bundle,
    peer_identity,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} does not make a SPIFFE id: {reason}")]
    Identity {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// When and how often to ask for a certificate.
#[derive(Clone, Debug)]
pub struct Renewal {
    /// Fraction of the certificate's life after which it is renewed.
    pub at: f64,
    /// Half-width of the uniform jitter around `at` (0.05: 65 %–75 %).
    pub jitter: f64,
    /// First retry delay after a failed request; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on one request (connect included).
    pub request_timeout: Duration,
    /// How often the trust bundle file is checked for changes.
    pub bundle_poll: Duration,
}

impl Default for Renewal {
    fn default() -> Self {
        Self {
            at: 0.7,
            jitter: 0.05,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            bundle_poll: Duration::from_secs(5),
        }
    }
}

/// Where the identity service is and who this workload is.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// `host:port` of the identity service.
    pub addr: String,
    /// The DNS name (or IP address) its certificate carries.
    pub server_name: String,
    /// The projected service-account token file.
    pub token: PathBuf,
    /// The trust bundle file (PEM).
    pub trust_bundle: PathBuf,
    /// The identity this workload expects to be given.
    pub id: SpiffeId,
    pub renewal: Renewal,
}

impl IdentityConfig {
    /// Reads the configuration from the environment variables of
    /// [`trellis_api::contract::env`], through `get` so tests pass a map.
    /// The server name defaults to the host part of the address, the trust
    /// domain to `cluster.local`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let need = |name: &'static str| {
            get(name)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing { name })
        };
        let addr = need(env::IDENTITY_ADDR)?;
        let server_name = get(env::IDENTITY_NAME)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| host_of(&addr).to_string());
        let trust_domain = get(env::TRUST_DOMAIN)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| trellis_api::contract::DEFAULT_TRUST_DOMAIN.to_string());
        let ns = need(env::POD_NAMESPACE)?;
        let sa = need(env::SERVICE_ACCOUNT)?;
        let id = SpiffeId::for_service_account(&trust_domain, &ns, &sa);
        let parsed = SpiffeId::parse(id.as_str()).map_err(|e| ConfigError::Identity {
            name: env::SERVICE_ACCOUNT,
            value: id.to_string(),
            reason: e.reason.to_string(),
        })?;
        // A `/` in either name would shift the path's segments.
        if parsed
            .service_account()
            .is_none_or(|r| r.namespace != ns || r.name != sa)
        {
            return Err(ConfigError::Identity {
                name: env::SERVICE_ACCOUNT,
                value: id.to_string(),
                reason: "namespace and service account must not contain '/'".into(),
            });
        }
        Ok(Self {
            addr,
            server_name,
            token: need(env::IDENTITY_TOKEN)?.into(),
            trust_bundle: need(env::TRUST_BUNDLE)?.into(),
            id,
            renewal: Renewal::default(),
        })
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// The identity service stopped publishing certificates (every task that
/// could have produced one has ended).
#[derive(Debug, thiserror::Error)]
#[error("the identity task has stopped")]
pub struct Stopped;

/// The proxy's handle on its identity. Cloning is cheap; the background
/// tasks run as long as a handle or a config built from it is alive.
#[derive(Clone, Debug)]
pub struct Identity {
    id: SpiffeId,
    certs: CertWatch,
    bundle: BundleWatch,
    metrics: TlsMetrics,
    /// The inbound config offering both mesh protocols, built once.
    mesh_server: Arc<OnceLock<Arc<ServerConfig>>>,
}

impl Identity {
    /// Follows the trust bundle file and keeps a certificate from the
    /// identity service. Must be called within a tokio runtime.
    pub fn start(config: IdentityConfig, metrics: TlsMetrics) -> Self {
        let bundle = bundle::watch_file(config.trust_bundle.clone(), config.renewal.bundle_poll);
        let certifier = GrpcCertifier {
            addr: config.addr,
            server_name: config.server_name,
            token: config.token,
            timeout: config.renewal.request_timeout,
        };
        Self::with_certifier(config.id, bundle, certifier, config.renewal, metrics)
    }

    /// Like [`Identity::start`] with any source of certificates and bundles.
    pub fn with_certifier(
        id: SpiffeId,
        bundle: BundleWatch,
        certifier: impl Certifier,
        renewal: Renewal,
        metrics: TlsMetrics,
    ) -> Self {
        let (tx, certs) = watch::channel(None);
        tokio::spawn(renew(
            id.clone(),
            bundle.clone(),
            certifier,
            renewal,
            tx,
            metrics.clone(),
        ));
        Self::from_parts(id, certs, bundle, metrics)
    }

    fn from_parts(
        id: SpiffeId,
        certs: CertWatch,
        bundle: BundleWatch,
        metrics: TlsMetrics,
    ) -> Self {
        Self {
            id,
            certs,
            bundle,
            metrics,
            mesh_server: Arc::default(),
        }
    }

    /// A fixed certificate and bundle, never renewed (tests, or a proxy run
    /// with certificate files).
    pub fn fixed(cert: Certificate, bundle: TrustBundle, metrics: TlsMetrics) -> Self {
        metrics.set_expiry(Some(cert.not_after()));
        let id = cert.id().clone();
        let (cert_tx, certs) = watch::channel(Some(Arc::new(cert)));
        let (bundle_tx, bundle) = watch::channel(Some(Arc::new(bundle)));
        // The receivers outlive the senders, and keep the last value.
        drop((cert_tx, bundle_tx));
        Self::from_parts(id, certs, bundle, metrics)
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Arc<Certificate>> {
        self.certs.borrow().clone()
    }

    /// Follows the certificate (`None` before the first one and after expiry).
    pub fn watch(&self) -> CertWatch {
        self.certs.clone()
    }

    pub fn bundle(&self) -> BundleWatch {
        self.bundle.clone()
    }

    pub fn is_ready(&self) -> bool {
        self.certs.borrow().is_some()
    }

    /// Waits until a certificate is held (what the proxy's `/ready` waits for).
    pub async fn ready(&self) -> Result<Arc<Certificate>, Stopped> {
        let mut certs = self.certs.clone();
        let cert = certs.wait_for(Option::is_some).await.map_err(|_| Stopped)?;
        cert.clone().ok_or(Stopped)
    }

    /// The inbound mTLS config: the current certificate, client certificates
    /// required and verified against the bundle, `alpn` offered (the proxy
    /// passes `&[ALPN_H2, ALPN_TCP]`). Build it once; it follows rotation.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        Arc::new(crate::tls::server_config(
            self.certs.clone(),
            self.bundle.clone(),
            alpn,
        ))
    }

    /// Accepts an inbound mesh connection: TLS 1.3, a client certificate
    /// required, both [`ALPN_H2`] and [`ALPN_TCP`] offered. Returns the
    /// stream (its `get_ref().1.alpn_protocol()` says which protocol) and the
    /// verified client identity; the handshake is counted in the metrics.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(server::TlsStream<IO>, SpiffeId)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self
            .mesh_server
            .get_or_init(|| self.server_config(&[ALPN_H2, ALPN_TCP]))
            .clone();
        let tls = self.metrics.record(
            Direction::Inbound,
            TlsAcceptor::from(config).accept(io).await,
        )?;
        // The verifier refuses a client without a SPIFFE id, so this holds.
        let client = peer_identity(tls.get_ref().1).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "client has no SPIFFE id")
        })?;
        Ok((tls, client))
    }

    /// Opens the client side of a mesh connection over `io` (already
    /// connected to `addr`): TLS 1.3 to a server that must be `peer`,
    /// offering `alpn` ([`ALPN_H2`] or [`ALPN_TCP`]); counted in the metrics.
    pub async fn connect<IO>(
        &self,
        io: IO,
        addr: IpAddr,
        peer: &SpiffeId,
        alpn: &[u8],
    ) -> std::io::Result<client::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = TlsConnector::from(self.client_config(peer, &[alpn]));
        let result = connector
            .connect(ServerName::IpAddress(addr.into()), io)
            .await;
        self.metrics.record(Direction::Outbound, result)
    }

    /// The outbound mTLS config towards a peer that must be `peer` (the
    /// SPIFFE id the controller announced for the endpoint). Connect with any
    /// `ServerName` (the endpoint's IP): it is not what is checked.
    pub fn client_config(&self, peer: &SpiffeId, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        Arc::new(crate::tls::client_config(
            self.certs.clone(),
            self.bundle.clone(),
            peer.clone(),
            alpn,
        ))
    }
}

/// A uniformly jittered fraction of the life, within [0, 1].
fn renewal_point(renewal: &Renewal) -> f64 {
    let spread = (fastrand::f64() * 2.0 - 1.0) * renewal.jitter;
    (renewal.at + spread).clamp(0.0, 1.0)
}

/// `d` shortened by up to a quarter, so retries of many proxies spread out.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 - fastrand::f64() * 0.25)
}

async fn renew(
    id: SpiffeId,
    mut bundle: BundleWatch,
    certifier: impl Certifier,
    renewal: Renewal,
    tx: watch::Sender<Option<Arc<Certificate>>>,
    metrics: TlsMetrics,
) {
    let mut backoff = renewal.min_backoff;
    loop {
        let current = bundle.borrow_and_update().clone();
        let Some(trust) = current else {
            tracing::debug!("waiting for the trust bundle");
            tokio::select! {
                _ = tx.closed() => return,
                changed = bundle.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let attempt = request(&id, &certifier, &trust);
        let result = tokio::select! {
            _ = tx.closed() => return,
            r = attempt => r,
        };
        metrics.request(result.is_ok());
        let next = match result {
            Ok(cert) => {
                backoff = renewal.min_backoff;
                let at = cert.life_point(renewal_point(&renewal));
                tracing::info!(
                    identity = %cert.id(),
                    not_after = ?cert.not_after(),
                    renew_in = ?at.saturating_duration_since(Instant::now()),
                    "certificate issued"
                );
                metrics.set_expiry(Some(cert.not_after()));
                tx.send_replace(Some(Arc::new(cert)));
                at
            }
            Err(error) => {
                let wait = jittered(backoff);
                backoff = (backoff * 2).min(renewal.max_backoff);
                let keeping = tx.borrow().as_ref().map(|c| c.expires_at());
                tracing::warn!(%error, retry_in = ?wait, keeping_current = keeping.is_some(), "certificate request failed");
                Instant::now() + wait
            }
        };
        // Sleep until the next attempt, dropping the certificate if it
        // expires first: an expired certificate is refused by every peer.
        loop {
            let expires = tx.borrow().as_ref().map(|c| c.expires_at());
            match expires {
                Some(at) if at <= next => {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep_until(at) => {}
                    }
                    tracing::error!(identity = %id, "certificate expired before it could be renewed");
                    metrics.set_expiry(None);
                    tx.send_replace(None);
                }
                _ => {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                    break;
                }
            }
        }
    }
}

async fn request(
    id: &SpiffeId,
    certifier: &impl Certifier,
    bundle: &TrustBundle,
) -> Result<Certificate, Box<dyn std::error::Error + Send + Sync>> {
    let request = KeyRequest::generate(id)?;
    let chain = certifier
        .certify(request.csr_der().to_vec(), bundle)
        .await?;
    Ok(request.certificate(chain, id, bundle)?)
}
