//! Request bodies that can be sent more than once, for retries and mirrors.
//!
//! ```text
//!  client body ──► Replay (records up to MAX_REPLAY bytes as it streams)
//!                    ├─ body()     attempt 1 ──► pulls from the client, records
//!                    ├─ body()     attempt 2 ──► replays the record, then pulls on
//!                    └─ follower() mirror    ──► replays the record only; never pulls
//! ```
//!
//! Nothing is read ahead: the first attempt streams the client's body as it
//! arrives (a gRPC stream keeps working), keeping a copy while the total stays
//! within [`MAX_REPLAY`]. Past that the copy is dropped and the body can no
//! longer be replayed: the attempt that pulled past the limit continues
//! alone, every other copy fails. A mirror's copy (a follower) only ever
//! reads what an attempt already pulled, so a slow mirror never holds up the
//! client and never takes bytes from the attempt.
//!
//! The client's stream stays open while the [`Replay`] (held by the retry
//! loop) or an attempt's body is alive; once all of them are gone it is
//! dropped, and followers still waiting fail, so a mirror never keeps the
//! client's connection busy.

use crate::body::BoxError;
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

/// Request bodies up to this size are kept for replay.
pub const MAX_REPLAY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request body is larger than {MAX_REPLAY} bytes and cannot be replayed")]
    TooLarge,
    #[error("the request body failed while another copy was reading it")]
    SourceFailed,
    #[error("the client's request body is no longer available")]
    Gone,
}

/// The recording, shared by every copy.
#[derive(Debug)]
struct State<B> {
    source: Option<B>,
    frames: Vec<Recorded>,
    bytes: usize,
    /// The client's body has ended; `frames` holds all of it unless
    /// `owner` is set.
    ended: bool,
    /// Set when the body outgrew [`MAX_REPLAY`]: the copy that may go on.
    owner: Option<u64>,
    failed: bool,
    /// The [`Replay`] plus the attempts' bodies still alive: the client's
    /// stream is kept while any is.
    holders: usize,
    next_id: u64,
    /// Copies waiting for another one to pull the next frame.
    waiting: Vec<Waker>,
}

#[derive(Clone, Debug)]
enum Recorded {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl<B> State<B> {
    fn wake(&mut self) {
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }

    fn release(&mut self) {
        self.holders -= 1;
        if self.holders == 0 {
            self.source = None;
        }
        self.wake();
    }
}

/// The handle of the retry loop: makes copies of the body.
#[derive(Debug)]
pub struct Replay<B = Incoming> {
    state: Arc<Mutex<State<B>>>,
}

impl<B> Replay<B> {
    pub fn new(body: B) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                source: Some(body),
                frames: Vec::new(),
                bytes: 0,
                ended: false,
                owner: None,
                failed: false,
                holders: 1,
                next_id: 0,
                waiting: Vec::new(),
            })),
        }
    }

    /// A copy for an attempt: replays what was recorded, then goes on
    /// reading the client's body.
    pub fn body(&self) -> ReplayBody<B> {
        let mut s = self.state.lock();
        s.holders += 1;
        self.copy(&mut s, false)
    }

    /// A copy for a mirror: replays only what attempts pulled.
    pub fn follower(&self) -> ReplayBody<B> {
        let mut s = self.state.lock();
        self.copy(&mut s, true)
    }

    fn copy(&self, s: &mut State<B>, follower: bool) -> ReplayBody<B> {
        s.next_id += 1;
        ReplayBody {
            state: self.state.clone(),
            id: s.next_id,
            pos: 0,
            sent: 0,
            follower,
        }
    }

    /// Whether another attempt can send the whole body: it is within the
    /// limit and either entirely recorded, or no earlier attempt is still
    /// reading it.
    pub fn can_replay(&self) -> bool {
        let s = self.state.lock();
        s.owner.is_none() && !s.failed && (s.ended || s.holders == 1)
    }
}

impl<B> Drop for Replay<B> {
    fn drop(&mut self) {
        self.state.lock().release();
    }
}

/// One copy of a request body.
#[derive(Debug)]
pub struct ReplayBody<B = Incoming> {
    state: Arc<Mutex<State<B>>>,
    id: u64,
    /// Recorded frames already yielded.
    pos: usize,
    /// Data bytes already yielded.
    sent: usize,
    follower: bool,
}

impl<B> ReplayBody<B> {
    fn yield_frame(&mut self, r: Recorded) -> Frame<Bytes> {
        self.pos += 1;
        match r {
            Recorded::Data(b) => {
                self.sent += b.len();
                Frame::data(b)
            }
            Recorded::Trailers(t) => Frame::trailers(t),
        }
    }
}

impl<B> http_body::Body for ReplayBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let state = this.state.clone();
        let mut s = state.lock();
        if s.owner.is_some_and(|o| o != this.id) {
            return Poll::Ready(Some(Err(Error::TooLarge.into())));
        }
        if let Some(r) = s.frames.get(this.pos).cloned() {
            return Poll::Ready(Some(Ok(this.yield_frame(r))));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if s.failed {
            return Poll::Ready(Some(Err(Error::SourceFailed.into())));
        }
        if this.follower {
            if s.source.is_none() {
                return Poll::Ready(Some(Err(Error::Gone.into())));
            }
            s.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(Some(Err(Error::Gone.into())));
        };
        let frame = match Pin::new(&mut *source).poll_frame(cx) {
            Poll::Pending => {
                // Another copy may pull first and take the source's waker.
                s.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.wake();
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.wake();
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let at_end = source.is_end_stream();
        if s.owner.is_none() {
            let recorded = match frame.data_ref() {
                Some(d) => Some(Recorded::Data(d.clone())),
                None => frame.trailers_ref().cloned().map(Recorded::Trailers),
            };
            let len = frame.data_ref().map_or(0, Buf::remaining);
            if s.bytes + len > MAX_REPLAY {
                s.owner = Some(this.id);
                s.frames = Vec::new();
            } else if let Some(r) = recorded {
                s.bytes += len;
                s.frames.push(r);
                this.pos += 1;
            }
        }
        this.sent += frame.data_ref().map_or(0, Buf::remaining);
        s.ended |= at_end;
        s.wake();
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let s = self.state.lock();
        s.ended && s.owner.is_none_or(|o| o == self.id) && self.pos >= s.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.state.lock();
        match s.owner {
            None if s.ended => SizeHint::with_exact((s.bytes - self.sent) as u64),
            None if s.frames.is_empty() => {
                s.source.as_ref().map(|b| b.size_hint()).unwrap_or_default()
            }
            Some(o) if o == self.id => s.source.as_ref().map(|b| b.size_hint()).unwrap_or_default(),
            _ => SizeHint::default(),
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if self.follower {
            return;
        }
        s.release();
    }
}

#[cfg(test)]
mod tests;
