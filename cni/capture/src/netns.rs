//! Running code inside another network namespace without moving the process.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only, so
//! [`run_in`] does it on a thread of its own: sockets that thread opens and
//! programs it starts (`iptables-restore`, `nft`) live in the target
//! namespace, and the caller's threads never change namespace.

use nix::sched::{CloneFlags, setns};
use std::{fs::File, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path} does not exist")]
    NotFound { path: String },
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: String, source: nix::Error },
}

/// Runs `f` on a new thread inside the network namespace at `path`
/// (`/var/run/netns/NAME`, `/proc/PID/ns/net`, ...). A panic in `f` is
/// resumed on the caller's thread.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => NetnsError::NotFound {
            path: shown.clone(),
        },
        _ => NetnsError::Open {
            path: shown.clone(),
            source,
        },
    })?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: shown,
                source,
            })?;
            Ok(f())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
