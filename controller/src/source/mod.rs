//! Where objects come from: the one place where running against Kubernetes
//! and running from a directory of manifests differ.
//!
//! A [`Source`] feeds the [`SharedIndex`] with `apply`/`delete`/`reset` and
//! says when its first complete view is in; in Kubernetes mode it also
//! writes status to the API (only the lease holder does). Everything after
//! the index is the same in both modes.

pub mod dir;
pub mod kube;
mod lease;
mod status_writer;

use crate::index::SharedIndex;
use futures::future::BoxFuture;
use tokio::sync::watch;

/// A fatal failure of a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kubernetes client: {0}")]
    Client(#[from] ::kube::Error),
    #[error("kubernetes watch of {kind} ended")]
    WatchEnded { kind: &'static str },
}

/// Objects from somewhere, into the index.
pub trait Source: Send {
    /// Feeds `index` until the source fails; sends `true` on `ready` once
    /// every kind has been listed once.
    fn run(
        self: Box<Self>,
        index: SharedIndex,
        ready: watch::Sender<bool>,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}
