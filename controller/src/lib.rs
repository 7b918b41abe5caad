//! `trellis-controller` turns Gateway API objects into the policy Trellis
//! proxies enforce, and streams it to them.
//!
//! It is an index, not a reconciler. A [`source::Source`] (Kubernetes
//! watches, or a directory of manifests for the sandbox and tests) feeds
//! typed [`objects::Object`]s into the [`index::Index`] through synchronous
//! `apply`/`delete`/`reset`. The index keeps a reduced copy of each object
//! and publishes one `tokio::sync::watch` channel per subscribed target:
//! (Service ClusterIP:port, client namespace) for sidecars' outbound side,
//! (pod, port) for their inbound side, and one per Gateway. The gRPC
//! services ([`grpc`]) only read those channels; the admin server
//! ([`admin`]) answers `/status`, `/policy`, `/metrics`, `/ready`, `/live`;
//! in Kubernetes mode the lease holder also writes status to the API.
//!
//! ```text
//!   Kubernetes API ──watch──┐                       ┌─► gRPC OutboundPolicies / InboundPolicies / GatewayConfig ─► proxies
//!                           ├─► Source ─► Index ─────┤
//!   manifest dir ──poll─────┘   (trait)   (watch     ├─► admin: /status /policy /metrics
//!                                          channels) └─► status writer (lease holder, Kubernetes only)
//! ```
//!
//! Resolution itself ([`resolve`], [`status`]) is pure: the same objects
//! always give the same policy and status.

pub mod admin;
pub mod config;
pub mod crd;
pub mod deployer;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod objects;
pub mod resolve;
pub mod routes;
pub mod server;
pub mod source;
pub mod status;
