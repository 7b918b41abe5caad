//! A token bucket per caller address. It runs before the token is checked,
//! so a flood from one pod neither reaches the TokenReview API nor starves
//! the others; a proxy renews about once a day, so a burst of ten and one
//! request every six seconds after that leave room for restarts and retries.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets kept before idle (full) ones are forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimit {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimit {
    /// `burst` requests at once, then one more per `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let earned =
            now.saturating_duration_since(bucket.at).as_secs_f64() / self.refill.as_secs_f64();
        (bucket.tokens + earned).min(self.burst)
    }

    /// Takes one request from `caller`'s bucket; `false` when it is empty.
    pub fn allow(&self, caller: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens < 1.0 {
            return false;
        }
        *bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_interval() {
        let limit = RateLimit::new(3, Duration::from_secs(6));
        let pod: IpAddr = "198.18.0.7".parse().unwrap();
        let other: IpAddr = "198.18.0.8".parse().unwrap();
        assert!((0..3).all(|_| limit.allow(pod)));
        assert!(!limit.allow(pod));
        assert!(limit.allow(other), "another caller has its own bucket");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!limit.allow(pod));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(limit.allow(pod));
        assert!(!limit.allow(pod));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!((0..3).all(|_| limit.allow(pod)), "refills up to the burst");
        assert!(!limit.allow(pod));
    }
}
