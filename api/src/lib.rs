//! `trellis-api` is the contract between the Trellis control plane and its
//! proxies: the protobuf services of `api/proto/` (outbound and inbound
//! policy watches, gateway configuration, certificate issuance), the code
//! generated from them, the conversions between those messages and the
//! `trellis-policy` model, and [`contract`], the one list of ports, user id,
//! label and annotation keys and environment variable names.
//!
//! The controller and identity service implement the servers; the proxy uses
//! the clients. Both sides only ever see `trellis-policy` types: conversions
//! happen at the gRPC edge ([`convert`]), and [`watch`] holds the two ends of
//! a watch stream.
//!
//! ```text
//!  controller: index ──watch::Receiver<OutboundPolicy>──► watch::serve ──From<&_>──► OutboundUpdate
//!                                                                                      ║ gRPC
//!  proxy:      OutboundPolicy ◄──TryFrom<_>── watch::updates ◄── Streaming<OutboundUpdate>
//! ```

pub mod contract;
pub mod convert;
pub mod watch;

pub use self::convert::{ConvertError, GatewayTarget, InboundTarget, OutboundTarget};

/// Code generated from `api/proto/` by `build.rs`, laid out as the protobuf
/// packages are (`trellis.policy.v1`, ...) so cross-package references resolve.
#[allow(
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    pub mod trellis {
        pub mod policy {
            pub mod v1 {
                tonic::include_proto!("trellis.policy.v1");
            }
        }
        pub mod discovery {
            pub mod v1 {
                tonic::include_proto!("trellis.discovery.v1");
            }
        }
        pub mod identity {
            pub mod v1 {
                tonic::include_proto!("trellis.identity.v1");
            }
        }
    }

    /// `discovery.proto`: the watch services.
    pub use self::trellis::discovery::v1 as discovery;
    /// `identity.proto`: certificate issuance.
    pub use self::trellis::identity::v1 as identity;
    /// `policy.proto`: the policy model on the wire.
    pub use self::trellis::policy::v1 as policy;
}

// Hand-written so that secrets never reach a log line (see `build.rs`).

impl std::fmt::Debug for proto::policy::CertificatePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePem")
            .field("chain_pem", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for proto::identity::CertifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifyRequest")
            .field("csr_der", &self.csr_der.len())
            .finish_non_exhaustive()
    }
}
