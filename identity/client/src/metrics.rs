//! Metrics of mesh TLS, for the proxy to register in its registry:
//!
//! - `trellis_tls_handshakes_total{direction, outcome}`: handshakes by result
//!   (the proxy drives the handshakes and reports each with
//!   [`TlsMetrics::record`]);
//! - `trellis_identity_certificate_expiry_timestamp_seconds`: `notAfter` of
//!   the current certificate (0 when there is none);
//! - `trellis_identity_certificate_requests_total{result}`: issuance
//!   attempts, so a failing identity service shows before expiry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::{AlertDescription, CertificateError};
use std::time::SystemTime;

use crate::tls::PeerError;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// This proxy accepted the connection (server side).
    Inbound,
    /// This proxy opened the connection (client side).
    Outbound,
}

/// The result of a handshake, as a metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HandshakeOutcome {
    Ok,
    /// The client sent no certificate (server side).
    NoCertificate,
    /// The peer's chain does not reach the trust bundle.
    UnknownCa,
    /// The peer chains to the bundle but is not the expected SPIFFE id, or
    /// carries none.
    WrongIdentity,
    /// The peer's certificate is expired or not yet valid.
    Expired,
    /// The other side refused our certificate (it sent an alert).
    Refused,
    /// No common ALPN protocol.
    NoAlpn,
    /// A timeout, a reset, or a protocol error.
    Error,
}

/// Label values in the snake case Prometheus users expect.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $value:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values!(Direction { Inbound => "inbound", Outbound => "outbound" });
label_values!(HandshakeOutcome {
    Ok => "ok",
    NoCertificate => "no_certificate",
    UnknownCa => "unknown_ca",
    WrongIdentity => "wrong_identity",
    Expired => "expired",
    Refused => "refused",
    NoAlpn => "no_alpn",
    Error => "error",
});
label_values!(RequestResult { Ok => "ok", Error => "error" });

impl HandshakeOutcome {
    /// Classifies the error a `tokio-rustls` handshake returned.
    pub fn of_io_error(error: &std::io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(e) => Self::of_tls_error(e),
            None => Self::Error,
        }
    }

    pub fn of_tls_error(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            rustls::Error::NoApplicationProtocol => Self::NoAlpn,
            rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => Self::NoAlpn,
            rustls::Error::AlertReceived(_) => Self::Refused,
            rustls::Error::InvalidCertificate(e) => match e {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::UnknownCa,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Self::Expired,
                CertificateError::Other(other)
                    if other.0.downcast_ref::<PeerError>().is_some_and(|p| {
                        matches!(
                            p,
                            PeerError::WrongIdentity { .. } | PeerError::NoSpiffeId(_)
                        )
                    }) =>
                {
                    Self::WrongIdentity
                }
                CertificateError::Other(other)
                    if other
                        .0
                        .downcast_ref::<PeerError>()
                        .is_some_and(|p| matches!(p, PeerError::NoBundle)) =>
                {
                    Self::UnknownCa
                }
                _ => Self::Error,
            },
            _ => Self::Error,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: Direction,
    outcome: HandshakeOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestResult {
    Ok,
    Error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    result: RequestResult,
}

/// Cheap to clone; every clone counts into the same series.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    handshakes: Family<HandshakeLabels, Counter>,
    expiry: Gauge,
    requests: Family<RequestLabels, Counter>,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trellis_tls_handshakes",
            "TLS handshakes between proxies, by direction and outcome",
            self.handshakes.clone(),
        );
        registry.register(
            "trellis_identity_certificate_expiry_timestamp_seconds",
            "notAfter of the current workload certificate (0 when there is none)",
            self.expiry.clone(),
        );
        registry.register(
            "trellis_identity_certificate_requests",
            "Certificate requests to the identity service, by result",
            self.requests.clone(),
        );
    }

    pub fn handshake(&self, direction: Direction, outcome: HandshakeOutcome) {
        self.handshakes
            .get_or_create(&HandshakeLabels { direction, outcome })
            .inc();
    }

    /// Counts the result of a `tokio-rustls` accept or connect and returns it.
    pub fn record<T>(
        &self,
        direction: Direction,
        result: std::io::Result<T>,
    ) -> std::io::Result<T> {
        let outcome = match &result {
            Ok(_) => HandshakeOutcome::Ok,
            Err(e) => HandshakeOutcome::of_io_error(e),
        };
        self.handshake(direction, outcome);
        result
    }

    /// How many handshakes ended with `outcome` (for tests and diagnostics).
    pub fn handshakes(&self, direction: Direction, outcome: HandshakeOutcome) -> u64 {
        self.handshakes
            .get_or_create(&HandshakeLabels { direction, outcome })
            .get()
    }

    pub(crate) fn request(&self, ok: bool) {
        let result = if ok {
            RequestResult::Ok
        } else {
            RequestResult::Error
        };
        self.requests.get_or_create(&RequestLabels { result }).inc();
    }

    pub(crate) fn set_expiry(&self, not_after: Option<SystemTime>) {
        let secs = not_after
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.expiry.set(secs);
    }

    /// The exported expiry timestamp (for tests and diagnostics).
    pub fn expiry(&self) -> i64 {
        self.expiry.get()
    }
}
