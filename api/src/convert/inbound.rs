//! Inbound policy: mTLS mode and authorization.

use super::{
    ConvertError, ErrorKind, Result, enumeration,
    meta::{protocol, spiffe_id},
    narrow_u16, narrow_u16s, repeated, required, to_repeated, widen,
};
use crate::proto::policy as pb;
use trellis_policy::{
    Authorization, AuthorizationPolicy, AuthzRule, AuthzSource, InboundPolicy, MtlsMode,
    ResourceRef,
};

impl From<&InboundPolicy> for pb::InboundPolicy {
    fn from(p: &InboundPolicy) -> Self {
        Self {
            workload: Some((&p.workload).into()),
            port: p.port.into(),
            protocol: pb::Protocol::from(p.protocol).into(),
            mtls: pb::inbound_policy::MtlsMode::from(p.mtls).into(),
            authorization: Some((&p.authorization).into()),
        }
    }
}

/// Error paths start at `inbound`. `authorization` is required even when it
/// holds no policies: its absence must not silently mean "allow everyone".
impl TryFrom<pb::InboundPolicy> for InboundPolicy {
    type Error = ConvertError;
    fn try_from(p: pb::InboundPolicy) -> Result<Self> {
        convert(p).map_err(|e| e.in_field("inbound"))
    }
}

fn convert(p: pb::InboundPolicy) -> Result<InboundPolicy> {
    Ok(InboundPolicy {
        workload: required("workload", p.workload)?,
        port: narrow_u16("port", p.port)?,
        protocol: protocol("protocol", p.protocol)?,
        mtls: enumeration::<pb::inbound_policy::MtlsMode, _>("mtls", p.mtls)?,
        authorization: required("authorization", p.authorization)?,
    })
}

impl From<MtlsMode> for pb::inbound_policy::MtlsMode {
    fn from(m: MtlsMode) -> Self {
        match m {
            MtlsMode::Permissive => Self::Permissive,
            MtlsMode::Strict => Self::Strict,
        }
    }
}

impl From<pb::inbound_policy::MtlsMode> for MtlsMode {
    fn from(m: pb::inbound_policy::MtlsMode) -> Self {
        match m {
            pb::inbound_policy::MtlsMode::Permissive => Self::Permissive,
            pb::inbound_policy::MtlsMode::Strict => Self::Strict,
        }
    }
}

impl From<&Authorization> for pb::Authorization {
    fn from(a: &Authorization) -> Self {
        Self {
            policies: to_repeated(&a.policies),
        }
    }
}

impl TryFrom<pb::Authorization> for Authorization {
    type Error = ConvertError;
    fn try_from(a: pb::Authorization) -> Result<Self> {
        Ok(Self {
            policies: repeated("policies", a.policies)?,
        })
    }
}

impl From<&AuthorizationPolicy> for pb::AuthorizationPolicy {
    fn from(p: &AuthorizationPolicy) -> Self {
        Self {
            meta: Some((&p.meta).into()),
            rules: to_repeated(&p.rules),
        }
    }
}

impl TryFrom<pb::AuthorizationPolicy> for AuthorizationPolicy {
    type Error = ConvertError;
    fn try_from(p: pb::AuthorizationPolicy) -> Result<Self> {
        Ok(Self {
            meta: required("meta", p.meta)?,
            rules: repeated("rules", p.rules)?,
        })
    }
}

impl From<&AuthzRule> for pb::AuthzRule {
    fn from(r: &AuthzRule) -> Self {
        Self {
            sources: to_repeated(&r.sources),
            ports: widen(&r.ports),
        }
    }
}

impl TryFrom<pb::AuthzRule> for AuthzRule {
    type Error = ConvertError;
    fn try_from(r: pb::AuthzRule) -> Result<Self> {
        Ok(Self {
            sources: repeated("sources", r.sources)?,
            ports: narrow_u16s("ports", r.ports)?,
        })
    }
}

impl From<&AuthzSource> for pb::AuthzSource {
    fn from(s: &AuthzSource) -> Self {
        use pb::authz_source::Kind;
        Self {
            kind: Some(match s {
                AuthzSource::Identity(id) => Kind::Identity(id.as_str().to_string()),
                AuthzSource::ServiceAccount(sa) => Kind::ServiceAccount(sa.into()),
                AuthzSource::Namespace(ns) => Kind::Namespace(ns.clone()),
            }),
        }
    }
}

impl TryFrom<pb::AuthzSource> for AuthzSource {
    type Error = ConvertError;
    fn try_from(s: pb::AuthzSource) -> Result<Self> {
        use pb::authz_source::Kind;
        match s.kind {
            Some(Kind::Identity(id)) => spiffe_id("identity", id).map(AuthzSource::Identity),
            Some(Kind::ServiceAccount(sa)) => ResourceRef::try_from(sa)
                .map(AuthzSource::ServiceAccount)
                .map_err(|e| e.in_field("service_account")),
            Some(Kind::Namespace(ns)) => Ok(AuthzSource::Namespace(ns)),
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}
