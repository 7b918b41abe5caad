//! The one response body type of the proxy: a body streamed from upstream
//! (pooled or not) or a small local answer. An enum rather than a boxed
//! trait object so the hot path allocates nothing for it.

use crate::client::PooledBody;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

#[derive(Debug)]
pub enum Body {
    /// A local answer (error pages, admin responses); `None` once sent.
    Full(Option<Bytes>),
    Incoming(Incoming),
    Pooled(PooledBody),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn text(s: impl Into<Bytes>) -> Self {
        let b = s.into();
        Body::Full((!b.is_empty()).then_some(b))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx),
            Body::Pooled(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Incoming(b) => b.is_end_stream(),
            Body::Pooled(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Pooled(b) => b.size_hint(),
        }
    }
}
