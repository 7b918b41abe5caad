//! Retries: which outcomes a route retries, how long to wait, and the
//! per-backend budget that caps them.
//!
//! - [`Policy`]: a rule's `retry` (HTTP status codes, or gRPC status codes
//!   read from a trailers-only answer), its attempts and backoff. Connection
//!   errors and attempts cut by `timeouts.backendRequest` are retried too.
//!   A rule without `retry` retries nothing (failure accrual steers later
//!   requests away from a broken endpoint).
//! - [`backoff`]: the wait before the n-th retry: the route's backoff
//!   (default [`DEFAULT_BACKOFF`]) doubling per retry up to
//!   [`MAX_BACKOFF_FACTOR`] times it, plus up to half again of jitter; never
//!   less than the route's backoff, as the spec requires.
//! - [`Budget`]: `XBackendTrafficPolicy`'s retry constraint. Retries may be
//!   at most `percent` % of the requests sent to the backend over the last
//!   `interval`, or `min_retry_count` per `min_retry_interval`, whichever
//!   allows more. When a retry is refused the client gets 503 (the spec's
//!   "MUST"), so a failing backend sees at most that share of extra load:
//!   no retry storm.

use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};
use tokio::time::Instant;
use trellis_policy::{GrpcRetry, HttpRetry, RetryBudget};

pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
pub const MAX_BACKOFF_FACTOR: u32 = 10;

/// What a rule retries.
#[derive(Clone, Copy, Debug)]
pub enum Policy<'a> {
    /// No `retry`.
    None,
    Http(&'a HttpRetry),
    Grpc(&'a GrpcRetry),
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response the rule does not retry.
    Final,
    /// A response with a status the rule retries.
    RetryableResponse,
    /// The connection could not be made: the request never left.
    ConnectFailed,
    /// The exchange broke after the request was (maybe) sent.
    Broken,
    /// `timeouts.backendRequest` cut the attempt.
    TimedOut,
}

impl Policy<'_> {
    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        match self {
            Policy::None => 0,
            Policy::Http(r) => r.attempts,
            Policy::Grpc(r) => r.attempts,
        }
    }

    pub fn base_backoff(&self) -> Duration {
        match self {
            Policy::None => Duration::ZERO,
            Policy::Http(r) => r.backoff.unwrap_or(DEFAULT_BACKOFF),
            Policy::Grpc(r) => r.backoff.unwrap_or(DEFAULT_BACKOFF),
        }
    }

    /// Whether the rule has a `retry` (and needs the body kept for replay).
    pub fn is_configured(&self) -> bool {
        !matches!(self, Policy::None)
    }

    /// How a response head classifies.
    pub fn response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        let retry = match self {
            Policy::None => false,
            Policy::Http(r) => r.codes.contains(&status.as_u16()),
            Policy::Grpc(r) => grpc_status(headers).is_some_and(|c| r.codes.contains(&c)),
        };
        if retry {
            Outcome::RetryableResponse
        } else {
            Outcome::Final
        }
    }

    /// Whether an outcome is retried (attempts and budget aside).
    pub fn retries(&self, outcome: Outcome) -> bool {
        outcome != Outcome::Final && self.is_configured()
    }
}

/// The `grpc-status` of a trailers-only answer (in the response head).
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    // Parsed once: this runs on every response (failure accrual).
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The wait before retry `n` (1 for the first retry); `random` in `0..1`.
pub fn backoff(base: Duration, n: u32, random: f64) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let doubled = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let capped = doubled.min(base.saturating_mul(MAX_BACKOFF_FACTOR));
    capped + capped.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// Slots the budget's interval is divided into.
const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// The slot's number since the epoch; counts belong to it.
    stamp: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// A backend's retry budget. Counting a request is a few relaxed atomics
/// (every request pays it); asking for a retry takes a short lock.
#[derive(Debug)]
pub struct Budget {
    config: RetryBudget,
    epoch: Instant,
    slot_len: Duration,
    slots: [Slot; SLOTS],
    /// The minimum rate: a token bucket of `min_retry_count` tokens.
    reserve: Mutex<(f64, Instant)>,
}

impl Budget {
    pub fn new(config: RetryBudget) -> Self {
        let slot_len = (config.interval / SLOTS as u32).max(Duration::from_millis(1));
        let now = Instant::now();
        Self {
            reserve: Mutex::new((f64::from(config.min_retry_count), now)),
            config,
            epoch: now,
            slot_len,
            slots: Default::default(),
        }
    }

    pub fn config(&self) -> &RetryBudget {
        &self.config
    }

    fn slot(&self) -> (u64, &Slot) {
        let elapsed = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64;
        let n = elapsed / self.slot_len.as_nanos() as u64 + 1;
        let slot = &self.slots[n as usize % SLOTS];
        let stamp = slot.stamp.load(Ordering::Relaxed);
        if stamp != n
            && slot
                .stamp
                .compare_exchange(stamp, n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        (n, slot)
    }

    /// Counts a request (not a retry) sent to the backend.
    pub fn deposit(&self) {
        self.slot().1.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks for one retry; `false` means the budget is spent.
    pub fn withdraw(&self) -> bool {
        let (now_slot, slot) = self.slot();
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            let stamp = s.stamp.load(Ordering::Relaxed);
            if stamp + (SLOTS as u64) > now_slot && stamp <= now_slot {
                requests += u64::from(s.requests.load(Ordering::Relaxed));
                retries += u64::from(s.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = (retries + 1) * 100 <= requests * u64::from(self.config.percent);
        if allowed || self.take_reserve() {
            slot.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    fn take_reserve(&self) -> bool {
        let count = f64::from(self.config.min_retry_count);
        if count == 0.0 || self.config.min_retry_interval.is_zero() {
            return false;
        }
        let now = Instant::now();
        let mut r = self.reserve.lock();
        let elapsed = now.saturating_duration_since(r.1).as_secs_f64();
        let rate = count / self.config.min_retry_interval.as_secs_f64();
        r.0 = (r.0 + elapsed * rate).min(count);
        r.1 = now;
        if r.0 >= 1.0 {
            r.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
