//! The proxy's body types. Enums rather than boxed trait objects so the hot
//! path allocates nothing for them.
//!
//! - [`Body`], every response body: streamed from upstream (pooled or not),
//!   a small local answer, or either of those cut off at a deadline (the
//!   route's request timeout covers the whole response).
//! - [`ReqBody`], every request body sent upstream: none, the client's
//!   stream as it arrives, or a [`ReplayBody`] that can be sent again (for
//!   retries and mirrors).

use crate::{client::PooledBody, replay::ReplayBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::time::{Instant, Sleep};

/// The error of a body: the upstream's, or one of the proxy's own (a
/// deadline, a body that could not be replayed).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the response was not complete within the route's timeout")]
pub struct DeadlineExceeded;

#[derive(Debug)]
pub enum Body {
    /// A local answer (error pages, admin responses); `None` once sent.
    Full(Option<Bytes>),
    Incoming(Incoming),
    Pooled(PooledBody),
    /// A body that fails once its deadline passes.
    Deadline(Box<Deadline>),
}

/// A body and the moment it must have ended.
#[derive(Debug)]
pub struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn text(s: impl Into<Bytes>) -> Self {
        let b = s.into();
        Body::Full((!b.is_empty()).then_some(b))
    }

    /// This body, failing with [`DeadlineExceeded`] if it has not ended by
    /// `at`. A body already at its end is returned as it is.
    pub fn with_deadline(self, at: Instant) -> Self {
        if http_body::Body::is_end_stream(&self) {
            return self;
        }
        Body::Deadline(Box::new(Deadline {
            inner: self,
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Deadline(d) => {
                if let Poll::Ready(frame) = Pin::new(&mut d.inner).poll_frame(cx) {
                    return Poll::Ready(frame);
                }
                match d.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(DeadlineExceeded.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Incoming(b) => b.is_end_stream(),
            Body::Pooled(b) => b.is_end_stream(),
            Body::Deadline(d) => d.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Pooled(b) => b.size_hint(),
            Body::Deadline(d) => d.inner.size_hint(),
        }
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body (most `GET`s): trivially sent again.
    Empty,
    /// The client's body, streamed once.
    Incoming(Incoming),
    /// A body that records what it streams so it can be sent again.
    Replay(ReplayBody),
}

impl From<Incoming> for ReqBody {
    fn from(b: Incoming) -> Self {
        ReqBody::Incoming(b)
    }
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::Replay(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Replay(b) => b.size_hint(),
        }
    }
}
