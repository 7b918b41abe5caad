//! `trellis-identity` is the Trellis CA. It keeps a trust anchor and an
//! issuing intermediate (generated on first start and persisted, in a
//! Kubernetes Secret or a 0600 state directory, so a restart never changes
//! the trust root), publishes the trust bundle (a ConfigMap, in every
//! meshed namespace for injected pods to mount, or a file), and
//! serves `Identity.Certify` over TLS: a proxy sends a CSR for the key it
//! generated plus its projected service-account token, and gets back a
//! short-lived ECDSA P-256 certificate whose only URI SAN is the SPIFFE id
//! of that service account.
//!
//! ```text
//!  proxy ──TLS──► CertifyService: rate limit → Authenticator (TokenReview | TokenFile)
//!                                 → csr::check → Authority::issue_workload ──► chain
//!  Store (Secret | dir) ──► Material ──► Authority ──► BundleSink (ConfigMap | per-namespace
//!                                                                  ConfigMaps | file)
//! ```
//!
//! The proxy's side (key generation, renewal, the mTLS configs) is the
//! `trellis-identity-client` crate, which this one also uses for the
//! certificate profile and the TLS provider.

pub mod auth;
pub mod bundles;
pub mod ca;
pub mod cli;
pub mod csr;
pub mod limit;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;

pub use self::server::{Parts, Server, Settings};

/// Logs to stderr, filtered by `filter` (an `EnvFilter` directive, `info`
/// when unset), as JSON lines when `json`.
pub fn init_tracing(filter: Option<String>, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
