//! The names the sandbox gives to what it creates, all derived from the
//! sandbox name so that sandboxes with different names never collide and a
//! later `down` finds everything again.
//!
//! Network namespace names are file names under `/run/netns` (≤ 255 bytes);
//! interface names are limited to 15 bytes, so the one interface the sandbox
//! names itself (the bridge, inside the sandbox's own node namespace) is a
//! constant, and the CNI bridge plugin names the host ends of pod veths
//! inside that same namespace.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Prefix of every network namespace the sandbox creates.
pub const NETNS_PREFIX: &str = "trl-";
/// The bridge in the node namespace (≤ 15 bytes; unique per node namespace).
pub const BRIDGE: &str = "trl0";
/// The pod interface the CNI plugins create.
pub const POD_IFNAME: &str = "eth0";
/// The longest sandbox name: keeps netns names and paths readable.
pub const MAX_SANDBOX_NAME: usize = 24;
/// Where sandboxes keep their state: one directory per sandbox.
pub const STATE_ROOT: &str = "/run/trellis-sandbox";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "invalid sandbox name {0:?}: use 1 to {MAX_SANDBOX_NAME} lower-case letters, digits or '-', starting with a letter and not ending with '-'"
    )]
    SandboxName(String),
}

/// A validated sandbox name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxName(String);

impl SandboxName {
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= MAX_SANDBOX_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(Error::SandboxName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node namespace: bridge, controller, identity.
    pub fn node_netns(&self) -> String {
        format!("{NETNS_PREFIX}{}-node", self.0)
    }

    /// The network namespace of one pod, so that plain `ip netns exec` works.
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        format!("{NETNS_PREFIX}{}-{namespace}-{pod}", self.0)
    }

    /// The sandbox's state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.0)
    }
}

impl std::fmt::Display for SandboxName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short, stable hash of some text (hex, `len` characters).
pub fn short_hash(text: &str, len: usize) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(len);
    hex
}

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no
/// look-alike characters).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A Kubernetes-looking suffix derived from `seed`: `len` characters of the
/// alphabet Kubernetes uses for generated names.
pub fn k8s_suffix(seed: &str, len: usize) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    digest
        .iter()
        .take(len)
        .map(|b| SUFFIX_ALPHABET[usize::from(*b) % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// The container id the sandbox passes to CNI for a pod (stable per sandbox
/// and pod, like a runtime's sandbox container id).
pub fn container_id(sandbox: &SandboxName, namespace: &str, pod: &str) -> String {
    short_hash(&format!("{sandbox}/{namespace}/{pod}"), 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_are_validated() {
        for good in ["t", "demo", "conf-1", "a2345678901234567890abcd"] {
            assert!(SandboxName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "T",
            "1abc",
            "a_b",
            "ab-",
            "a/b",
            "a2345678901234567890abcde",
        ] {
            assert_eq!(
                SandboxName::new(bad),
                Err(Error::SandboxName(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn netns_names_follow_the_contract() {
        let s = SandboxName::new("t").unwrap();
        assert_eq!(s.node_netns(), "trl-t-node");
        assert_eq!(
            s.pod_netns("gateway-conformance-mesh", "echo-v1-abc-0"),
            "trl-t-gateway-conformance-mesh-echo-v1-abc-0"
        );
        assert_eq!(
            s.state_dir(),
            PathBuf::from("/run/trellis-sandbox/t"),
            "state lives under /run"
        );
    }

    #[test]
    fn derived_names_are_stable_and_distinct() {
        assert_eq!(k8s_suffix("a", 5), k8s_suffix("a", 5));
        assert_ne!(k8s_suffix("a", 5), k8s_suffix("b", 5));
        assert_eq!(k8s_suffix("a", 5).len(), 5);
        let s = SandboxName::new("t").unwrap();
        let u = SandboxName::new("u").unwrap();
        assert_ne!(container_id(&s, "ns", "p"), container_id(&u, "ns", "p"));
        assert_eq!(container_id(&s, "ns", "p").len(), 32);
    }
}
