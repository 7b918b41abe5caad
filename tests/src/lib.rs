//! `trellis-sandbox`: a real Trellis mesh on one Linux host, in network
//! namespaces, with no cluster. From Kubernetes manifests it does what a
//! control plane, a kubelet and a container runtime would do, with the real
//! binaries and Debian's CNI plugins:
//!
//! ```text
//! manifests ─► sandbox::Sandbox::up/apply
//!   node netns trl-<sandbox>-node: bridge trl0 (198.18.0.1/16), trellis-controller,
//!     trellis-identity (CA in the state directory, trust bundle file, pod tokens),
//!     one trellis-proxy gateway per Gateway (on an address of the Service range)
//!   per pod replica, netns trl-<sandbox>-<namespace>-<pod>:
//!     CNI loopback; bridge + host-local (198.18.0.0/16) → trellis-cni (capture rules)
//!     /etc/netns/<netns>/hosts (Services by name), nft Service NAT (kube-proxy's job)
//!     the app (trellis-echo or the container's command) + trellis-proxy sidecar (uid 2102,
//!     with its token: mTLS between every pair of sidecars)
//!   the controller's directory: Services with ClusterIPs (198.19.0.0/16), Pods with
//!   IPs and readiness, EndpointSlices, routes and every other object as given
//! ```
//!
//! State lives under `/run/trellis-sandbox/<name>/` so another process can
//! inspect, change or remove a sandbox (`trellisctl sandbox …`, tests). The
//! conformance runner ([`conformance`]) and `trellisctl demo` drive traffic
//! from inside pod namespaces through [`client`].

pub mod client;
pub mod cluster;
pub mod cni;
pub mod conformance;
pub mod gateway;
pub mod identity;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod probe;
pub mod sandbox;
pub mod spawn;
pub mod state;

pub use sandbox::{Options, Sandbox};
