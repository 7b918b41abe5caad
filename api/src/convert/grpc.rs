//! gRPC routes.

use super::{
    ConvertError, Result, duration_to_proto, enumeration,
    http::{regex, timeouts_from_proto, timeouts_to_proto},
    meta::optional_duration,
    optional, repeated, required, to_repeated,
};
use crate::proto::policy as pb;
use trellis_policy::{GrpcMatch, GrpcMethodMatch, GrpcRetry, GrpcRoute, GrpcRule};

impl From<&GrpcRoute> for pb::GrpcRoute {
    fn from(r: &GrpcRoute) -> Self {
        Self {
            meta: Some((&r.meta).into()),
            hostnames: to_repeated(&r.hostnames),
            rules: to_repeated(&r.rules),
        }
    }
}

impl TryFrom<pb::GrpcRoute> for GrpcRoute {
    type Error = ConvertError;
    fn try_from(r: pb::GrpcRoute) -> Result<Self> {
        Ok(Self {
            meta: required("meta", r.meta)?,
            hostnames: repeated("hostnames", r.hostnames)?,
            rules: repeated("rules", r.rules)?,
        })
    }
}

impl From<&GrpcRule> for pb::GrpcRule {
    fn from(r: &GrpcRule) -> Self {
        Self {
            name: r.name.clone(),
            matches: to_repeated(&r.matches),
            filters: to_repeated(&r.filters),
            backends: to_repeated(&r.backends),
            timeouts: timeouts_to_proto(&r.timeouts),
            retry: r.retry.as_ref().map(Into::into),
            session_persistence: r.session_persistence.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::GrpcRule> for GrpcRule {
    type Error = ConvertError;
    fn try_from(r: pb::GrpcRule) -> Result<Self> {
        Ok(Self {
            name: r.name,
            matches: repeated("matches", r.matches)?,
            filters: repeated("filters", r.filters)?,
            backends: repeated("backends", r.backends)?,
            timeouts: timeouts_from_proto("timeouts", r.timeouts)?,
            retry: optional("retry", r.retry)?,
            session_persistence: optional("session_persistence", r.session_persistence)?,
        })
    }
}

impl From<&GrpcMatch> for pb::GrpcMatch {
    fn from(m: &GrpcMatch) -> Self {
        Self {
            method: m.method.as_ref().map(Into::into),
            headers: to_repeated(&m.headers),
        }
    }
}

impl TryFrom<pb::GrpcMatch> for GrpcMatch {
    type Error = ConvertError;
    fn try_from(m: pb::GrpcMatch) -> Result<Self> {
        Ok(Self {
            method: optional("method", m.method)?,
            headers: repeated("headers", m.headers)?,
        })
    }
}

impl From<&GrpcMethodMatch> for pb::GrpcMethodMatch {
    fn from(m: &GrpcMethodMatch) -> Self {
        use pb::grpc_method_match::Kind;
        match m {
            GrpcMethodMatch::Exact { service, method } => Self {
                kind: Kind::Exact.into(),
                service: service.clone(),
                method: method.clone(),
            },
            GrpcMethodMatch::Regex { service, method } => Self {
                kind: Kind::Regex.into(),
                service: service.as_ref().map(|re| re.as_str().to_string()),
                method: method.as_ref().map(|re| re.as_str().to_string()),
            },
        }
    }
}

impl TryFrom<pb::GrpcMethodMatch> for GrpcMethodMatch {
    type Error = ConvertError;
    fn try_from(m: pb::GrpcMethodMatch) -> Result<Self> {
        use pb::grpc_method_match::Kind;
        Ok(match enumeration::<Kind, Kind>("kind", m.kind)? {
            Kind::Exact => GrpcMethodMatch::Exact {
                service: m.service,
                method: m.method,
            },
            Kind::Regex => GrpcMethodMatch::Regex {
                service: m.service.map(|s| regex("service", &s)).transpose()?,
                method: m.method.map(|s| regex("method", &s)).transpose()?,
            },
        })
    }
}

impl From<&GrpcRetry> for pb::GrpcRetry {
    fn from(r: &GrpcRetry) -> Self {
        Self {
            codes: r.codes.clone(),
            attempts: r.attempts,
            backoff: r.backoff.map(duration_to_proto),
        }
    }
}

impl TryFrom<pb::GrpcRetry> for GrpcRetry {
    type Error = ConvertError;
    fn try_from(r: pb::GrpcRetry) -> Result<Self> {
        Ok(Self {
            codes: r.codes,
            attempts: r.attempts,
            backoff: optional_duration("backoff", r.backoff)?,
        })
    }
}
