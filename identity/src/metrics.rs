//! The identity service's metrics, served on its admin port:
//!
//! - `trellis_identity_certificates_issued_total`
//! - `trellis_identity_certificates_refused_total{reason}`
//! - `trellis_identity_ca_expiry_timestamp_seconds{certificate="anchor"|"issuer"}`
//! - `trellis_identity_trust_anchors`: anchors in the published bundle (2
//!   during a rotation)

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::SystemTime;

use crate::ca::Authority;

/// Why a request was refused, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated,
    PermissionDenied,
    InvalidCsr,
    RateLimited,
    Unavailable,
    Internal,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidCsr => "invalid_csr",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    certificate: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    issued: Counter,
    refused: Family<RefusalLabels, Counter>,
    expiry: Family<CertLabels, Gauge>,
    anchors: Gauge,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl CaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trellis_identity_certificates_issued",
            "Workload certificates issued",
            self.issued.clone(),
        );
        registry.register(
            "trellis_identity_certificates_refused",
            "Certificate requests refused, by reason",
            self.refused.clone(),
        );
        registry.register(
            "trellis_identity_ca_expiry_timestamp_seconds",
            "notAfter of the CA's trust anchor and issuing intermediate",
            self.expiry.clone(),
        );
        registry.register(
            "trellis_identity_trust_anchors",
            "Trust anchors in the published bundle",
            self.anchors.clone(),
        );
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn issued_count(&self) -> u64 {
        self.issued.get()
    }

    pub fn refused_count(&self, reason: Refusal) -> u64 {
        self.refused.get_or_create(&RefusalLabels { reason }).get()
    }

    /// Follows the authority now in use.
    pub fn authority(&self, authority: &Authority) {
        self.expiry
            .get_or_create(&CertLabels {
                certificate: "anchor",
            })
            .set(unix(authority.anchor_not_after()));
        self.expiry
            .get_or_create(&CertLabels {
                certificate: "issuer",
            })
            .set(unix(authority.issuer_not_after()));
        self.anchors
            .set(i64::try_from(authority.bundle().len()).unwrap_or(i64::MAX));
    }
}
