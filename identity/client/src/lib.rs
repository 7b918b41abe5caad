//! `trellis-identity-client` is the proxy's side of mesh identity. It owns the
//! workload's private key (generated in memory, never written anywhere, never
//! sent anywhere), obtains a short-lived SPIFFE certificate for it from
//! `trellis-identity` and renews it, follows the trust bundle file as it
//! rotates, and hands the proxy ready-made rustls configurations that always
//! present the current certificate and verify peers against the current
//! bundle.
//!
//! ```text
//!  trust bundle file ──poll──► bundle::watch_file ──► watch<TrustBundle> ─┐
//!                                                                         │
//!  KeyRequest (key + CSR) ──Certifier (gRPC over TLS)──► trellis-identity │
//!         ▲                        │ chain                                │
//!         └── renew at 70 % ± jitter, retry with backoff                  │
//!                                  ▼                                      ▼
//!                        watch<Certificate> ──► tls::{server_config, client_config}
//!                                                  (resolvers + SPIFFE verifiers)
//! ```
//!
//! The proxy starts an [`Identity`] (from the environment with
//! [`IdentityConfig::from_env`]), waits for [`Identity::ready`] before it
//! reports `/ready`, then asks [`Identity::server_config`] for its inbound
//! listener and [`Identity::client_config`] for each meshed peer, naming the
//! SPIFFE id the controller announced for that endpoint and one of the ALPN
//! protocols [`ALPN_H2`] or [`ALPN_TCP`]. After an inbound handshake,
//! [`peer_identity`] gives the verified client id. The controller serves its
//! discovery gRPC through [`serve::incoming`] with the same certificates,
//! and proxies dial it with [`Identity::connect`] naming its SPIFFE id. This crate never depends on
//! `kube`: `cargo xtask deps` checks it.

pub mod bundle;
pub mod cert;
pub mod certify;
pub mod identity;
pub mod metrics;
pub mod profile;
pub mod serve;
pub mod tls;

#[cfg(any(test, feature = "test-ca"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use self::bundle::TrustBundle;
pub use self::cert::{Certificate, KeyRequest};
pub use self::certify::{Certifier, CertifyError, GrpcCertifier};
pub use self::identity::{ConfigError, Identity, IdentityConfig, Renewal};
pub use self::metrics::{Direction, HandshakeOutcome, TlsMetrics};
pub use self::tls::{ALPN_H2, ALPN_TCP, peer_identity, provider};
