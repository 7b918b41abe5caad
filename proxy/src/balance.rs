//! Load balancing: power of two choices over peak-EWMA latency.
//!
//! Each endpoint keeps an exponentially weighted moving average of its
//! response times that jumps up at once on a slow response (the "peak") and
//! decays back over [`DECAY`]. Its cost is that average times the requests
//! in flight plus one. A pick draws two distinct endpoints at random and takes
//! the cheaper one: nearly as good as scanning every endpoint, O(1), and
//! with no lock — the endpoint list is swapped atomically when the policy
//! changes, so requests in flight keep the endpoints they picked.

use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// How fast a peak is forgotten.
pub const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint that has not answered yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The load of one endpoint. Updates are racy by design (relaxed atomics):
/// a lost update skews one estimate slightly, a lock would cost every request.
#[derive(Debug)]
pub struct Load {
    epoch: Instant,
    /// f64 bits: the moving average, in nanoseconds.
    ewma: AtomicU64,
    /// Nanoseconds since `epoch` of the last update.
    stamp: AtomicU64,
    pending: AtomicU32,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            ewma: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(0),
            pending: AtomicU32::new(0),
        }
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }

    /// The current cost: decayed latency times requests in flight plus one.
    pub fn cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let pending = self.pending.load(Ordering::Relaxed);
        ewma * f64::from(pending + 1)
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the handle is finished or dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self.clone(),
            start: self.now(),
            done: false,
        }
    }

    fn observe(&self, rtt_ns: f64, now: u64) {
        let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.swap(now, Ordering::Relaxed)) as f64;
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            prev * w + rtt_ns * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The average in nanoseconds, for `/config`.
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma.load(Ordering::Relaxed))
    }
}

/// A request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
    start: u64,
    done: bool,
}

impl InFlight {
    /// Records the response time (response head received).
    pub fn finish(mut self) {
        self.complete();
    }

    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            let now = self.load.now();
            self.load
                .observe(now.saturating_sub(self.start) as f64, now);
            self.load.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.complete();
    }
}

/// The ready endpoints of one backend.
#[derive(Debug, Default)]
pub struct Balancer {
    endpoints: ArcSwap<Vec<Arc<Upstream>>>,
}

impl Balancer {
    pub fn new(endpoints: Vec<Arc<Upstream>>) -> Self {
        Self {
            endpoints: ArcSwap::from_pointee(endpoints),
        }
    }

    /// Replaces the endpoint set; requests in flight keep theirs.
    pub fn update(&self, endpoints: Vec<Arc<Upstream>>) {
        self.endpoints.store(Arc::new(endpoints));
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.endpoints.load_full()
    }

    /// Two random choices, the cheaper wins; `None` with no endpoints.
    /// Endpoints that failure accrual took out are left aside unless every
    /// endpoint is out: then all are candidates, so requests are still tried.
    pub fn pick(&self) -> Option<Arc<Upstream>> {
        let eps = self.endpoints.load();
        match eps.len() {
            0 => None,
            1 => Some(eps[0].clone()),
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (&eps[a], &eps[b]);
                if ea.accrual.is_suspect() || eb.accrual.is_suspect() {
                    return Some(pick_available(&eps).clone());
                }
                Some(cheaper(ea, eb).clone())
            }
        }
    }
}

impl Balancer {
    /// A pick for a retry: another endpoint than `previous` when there is
    /// one (preferring endpoints in balancing), since the one that just
    /// failed is the likeliest to fail again — and with a fast failure it
    /// would even look the cheapest.
    pub fn pick_other(&self, previous: &Arc<Upstream>) -> Option<Arc<Upstream>> {
        let picked = self.pick()?;
        if !Arc::ptr_eq(&picked, previous) {
            return Some(picked);
        }
        let eps = self.endpoints.load();
        let n = eps.len();
        let start = fastrand::usize(..n);
        let others = || {
            (0..n)
                .map(|i| &eps[(start + i) % n])
                .filter(|e| !Arc::ptr_eq(e, previous))
        };
        others()
            .find(|e| e.accrual.is_available())
            .or_else(|| others().next())
            .cloned()
            .or(Some(picked))
    }
}

fn cheaper<'a>(a: &'a Arc<Upstream>, b: &'a Arc<Upstream>) -> &'a Arc<Upstream> {
    if b.load.cost() < a.load.cost() { b } else { a }
}

/// P2C among the endpoints in balancing (all of them when none is): the
/// slow path, taken only when a drawn endpoint was ejected at some point.
fn pick_available(eps: &[Arc<Upstream>]) -> &Arc<Upstream> {
    let available = eps.iter().filter(|e| e.accrual.is_available()).count();
    let nth = |k: usize| -> &Arc<Upstream> {
        if available == 0 {
            &eps[k]
        } else {
            eps.iter()
                .filter(|e| e.accrual.is_available())
                .nth(k)
                .unwrap_or(&eps[0])
        }
    };
    let n = if available == 0 { eps.len() } else { available };
    if n == 1 {
        return nth(0);
    }
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    cheaper(nth(a), nth(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstreams;

    fn upstreams(n: u8) -> Vec<Arc<Upstream>> {
        let pool = Upstreams::plain(15106);
        (0..n)
            .map(|i| pool.direct(format!("10.0.0.{i}:80").parse().unwrap()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_raises_the_cost_and_decays() {
        let load = Arc::new(Load::new());
        let base = load.cost();
        let r = load.start();
        tokio::time::advance(Duration::from_secs(1)).await;
        r.finish();
        assert!(load.cost() > base * 10.0, "a 1 s response is a peak");
        let peak = load.cost();
        tokio::time::advance(Duration::from_secs(30)).await;
        let r = load.start();
        tokio::time::advance(Duration::from_millis(1)).await;
        r.finish();
        assert!(load.cost() < peak / 10.0, "the peak decays");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_raise_the_cost() {
        let load = Arc::new(Load::new());
        let base = load.cost();
        let a = load.start();
        assert_eq!(load.cost(), base * 2.0);
        drop(a);
        assert_eq!(load.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_avoids_a_slow_endpoint() {
        let eps = upstreams(2);
        let slow = eps[0].load.start();
        tokio::time::advance(Duration::from_secs(2)).await;
        slow.finish();
        let b = Balancer::new(eps.clone());
        for _ in 0..100 {
            assert_eq!(b.pick().unwrap().addr, eps[1].addr);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_endpoints_are_left_aside_unless_all_are() {
        let eps = upstreams(3);
        let b = Balancer::new(eps.clone());
        let eject = |u: &Upstream| {
            for _ in 0..crate::accrual::CONSECUTIVE_FAILURES {
                u.accrual.failure();
            }
            assert!(!u.accrual.is_available());
        };
        eject(&eps[0]);
        eject(&eps[1]);
        for _ in 0..100 {
            assert_eq!(b.pick().unwrap().addr, eps[2].addr);
        }
        eject(&eps[2]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(b.pick().unwrap().addr);
        }
        assert_eq!(seen.len(), 3, "with every endpoint out, all are tried");
        tokio::time::advance(crate::accrual::MAX_BACKOFF * 2).await;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(b.pick().unwrap().addr);
        }
        assert_eq!(seen.len(), 3, "probed back in after the backoff");
    }

    #[tokio::test]
    async fn a_retry_picks_another_endpoint_when_there_is_one() {
        let eps = upstreams(3);
        let b = Balancer::new(eps.clone());
        for _ in 0..100 {
            let other = b.pick_other(&eps[1]).unwrap();
            assert!(!Arc::ptr_eq(&other, &eps[1]));
        }
        let one = Balancer::new(vec![eps[0].clone()]);
        assert!(Arc::ptr_eq(&one.pick_other(&eps[0]).unwrap(), &eps[0]));
    }

    #[tokio::test]
    async fn picks_spread_over_equal_endpoints() {
        let eps = upstreams(4);
        let b = Balancer::new(eps.clone());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(b.pick().unwrap().addr);
        }
        assert_eq!(seen.len(), 4);
        b.update(vec![]);
        assert!(b.pick().is_none());
    }
}
