//! Resolution: pure functions from the index's [`Store`] to the policy a
//! proxy receives. Nothing here keeps state; the same store always gives the
//! same policy, which is what lets the controller restart with the same
//! result.
//!
//! ```text
//!   Store ──outbound(ip:port, client ns)──► OutboundPolicy   (sidecars, outbound)
//!         ──inbound(pod, port)────────────► InboundPolicy    (sidecars, inbound)
//!         ──gateway(ns/name)──────────────► GatewayPolicy    (gateway proxies)
//! ```

pub mod backend;
pub mod gateway;
pub mod inbound;
pub mod outbound;

pub use self::gateway::gateway;
pub use self::inbound::inbound;
pub use self::outbound::outbound;
