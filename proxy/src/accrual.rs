//! Failure accrual: an endpoint that fails [`CONSECUTIVE_FAILURES`] times in
//! a row is taken out of balancing for a backoff that doubles with each
//! ejection (from [`MIN_BACKOFF`] to [`MAX_BACKOFF`], with jitter). When the
//! backoff is over the endpoint is balanced again: one success puts it fully
//! back, one more failure takes it out for longer. The balancer still picks
//! ejected endpoints when every endpoint of a backend is out, so requests
//! are tried rather than failed fast.
//!
//! A failure is a connection error, an attempt that timed out, or a 5xx
//! response (for gRPC, `UNAVAILABLE` in a trailers-only answer). State is a
//! few relaxed atomics per endpoint: concurrent outcomes may race, which only
//! shifts an ejection by a request.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};
use tokio::time::Instant;

pub const CONSECUTIVE_FAILURES: u32 = 7;
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The failure record of one endpoint.
#[derive(Debug)]
pub struct Accrual {
    epoch: Instant,
    consecutive: AtomicU32,
    /// Ejections since the last success (the backoff's exponent).
    ejections: AtomicU32,
    /// Nanoseconds since `epoch` until which the endpoint is out; 0 when in.
    until: AtomicU64,
}

impl Default for Accrual {
    fn default() -> Self {
        Self::new()
    }
}

impl Accrual {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }

    /// Whether balancing may pick the endpoint.
    pub fn is_available(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until == 0 || self.now() >= until
    }

    /// Whether the endpoint was ever ejected and not yet proven healthy
    /// again (cheap: no clock read).
    pub fn is_suspect(&self) -> bool {
        self.until.load(Ordering::Relaxed) != 0
    }

    pub fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.until.load(Ordering::Relaxed) != 0 {
            self.until.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns the backoff when it ejects the endpoint.
    pub fn failure(&self) -> Option<Duration> {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < CONSECUTIVE_FAILURES || !self.is_available() {
            // Not enough yet, or already out (a request that was in flight
            // when it was ejected).
            return None;
        }
        let level = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = backoff(level, fastrand::f64());
        let until = self.now() + backoff.as_nanos() as u64;
        self.until.store(until.max(1), Ordering::Relaxed);
        Some(backoff)
    }
}

/// The backoff of the `level`-th ejection in a row: doubling from
/// [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`], then up to half of it again
/// as jitter (`random` in `0..1`), so endpoints ejected together do not come
/// back together.
pub fn backoff(level: u32, random: f64) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1u32 << level.min(16))
        .min(MAX_BACKOFF);
    base + base.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        assert_eq!(backoff(0, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(12));
        assert_eq!(backoff(10, 0.0), MAX_BACKOFF);
        assert_eq!(backoff(40, 0.5), MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_a_success_restores() {
        let a = Accrual::new();
        for _ in 1..CONSECUTIVE_FAILURES {
            assert_eq!(a.failure(), None);
            assert!(a.is_available());
        }
        let first = a.failure().expect("the threshold ejects");
        assert!(!a.is_available());
        assert!(a.failure().is_none(), "already out");
        tokio::time::advance(first).await;
        assert!(a.is_available(), "probed back in after the backoff");
        let second = a.failure().expect("one more failure ejects again");
        assert!(second >= 2 * MIN_BACKOFF, "{second:?} doubles");
        tokio::time::advance(second).await;
        a.success();
        assert!(a.is_available() && !a.is_suspect());
        for _ in 1..CONSECUTIVE_FAILURES {
            assert_eq!(a.failure(), None, "a success resets the count");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn interleaved_successes_never_eject() {
        let a = Accrual::new();
        for _ in 0..100 {
            assert_eq!(a.failure(), None);
            a.success();
        }
        assert!(a.is_available());
    }
}
