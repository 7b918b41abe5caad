//! Prometheus metrics of the proxy, served as text on the admin port.
//!
//! Label values are `Arc<str>` prepared when a policy is resolved, so
//! recording a request clones pointers and allocates nothing; the hot paths
//! go further and hold a [`RouteMetrics`] per label set (per route rule and
//! backend, per inbound port), so a request's series are found without
//! hashing label strings or taking the families' locks.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    fmt::Write,
    sync::{Arc, OnceLock},
    time::Duration,
};

/// A label value shared by every request that carries it.
pub type Name = Arc<str>;

/// Label values used on every request, allocated once.
pub mod fixed {
    use super::Name;
    use std::sync::LazyLock;

    macro_rules! names {
        ($($f:ident = $v:literal),* $(,)?) => {$(
            pub fn $f() -> Name {
                static N: LazyLock<Name> = LazyLock::new(|| Name::from($v));
                N.clone()
            }
        )*};
    }

    names! {
        empty = "",
        none = "none",
        default_route = "default",
        original_destination = "original-destination",
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    /// North-south traffic through a gateway listener.
    Gateway,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        e.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Gateway => "gateway",
        })
    }
}

/// Where a request went: direction, target Service, route and backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub direction: Direction,
    pub service: Name,
    pub route: Name,
    pub backend: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    service: Name,
    route: Name,
    backend: Name,
    status: u16,
}

/// Route labels plus one more dimension.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKindLabels {
    direction: Direction,
    service: Name,
    route: Name,
    backend: Name,
    /// `success`/`failure`, `request`/`backend_request`, or
    /// `sent`/`failed`/`dropped`, depending on the metric.
    kind: &'static str,
}

impl RouteKindLabels {
    fn new(l: &RouteLabels, kind: &'static str) -> Self {
        Self {
            direction: l.direction,
            service: l.service.clone(),
            route: l.route.clone(),
            backend: l.backend.clone(),
            kind,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: Direction,
    pub service: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: Direction,
    service: Name,
    /// `sent` (client to server) or `received`.
    flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    direction: Direction,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 20,
    ))
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Metrics other parts register under their full names (mesh TLS and
    /// identity from `trellis-identity-client`, inbound admission).
    extra: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    outcomes: Family<RouteKindLabels, Counter>,
    retries: Family<RouteLabels, Counter>,
    budget_exhausted: Family<RouteLabels, Counter>,
    timeouts: Family<RouteKindLabels, Counter>,
    mirrors: Family<RouteKindLabels, Counter>,
    ejections: Family<BackendLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_open: Family<TcpLabels, Gauge>,
    tcp_bytes: Family<BytesLabels, Counter>,
    detected: Family<ProtocolLabels, Counter>,
    controller_connected: Gauge,
    targets: Family<StateLabels, Gauge>,
    updates: Counter,
    invalid_updates: Counter,
    unavailable_forwarded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by direction, target Service, route, backend and status code",
            requests.clone(),
        );
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time to the response head of HTTP requests",
            latency.clone(),
        );
        let outcomes = Family::<RouteKindLabels, Counter>::default();
        registry.register(
            "responses",
            "HTTP responses by route rule and backend, classified (kind): success, or failure (5xx, a gRPC error status, or no response)",
            outcomes.clone(),
        );
        let retries = Family::<RouteLabels, Counter>::default();
        registry.register(
            "retries",
            "Retries sent, by route rule and backend",
            retries.clone(),
        );
        let budget_exhausted = Family::<RouteLabels, Counter>::default();
        registry.register(
            "retry_budget_exhausted",
            "Retries refused because the backend's retry budget was spent (answered 503)",
            budget_exhausted.clone(),
        );
        let timeouts = Family::<RouteKindLabels, Counter>::default();
        registry.register(
            "timeouts",
            "Timeouts by route rule, backend and kind: request (answered 504) or backend_request (one attempt)",
            timeouts.clone(),
        );
        let mirrors = Family::<RouteKindLabels, Counter>::default();
        registry.register(
            "mirror_requests",
            "Mirrored requests by route rule, mirror backend and kind: sent, failed, or dropped (too many in flight)",
            mirrors.clone(),
        );
        let ejections = Family::<BackendLabels, Counter>::default();
        registry.register(
            "endpoint_ejections",
            "Endpoints taken out of balancing by failure accrual, by backend",
            ejections.clone(),
        );
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        registry.register(
            "tcp_connections_opened",
            "TCP connections forwarded",
            tcp_opened.clone(),
        );
        let tcp_open = Family::<TcpLabels, Gauge>::default();
        registry.register(
            "tcp_connections_open",
            "TCP connections being forwarded",
            tcp_open.clone(),
        );
        let tcp_bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "tcp_bytes",
            "Bytes of opaque TCP connections",
            tcp_bytes.clone(),
        );
        let detected = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "connections_detected",
            "Accepted connections by the protocol the proxy read them as",
            detected.clone(),
        );
        let controller_connected = Gauge::default();
        registry.register(
            "discovery_controller_connected",
            "1 while the proxy holds a connection to the controller",
            controller_connected.clone(),
        );
        let targets = Family::<StateLabels, Gauge>::default();
        registry.register(
            "discovery_targets",
            "Targets whose policy the proxy watches, by state",
            targets.clone(),
        );
        let updates = Counter::default();
        registry.register(
            "discovery_updates",
            "Policy updates applied",
            updates.clone(),
        );
        let invalid_updates = Counter::default();
        registry.register(
            "discovery_invalid_updates",
            "Policy updates refused because they did not convert",
            invalid_updates.clone(),
        );
        let unavailable_forwarded = Counter::default();
        registry.register(
            "discovery_unavailable_forwarded",
            "Connections to never-seen targets forwarded to their original destination while the controller was unreachable",
            unavailable_forwarded.clone(),
        );
        Self {
            registry,
            extra: Registry::default(),
            requests,
            latency,
            outcomes,
            retries,
            budget_exhausted,
            timeouts,
            mirrors,
            ejections,
            tcp_opened,
            tcp_open,
            tcp_bytes,
            detected,
            controller_connected,
            targets,
            updates,
            invalid_updates,
            unavailable_forwarded,
        }
    }

    /// The proxy's metrics plus those `register` adds under their own names.
    pub fn with_extra(register: impl FnOnce(&mut Registry)) -> Self {
        let mut m = Self::new();
        register(&mut m.extra);
        m
    }

    pub fn request(&self, labels: &RouteLabels, status: u16, elapsed: Duration) {
        self.requests_of(labels, status).inc();
        self.latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    fn requests_of(&self, labels: &RouteLabels, status: u16) -> Counter {
        let RouteLabels {
            direction,
            service,
            route,
            backend,
        } = labels;
        self.requests
            .get_or_create(&RequestLabels {
                direction: *direction,
                service: service.clone(),
                route: route.clone(),
                backend: backend.clone(),
                status,
            })
            .clone()
    }

    /// Classifies a response of a routed request.
    pub fn outcome(&self, labels: &RouteLabels, success: bool) {
        let kind = if success { "success" } else { "failure" };
        self.outcomes
            .get_or_create(&RouteKindLabels::new(labels, kind))
            .inc();
    }

    pub fn retry(&self, labels: &RouteLabels) {
        self.retries.get_or_create(labels).inc();
    }

    pub fn budget_exhausted(&self, labels: &RouteLabels) {
        self.budget_exhausted.get_or_create(labels).inc();
    }

    /// `kind` is `request` or `backend_request`.
    pub fn timeout(&self, labels: &RouteLabels, kind: &'static str) {
        self.timeouts
            .get_or_create(&RouteKindLabels::new(labels, kind))
            .inc();
    }

    /// `labels.backend` is the mirror's; `kind` is `sent`, `failed` or
    /// `dropped`.
    pub fn mirror(&self, labels: &RouteLabels, kind: &'static str) {
        self.mirrors
            .get_or_create(&RouteKindLabels::new(labels, kind))
            .inc();
    }

    pub fn ejection(&self, backend: &Name) {
        self.ejections
            .get_or_create(&BackendLabels {
                backend: backend.clone(),
            })
            .inc();
    }

    /// Counts an opened TCP connection; the guard counts it closed.
    pub fn tcp_open(self: &Arc<Self>, labels: TcpLabels) -> TcpGuard {
        self.tcp_opened.get_or_create(&labels).inc();
        self.tcp_open.get_or_create(&labels).inc();
        TcpGuard {
            metrics: self.clone(),
            labels,
        }
    }

    pub fn detected(&self, direction: Direction, protocol: &'static str) {
        self.detected
            .get_or_create(&ProtocolLabels {
                direction,
                protocol,
            })
            .inc();
    }

    pub fn controller_connected(&self, up: bool) {
        self.controller_connected.set(i64::from(up));
    }

    pub fn targets(&self, state: &'static str, n: i64) {
        self.targets.get_or_create(&StateLabels { state }).set(n);
    }

    pub fn update_applied(&self) {
        self.updates.inc();
    }

    pub fn update_invalid(&self) {
        self.invalid_updates.inc();
    }

    pub fn unavailable_forwarded(&self) {
        self.unavailable_forwarded.inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::with_capacity(16 * 1024);
        let encoded = text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &self.extra))
            .and_then(|()| text::encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
            let _ = writeln!(out, "# encoding metrics failed");
        }
        out
    }
}

/// Statuses whose request counters a [`RouteMetrics`] keeps at hand; the
/// others are found in the family at each request.
const COMMON_STATUSES: [u16; 8] = [200, 201, 204, 304, 404, 500, 502, 503];

/// The series of one label set, resolved once (on first use) and kept
/// where the hot path finds it: recording a request then hashes no label
/// strings and takes no family lock.
#[derive(Debug)]
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    labels: RouteLabels,
    latency: Histogram,
    success: OnceLock<Counter>,
    failure: OnceLock<Counter>,
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl RouteMetrics {
    pub fn new(metrics: &Arc<Metrics>, labels: RouteLabels) -> Self {
        Self {
            latency: metrics.latency.get_or_create(&labels).clone(),
            metrics: metrics.clone(),
            labels,
            success: OnceLock::new(),
            failure: OnceLock::new(),
            statuses: Default::default(),
        }
    }

    pub fn labels(&self) -> &RouteLabels {
        &self.labels
    }

    /// As [`Metrics::request`].
    pub fn request(&self, status: u16, elapsed: Duration) {
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.statuses[i]
                .get_or_init(|| self.metrics.requests_of(&self.labels, status))
                .inc(),
            None => self.metrics.requests_of(&self.labels, status).inc(),
        };
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// As [`Metrics::outcome`].
    pub fn outcome(&self, success: bool) {
        let (slot, kind) = if success {
            (&self.success, "success")
        } else {
            (&self.failure, "failure")
        };
        slot.get_or_init(|| {
            self.metrics
                .outcomes
                .get_or_create(&RouteKindLabels::new(&self.labels, kind))
                .clone()
        })
        .inc();
    }
}

/// An open TCP connection, counted until dropped.
#[derive(Debug)]
pub struct TcpGuard {
    metrics: Arc<Metrics>,
    labels: TcpLabels,
}

impl TcpGuard {
    pub fn bytes(&self, sent: u64, received: u64) {
        for (flow, n) in [("sent", sent), ("received", received)] {
            self.metrics
                .tcp_bytes
                .get_or_create(&BytesLabels {
                    direction: self.labels.direction,
                    service: self.labels.service.clone(),
                    flow,
                })
                .inc_by(n);
        }
    }
}

impl Drop for TcpGuard {
    fn drop(&mut self) {
        self.metrics.tcp_open.get_or_create(&self.labels).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled() {
        let m = Metrics::new();
        let labels = RouteLabels {
            direction: Direction::Outbound,
            service: "shop/web:80".into(),
            route: "HTTPRoute shop/split".into(),
            backend: "shop/web-v2:80".into(),
        };
        m.request(&labels, 200, Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains(r#"trellis_requests_total{direction="outbound",service="shop/web:80",route="HTTPRoute shop/split",backend="shop/web-v2:80",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("trellis_request_duration_seconds_bucket"));
    }

    #[test]
    fn resolved_series_are_the_families_series() {
        let m = Arc::new(Metrics::new());
        let labels = RouteLabels {
            direction: Direction::Inbound,
            service: "8080".into(),
            route: "".into(),
            backend: "8080".into(),
        };
        let series = RouteMetrics::new(&m, labels.clone());
        series.request(200, Duration::from_millis(1));
        series.request(200, Duration::from_millis(1));
        series.request(418, Duration::from_millis(1));
        m.request(&labels, 200, Duration::from_millis(1));
        series.outcome(true);
        series.outcome(false);
        m.outcome(&labels, false);
        let text = m.encode();
        let base = r#"direction="inbound",service="8080",route="",backend="8080""#;
        for want in [
            format!(r#"trellis_requests_total{{{base},status="200"}} 3"#),
            format!(r#"trellis_requests_total{{{base},status="418"}} 1"#),
            format!(r#"trellis_request_duration_seconds_count{{{base}}} 4"#),
            format!(r#"trellis_responses_total{{{base},kind="success"}} 1"#),
            format!(r#"trellis_responses_total{{{base},kind="failure"}} 2"#),
        ] {
            assert!(text.contains(&want), "{want} in {text}");
        }
    }
}
