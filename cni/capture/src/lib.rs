//! `trellis-capture`: the rules that send a pod's TCP traffic through its
//! sidecar, shared by `trellis-cni` (installing them when the pod's network
//! is set up) and `trellis-proxy init` (when no CNI plugin is used). It has
//! no Kubernetes dependency: the proxy builds on it.
//!
//! ```text
//! CaptureConfig ──plan()──► Plan ──render──► iptables-restore input / nft ruleset
//!   (ports, uid,            (pure:           │
//!    skips, families)        golden files)   └─apply()/check()/remove() in the
//!                                              current network namespace
//!                                              (netns::run_in to pick one)
//! ```
//!
//! The pure part ([`plan`] and the `Plan` renderers) gets the golden-file
//! tests; [`apply`], [`remove`] and [`check`] run the real tools.

mod apply;
mod config;
pub mod netns;
mod plan;
mod render;

pub use apply::{ApplyError, Backend, apply, check, remove};
pub use config::{
    CaptureConfig, ConfigError, Families, Family, PortRange, parse_cidrs, parse_ports,
};
pub use plan::{Action, Chain, Match, Plan, Rule, plan};
pub use render::NFT_TABLE;
