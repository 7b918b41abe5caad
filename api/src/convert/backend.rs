//! Backends, endpoints and retry budgets.

use super::{
    ConvertError, ErrorKind, Result,
    meta::{protocol, required_duration, spiffe_id},
    narrow_u16, optional, repeated, required, to_repeated,
};
use crate::proto::policy as pb;
use trellis_policy::{Backend, Endpoint, RetryBudget, ServiceBackend, WeightedBackend};

impl From<&Backend> for pb::Backend {
    fn from(b: &Backend) -> Self {
        use pb::backend::Kind;
        Self {
            kind: Some(match b {
                Backend::Service(s) => Kind::Service(s.into()),
                Backend::Invalid { name, message } => Kind::Invalid(pb::InvalidBackend {
                    name: name.clone(),
                    message: message.clone(),
                }),
            }),
        }
    }
}

impl TryFrom<pb::Backend> for Backend {
    type Error = ConvertError;
    fn try_from(b: pb::Backend) -> Result<Self> {
        use pb::backend::Kind;
        match b.kind {
            Some(Kind::Service(s)) => ServiceBackend::try_from(s)
                .map(Backend::Service)
                .map_err(|e| e.in_field("service")),
            Some(Kind::Invalid(pb::InvalidBackend { name, message })) => {
                Ok(Backend::Invalid { name, message })
            }
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

impl From<&ServiceBackend> for pb::ServiceBackend {
    fn from(s: &ServiceBackend) -> Self {
        Self {
            service: Some((&s.service).into()),
            port: s.port.into(),
            authority: s.authority.clone(),
            protocol: pb::Protocol::from(s.protocol).into(),
            endpoints: to_repeated(&s.endpoints),
            retry_budget: s.retry_budget.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::ServiceBackend> for ServiceBackend {
    type Error = ConvertError;
    fn try_from(s: pb::ServiceBackend) -> Result<Self> {
        Ok(Self {
            service: required("service", s.service)?,
            port: narrow_u16("port", s.port)?,
            authority: s.authority,
            protocol: protocol("protocol", s.protocol)?,
            endpoints: repeated("endpoints", s.endpoints)?,
            retry_budget: optional("retry_budget", s.retry_budget)?,
        })
    }
}

impl From<&Endpoint> for pb::Endpoint {
    fn from(e: &Endpoint) -> Self {
        Self {
            addr: Some((&e.addr).into()),
            identity: e.identity.as_ref().map(|id| id.as_str().to_string()),
            pod: e.pod.as_ref().map(Into::into),
            zone: e.zone.clone(),
        }
    }
}

impl TryFrom<pb::Endpoint> for Endpoint {
    type Error = ConvertError;
    fn try_from(e: pb::Endpoint) -> Result<Self> {
        Ok(Self {
            addr: required("addr", e.addr)?,
            identity: e.identity.map(|id| spiffe_id("identity", id)).transpose()?,
            pod: optional("pod", e.pod)?,
            zone: e.zone,
        })
    }
}

impl From<&WeightedBackend> for pb::WeightedBackend {
    fn from(w: &WeightedBackend) -> Self {
        Self {
            backend: Some((&w.backend).into()),
            weight: w.weight,
        }
    }
}

impl TryFrom<pb::WeightedBackend> for WeightedBackend {
    type Error = ConvertError;
    fn try_from(w: pb::WeightedBackend) -> Result<Self> {
        Ok(Self {
            backend: required("backend", w.backend)?,
            weight: w.weight,
        })
    }
}

impl From<&RetryBudget> for pb::RetryBudget {
    fn from(b: &RetryBudget) -> Self {
        Self {
            percent: b.percent,
            interval: Some(super::duration_to_proto(b.interval)),
            min_retry_count: b.min_retry_count,
            min_retry_interval: Some(super::duration_to_proto(b.min_retry_interval)),
        }
    }
}

impl TryFrom<pb::RetryBudget> for RetryBudget {
    type Error = ConvertError;
    fn try_from(b: pb::RetryBudget) -> Result<Self> {
        Ok(Self {
            percent: b.percent,
            interval: required_duration("interval", b.interval)?,
            min_retry_count: b.min_retry_count,
            min_retry_interval: required_duration("min_retry_interval", b.min_retry_interval)?,
        })
    }
}
