//! The trust bundle: the PEM list of trust anchors every certificate of the
//! mesh chains to. During a rotation it holds two anchors (the old one, so
//! certificates issued before still verify, and the new one the CA issues
//! from). The proxy reads it from a file (a mounted ConfigMap in Kubernetes,
//! a file the identity service writes in the sandbox) and follows changes.

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("trust bundle {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trust bundle is not PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    #[error("trust bundle holds no certificate")]
    Empty,
    #[error("trust bundle anchor #{index} is not a usable certificate: {reason}")]
    Anchor { index: usize, reason: String },
}

/// A parsed trust bundle, with the verifier state built from it once.
#[derive(Clone)]
pub struct TrustBundle {
    anchors: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.anchors == other.anchors
    }
}

impl TrustBundle {
    /// Parses a PEM bundle: one or more `CERTIFICATE` blocks, other blocks ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Self, BundleError> {
        let anchors = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(BundleError::Pem)?;
        Self::from_der(anchors)
    }

    pub fn from_der(anchors: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if anchors.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut roots = RootCertStore::empty();
        for (index, anchor) in anchors.iter().enumerate() {
            roots.add(anchor.clone()).map_err(|e| BundleError::Anchor {
                index,
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::tls::provider())
                .build()
                .map_err(|e| BundleError::Anchor {
                    index: 0,
                    reason: e.to_string(),
                })?;
        Ok(Self {
            anchors,
            roots,
            client_verifier,
        })
    }

    pub fn anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Verifies that a client certificate chains to one of the anchors (with
    /// the client-authentication key usage).
    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }

    pub fn to_pem(&self) -> String {
        crate::cert::pem_chain(&self.anchors)
    }

    /// Reads and parses a bundle file.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let pem = std::fs::read(path).map_err(|source| BundleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem)
    }
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks, so a ConfigMap volume's `..data` swap shows.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Follows a bundle file: reads it now and again whenever it changes
/// (checked every `poll`). A missing or unreadable file, or one that does not
/// parse, keeps the last good bundle and logs why; before the first good read
/// the value is `None`. The task ends when every receiver is gone.
pub fn watch_file(path: PathBuf, poll: Duration) -> watch::Receiver<Option<Arc<TrustBundle>>> {
    let initial = TrustBundle::read(&path).ok().map(Arc::new);
    let mut seen = if initial.is_some() {
        stamp(&path)
    } else {
        None
    };
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        let mut complained = false;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(poll) => {}
            }
            let now = stamp(&path);
            if now.is_some() && now == seen {
                continue;
            }
            match TrustBundle::read(&path) {
                Ok(bundle) => {
                    seen = now;
                    complained = false;
                    let changed = tx.borrow().as_deref() != Some(&bundle);
                    if changed {
                        tracing::info!(
                            path = %path.display(),
                            anchors = bundle.anchors().len(),
                            "trust bundle loaded"
                        );
                        tx.send_replace(Some(Arc::new(bundle)));
                    }
                }
                Err(error) => {
                    if !complained {
                        tracing::warn!(%error, "keeping the current trust bundle");
                        complained = true;
                    }
                }
            }
        }
    });
    rx
}
