//! Policies from a YAML file instead of the controller (`--policy-file`), so
//! the proxy runs, is debugged and benchmarked alone. The file holds the
//! `trellis-policy` model as YAML:
//!
//! ```yaml
//! outbound:            # OutboundPolicy values, keyed by their `target`
//!   - target: 198.19.0.10:80
//!     service: { namespace: shop, name: web }
//!     port: 80
//!     protocol: detect
//!     backend:
//!       service:
//!         service: { namespace: shop, name: web }
//!         port: 80
//!         authority: web.shop.svc.cluster.local:80
//!         endpoints:
//!           - addr: 198.18.0.5:8080
//!             identity: spiffe://cluster.local/ns/shop/sa/web
//! inbound: []          # InboundPolicy values, keyed by their `port`
//! ```
//!
//! The file is checked for changes every [`POLL`]; a change that does not
//! parse is refused with a warning and the previous policies stay.

use super::{InboundWatch, OutboundWatch, apply_outbound};
use crate::{metrics::Metrics, upstream::Upstreams};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};
use tokio::sync::watch;
use trellis_policy::{InboundPolicy, OutboundPolicy, Target};

/// How often the file is checked for changes.
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub outbound: Vec<OutboundPolicy>,
    #[serde(default)]
    pub inbound: Vec<InboundPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl PolicyFile {
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        serde_saphyr::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads the file (an error is a configuration error) and keeps reloading it
/// on change.
pub fn watch_file(path: PathBuf) -> Result<watch::Receiver<Arc<PolicyFile>>, Error> {
    let first = PolicyFile::load(&path)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut seen = modified(&path);
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match PolicyFile::load(&path) {
                Ok(f) => {
                    tracing::info!(path = %path.display(), "policy file reloaded");
                    tx.send_if_modified(|cur| {
                        let changed = **cur != f;
                        *cur = Arc::new(f);
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "keeping the previous policies"),
            }
        }
    });
    Ok(rx)
}

pub(super) async fn watch_outbound(
    mut rx: watch::Receiver<Arc<PolicyFile>>,
    target: Target,
    w: Weak<OutboundWatch>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
) {
    let mut last: Option<Option<OutboundPolicy>> = None;
    loop {
        let file = rx.borrow_and_update().clone();
        let policy = file.outbound.iter().find(|p| p.target == target).cloned();
        let Some(watch) = w.upgrade() else { return };
        if last.as_ref() != Some(&policy) {
            apply_outbound(&watch, target, policy.clone(), &upstreams, &metrics);
            last = Some(policy);
        }
        drop(watch);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub(super) async fn watch_inbound(
    mut rx: watch::Receiver<Arc<PolicyFile>>,
    port: u16,
    w: Weak<InboundWatch>,
) {
    loop {
        let file = rx.borrow_and_update().clone();
        let policy = file.inbound.iter().find(|p| p.port == port).cloned();
        let Some(watch) = w.upgrade() else { return };
        watch.publish(Arc::new(policy));
        drop(watch);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("file.rs")
            .split("//! ```yaml\n")
            .nth(1)
            .and_then(|s| s.split("//! ```").next())
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("//! ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let f = PolicyFile::parse(Path::new("doc"), &doc).unwrap();
        assert_eq!(f.outbound.len(), 1);
        assert_eq!(f.outbound[0].target.0, "198.19.0.10:80".parse().unwrap());
    }

    #[test]
    fn errors_name_the_file() {
        let err = PolicyFile::parse(Path::new("/etc/p.yaml"), "outbound: 3").unwrap_err();
        assert!(err.to_string().contains("/etc/p.yaml"), "{err}");
    }
}
