//! The controller's Prometheus metrics, served on the admin server's
//! `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    streams: Family<ServiceLabel, Gauge>,
    updates: Family<ServiceLabel, Counter>,
    objects: Family<KindLabel, Gauge>,
    index_changes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("trellis_controller");
        let streams = Family::<ServiceLabel, Gauge>::default();
        let updates = Family::<ServiceLabel, Counter>::default();
        let objects = Family::<KindLabel, Gauge>::default();
        let index_changes = Gauge::default();
        registry.register("streams", "Open discovery streams", streams.clone());
        registry.register("updates", "Policy updates sent to proxies", updates.clone());
        registry.register("objects", "Objects in the index, by kind", objects.clone());
        registry.register(
            "index_changes",
            "Changes applied to the index",
            index_changes.clone(),
        );
        Self {
            registry,
            streams,
            updates,
            objects,
            index_changes,
        }
    }
}

impl Metrics {
    pub fn stream_opened(&self, service: &'static str) {
        self.streams.get_or_create(&ServiceLabel { service }).inc();
    }

    pub fn stream_closed(&self, service: &'static str) {
        self.streams.get_or_create(&ServiceLabel { service }).dec();
    }

    pub fn update_sent(&self, service: &'static str) {
        self.updates.get_or_create(&ServiceLabel { service }).inc();
    }

    /// Refreshes the gauges that mirror the index.
    pub fn observe(&self, index: &crate::index::Index) {
        for kind in crate::objects::Kind::ALL {
            let n = i64::try_from(index.keys(kind).len()).unwrap_or(i64::MAX);
            self.objects
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .set(n);
        }
        let changes = *index.changes().borrow();
        self.index_changes
            .set(i64::try_from(changes).unwrap_or(i64::MAX));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
