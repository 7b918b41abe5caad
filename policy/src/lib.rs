//! `trellis-policy` owns the resolved traffic policy that the controller
//! computes from Gateway API objects and the proxies enforce: what a client
//! sees when it talks to a Service port ([`OutboundPolicy`]), what a workload
//! accepts on one of its ports ([`InboundPolicy`]) and what a gateway serves
//! on its listeners ([`GatewayPolicy`]).
//!
//! The crate is pure: plain data, plain functions, no I/O, no async runtime,
//! no Kubernetes types. The controller builds these values, `trellis-api`
//! carries them over gRPC, and the proxy asks [`find`] which rule governs a
//! request, applies the [`filter`] functions and picks a backend with
//! [`split`]. Every Gateway API rule about precedence, path prefixes,
//! rewrites and redirects lives here once, so the controller, the proxy and
//! the tests agree by construction. With the `test-util` feature, the
//! `build` module offers fixture builders and proptest strategies to the
//! tests of every crate.
//!
//! ```text
//!   Gateway API objects ──controller──► OutboundPolicy ──api──► proxy
//!                                           │
//!             request ──► find::http ──► rule ──► filter::* ──► split::choose ──► backend
//! ```

pub mod backend;
#[cfg(any(test, feature = "test-util"))]
pub mod build;
pub mod duration;
pub mod filter;
pub mod find;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod inbound;
pub mod meta;
pub mod outbound;
pub mod regex;
pub mod split;
pub mod tcp;

pub use self::backend::{Backend, Endpoint, RetryBudget, ServiceBackend, WeightedBackend};
pub use self::filter::{
    Cors, Fraction, HeaderModifier, HeaderValue, HttpFilter, PathModifier, RequestMirror,
    RequestRedirect, UrlRewrite,
};
pub use self::gateway::{
    CertificatePem, GatewayPolicy, Listener, ListenerProtocol, ListenerTls, TlsMode,
};
pub use self::grpc::{GrpcMatch, GrpcMethodMatch, GrpcRetry, GrpcRoute, GrpcRule};
pub use self::http::{
    HeaderMatch, HostMatch, HttpBackend, HttpMatch, HttpRetry, HttpRoute, HttpRule, PathMatch,
    QueryParamMatch, SessionPersistence, SessionPersistenceKind, Timeouts, ValueMatch,
};
pub use self::inbound::{
    Authorization, AuthorizationPolicy, AuthzRule, AuthzSource, InboundPolicy, MtlsMode,
};
pub use self::meta::{ResourceRef, RouteKind, RouteRef, SpiffeId};
pub use self::outbound::{OutboundPolicy, Protocol, Target};
pub use self::tcp::{TcpRoute, TcpRule, TlsRoute};
