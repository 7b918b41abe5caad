//! gRPC routes.

use super::{
    ConvertError, Result, duration_to_proto, enumeration, http::regex, meta::optional_duration,
    optional, repeated, to_repeated,
};
use crate::proto::policy as pb;
use trellis_policy::{GrpcMatch, GrpcMethodMatch, GrpcRetry};

route_conversions!(GrpcRoute, GrpcRule);

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
