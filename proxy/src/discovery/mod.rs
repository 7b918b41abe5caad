//! Lazy discovery: the policy of each target the application actually talks
//! to, watched from the controller (or a policy file) and cached.
//!
//! ```text
//!  first connection to ip:port ──► watch task ──OutboundPolicies.Watch──► controller
//!                                     │ each update: resolve (balancers reused)
//!                                     ▼
//!                     Watch { ArcSwap<Resolved> }  ◄── every request loads it
//! ```
//!
//! The first connection to a target waits for its first answer (bounded by
//! [`FIRST_ANSWER_TIMEOUT`]). When the controller cannot be reached and the
//! target was never seen, the connection goes to its original destination
//! and the `discovery_unavailable_forwarded` metric counts it; once a policy
//! arrives it applies to new connections and requests. A policy already
//! cached keeps serving through any outage. Targets nobody used for
//! [`Config::idle_timeout`] are dropped with their watch.

mod controller;
pub mod file;

use crate::{metrics::Metrics, outbound::Resolved, upstream::Upstreams};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{sync::Notify, task::AbortHandle, time::Instant};
use trellis_policy::{InboundPolicy, OutboundPolicy, ResourceRef, Target};

pub use self::controller::{Controller, InvalidAddress};

/// How long a first connection waits for its target's policy.
pub const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Where policies come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The controller's discovery service.
    Controller(Controller),
    /// A YAML file of policies, reloaded when it changes.
    File(tokio::sync::watch::Receiver<Arc<file::PolicyFile>>),
    /// Nothing: every target goes to its original destination.
    None,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The client namespace and pod sent with outbound watches and used as
    /// the workload of inbound ones.
    pub workload: Option<ResourceRef>,
    pub idle_timeout: Duration,
}

/// The state of a watched target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No answer yet.
    Pending = 0,
    /// An answer (a policy, or "not a Service") is cached.
    Known = 1,
    /// The source could not be reached and nothing is cached.
    Unavailable = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Known,
            2 => State::Unavailable,
            _ => State::Pending,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Known => "known",
            State::Unavailable => "unavailable",
        }
    }
}

/// One watched value and its state; requests load it without a lock.
#[derive(Debug)]
pub struct Watch<T> {
    current: ArcSwap<T>,
    state: AtomicU8,
    changed: Notify,
    last_used: AtomicU64,
    task: Mutex<Option<AbortHandle>>,
}

impl<T> Watch<T> {
    pub(crate) fn new(initial: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            state: AtomicU8::new(State::Pending as u8),
            changed: Notify::new(),
            last_used: AtomicU64::new(0),
            task: Mutex::new(None),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<T> {
        self.current.load_full()
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn publish(&self, value: Arc<T>) {
        self.current.store(value);
        self.state.store(State::Known as u8, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn unavailable(&self) {
        if self.state() == State::Pending {
            self.state
                .store(State::Unavailable as u8, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    /// Waits until the first answer, an outage, or `timeout`.
    pub async fn settled(&self, timeout: Duration) -> State {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let state = self.state();
            if state != State::Pending {
                return state;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state();
            }
        }
    }
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

pub type OutboundWatch = Watch<Resolved>;
pub type InboundWatch = Watch<Option<InboundPolicy>>;

/// Readiness: the first policy connection is up (and, once the proxy holds
/// workload certificates, a certificate is held: [`Ready::set_identity`]).
#[derive(Debug)]
pub struct Ready {
    policy: AtomicBool,
    identity: AtomicBool,
}

impl Ready {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            policy: AtomicBool::new(false),
            identity: AtomicBool::new(true),
        })
    }

    pub fn set_policy(&self) {
        self.policy.store(true, Ordering::Release);
    }

    /// Whether a workload certificate is held (true while mTLS is not
    /// configured).
    pub fn set_identity(&self, held: bool) {
        self.identity.store(held, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.policy.load(Ordering::Acquire) && self.identity.load(Ordering::Acquire)
    }
}

/// The cache of watched targets.
#[derive(Debug)]
pub struct Discovery {
    source: Source,
    config: Config,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    epoch: Instant,
    outbound: Mutex<HashMap<Target, Arc<OutboundWatch>>>,
    inbound: Mutex<HashMap<u16, Arc<InboundWatch>>>,
}

impl Discovery {
    pub fn new(
        source: Source,
        config: Config,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        ready: &Arc<Ready>,
    ) -> Arc<Self> {
        match &source {
            Source::Controller(c) => c.spawn_readiness(ready.clone(), metrics.clone()),
            Source::File(_) | Source::None => ready.set_policy(),
        }
        let d = Arc::new(Self {
            source,
            config,
            upstreams,
            metrics,
            epoch: Instant::now(),
            outbound: Mutex::default(),
            inbound: Mutex::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&d)));
        d
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_secs()
    }

    /// The watch of a target, subscribing on first use.
    pub fn outbound(self: &Arc<Self>, target: Target) -> Arc<OutboundWatch> {
        let mut map = self.outbound.lock();
        if let Some(w) = map.get(&target) {
            w.last_used.store(self.now(), Ordering::Relaxed);
            return w.clone();
        }
        let w = Arc::new(Watch::new(Resolved::no_policy(target)));
        w.last_used.store(self.now(), Ordering::Relaxed);
        let task = match &self.source {
            Source::None => {
                w.publish(Arc::new(Resolved::no_policy(target)));
                None
            }
            Source::File(rx) => Some(tokio::spawn(file::watch_outbound(
                rx.clone(),
                target,
                Arc::downgrade(&w),
                self.upstreams.clone(),
                self.metrics.clone(),
            ))),
            Source::Controller(c) => Some(tokio::spawn(c.clone().watch_outbound(
                target,
                self.config.workload.clone(),
                Arc::downgrade(&w),
                self.upstreams.clone(),
                self.metrics.clone(),
            ))),
        };
        *w.task.lock() = task.map(|t| t.abort_handle());
        map.insert(target, w.clone());
        w
    }

    /// The inbound policy of one of the workload's ports, subscribing on
    /// first use. Without a workload name there is nothing to ask for.
    pub fn inbound(self: &Arc<Self>, port: u16) -> Arc<InboundWatch> {
        let mut map = self.inbound.lock();
        if let Some(w) = map.get(&port) {
            return w.clone();
        }
        let w = Arc::new(Watch::new(None));
        let task = match (&self.source, &self.config.workload) {
            (Source::Controller(c), Some(workload)) => Some(tokio::spawn(c.clone().watch_inbound(
                workload.clone(),
                port,
                Arc::downgrade(&w),
            ))),
            (Source::File(rx), _) => Some(tokio::spawn(file::watch_inbound(
                rx.clone(),
                port,
                Arc::downgrade(&w),
            ))),
            _ => {
                w.publish(Arc::new(None));
                None
            }
        };
        *w.task.lock() = task.map(|t| t.abort_handle());
        map.insert(port, w.clone());
        w
    }

    /// Brings the per-state target gauges up to date (before a scrape).
    pub fn refresh_metrics(&self) {
        self.count_targets(&self.outbound.lock());
    }

    fn count_targets(&self, map: &HashMap<Target, Arc<OutboundWatch>>) {
        for state in [State::Pending, State::Known, State::Unavailable] {
            let n = map.values().filter(|w| w.state() == state).count();
            self.metrics.targets(state.as_str(), n as i64);
        }
    }

    /// Every cached outbound policy with its endpoints, for `/config`.
    pub fn snapshot(&self) -> serde_json::Value {
        let outbound: Vec<_> = self
            .outbound
            .lock()
            .iter()
            .map(|(t, w)| {
                let r = w.load_full();
                serde_json::json!({
                    "target": t.0.to_string(),
                    "state": w.state(),
                    "policy": r.policy.as_deref(),
                    "endpoints": r.endpoints_json(),
                })
            })
            .collect();
        let inbound: Vec<_> = self
            .inbound
            .lock()
            .iter()
            .map(|(port, w)| {
                serde_json::json!({
                    "port": port,
                    "state": w.state(),
                    "policy": w.load_full().as_ref().as_ref(),
                })
            })
            .collect();
        serde_json::json!({ "outbound": outbound, "inbound": inbound })
    }
}

/// Drops targets nobody used for the idle timeout.
async fn sweep(d: std::sync::Weak<Discovery>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(d) = d.upgrade() else { return };
        let now = d.now();
        let idle = d.config.idle_timeout.as_secs();
        let mut map = d.outbound.lock();
        // Held only by the map: no connection uses it.
        map.retain(|_, w| {
            Arc::strong_count(w) > 1
                || now.saturating_sub(w.last_used.load(Ordering::Relaxed)) < idle
        });
        d.count_targets(&map);
    }
}

/// Applies an outbound answer to a watch: resolves it against the previous
/// value so balancers, endpoint loads and connections carry over.
fn apply_outbound(
    w: &OutboundWatch,
    target: Target,
    policy: Option<OutboundPolicy>,
    upstreams: &Upstreams,
    metrics: &Metrics,
) {
    let prev = w.load_full();
    let next = Resolved::build(target, policy.map(Arc::new), Some(&prev), upstreams);
    w.publish(Arc::new(next));
    metrics.update_applied();
}

/// Exponential backoff with jitter, 100 ms doubling to 10 s.
#[derive(Debug, Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let base = 100u64 << self.0.min(7);
        self.0 += 1;
        let ms = base.min(10_000);
        Duration::from_millis(ms / 2 + fastrand::u64(..=ms / 2))
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
}
