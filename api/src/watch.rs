//! Both ends of a discovery watch.
//!
//! ```text
//!  controller index                       gRPC                      proxy
//!  watch::Sender<T> ──Receiver<T>──► serve(rx, to_message) ════► updates(Streaming<M>) ──► T
//!                                     current value at once,        each message converted
//!                                     then each changed value       back to the model
//! ```
//!
//! [`serve`] turns a `tokio::sync::watch::Receiver` into the response stream
//! of a server-streaming method: it sends the current value when the client
//! subscribes and then every value that differs from the last one sent.
//! Because a watch channel keeps only its latest value, a subscriber that
//! reads slowly skips intermediate values and never holds up the sender or
//! other subscribers. [`updates`] is the client end: it turns the
//! `tonic::Streaming` of a watch call into a stream of model values.

use crate::convert::ConvertError;
use futures::Stream;
use std::{
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::sync::watch;

/// The response stream type of a server-streaming method, e.g.
/// `type WatchStream = ResponseStream<proto::discovery::OutboundUpdate>;`.
pub type ResponseStream<M> = Pin<Box<dyn Stream<Item = Result<M, tonic::Status>> + Send + 'static>>;

/// Streams the value of `rx` as messages: the current value at once, then
/// each new value that differs (`PartialEq`) from the last one sent, each
/// turned into a message by `to_message`. An unchanged value is never sent
/// twice.
///
/// The stream reads the channel only when polled, so a client that reads
/// slowly receives the latest value when it catches up, not a backlog, and
/// neither the sender nor other subscribers ever wait for it. The stream
/// ends once every sender of the channel is dropped and its last value was
/// sent.
///
/// The value is cloned out of the channel before `to_message` runs so the
/// channel's lock is never held during conversion; make `T` cheap to clone
/// (an `Arc`) when it is large.
pub fn serve<T, M, F>(rx: watch::Receiver<T>, to_message: F) -> ResponseStream<M>
where
    T: Clone + PartialEq + Send + Sync + 'static,
    M: Send + 'static,
    F: FnMut(&T) -> M + Send + 'static,
{
    let state = Serve {
        rx,
        last: None,
        to_message,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        let message = s.next().await?;
        Some((Ok(message), s))
    }))
}

struct Serve<T, F> {
    rx: watch::Receiver<T>,
    /// The last value sent; `None` before the first.
    last: Option<T>,
    to_message: F,
}

impl<T: Clone + PartialEq, F> Serve<T, F> {
    async fn next<M>(&mut self) -> Option<M>
    where
        F: FnMut(&T) -> M,
    {
        loop {
            if self.last.is_some() {
                // Errs only once the senders are gone and the last value was seen.
                self.rx.changed().await.ok()?;
            }
            let current = self.rx.borrow_and_update().clone();
            if self.last.as_ref() == Some(&current) {
                continue;
            }
            let message = (self.to_message)(&current);
            self.last = Some(current);
            return Some(message);
        }
    }
}

/// What ends or interrupts a watch on the client side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call failed or the stream broke; the watch has ended. Reconnect
    /// (with backoff) and keep the last good value meanwhile.
    #[error("watch stream failed: {0}")]
    Status(#[from] tonic::Status),
    /// The server sent a message that is no valid model value. The stream
    /// goes on; the previous value is still the best one known.
    #[error("invalid update: {0}")]
    Invalid(#[from] ConvertError),
}

/// The messages of a watch call's response stream, converted to model values
/// `T` (e.g. `Option<OutboundPolicy>` from `OutboundUpdate`,
/// `InboundPolicy`, `GatewayPolicy`).
///
/// It ends when the server ends the stream. A transport or server error is
/// yielded as [`Error::Status`] and ends it; a message that does not convert
/// is yielded as [`Error::Invalid`] and the stream goes on.
pub fn updates<M, T>(stream: tonic::Streaming<M>) -> Updates<M, T>
where
    T: TryFrom<M, Error = ConvertError>,
{
    Updates {
        stream,
        _model: PhantomData,
    }
}

/// The stream [`updates`] returns.
pub struct Updates<M, T> {
    stream: tonic::Streaming<M>,
    _model: PhantomData<fn() -> T>,
}

impl<M, T> std::fmt::Debug for Updates<M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

impl<M, T> Stream for Updates<M, T>
where
    T: TryFrom<M, Error = ConvertError>,
{
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx).map(|item| {
            item.map(|message| match message {
                Ok(message) => T::try_from(message).map_err(Error::Invalid),
                Err(status) => Err(Error::Status(status)),
            })
        })
    }
}
