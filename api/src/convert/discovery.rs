//! The requests and updates of `discovery.proto`.
//!
//! The requests have no `trellis-policy` type of their own, so they get one
//! here: the server reads them as [`OutboundTarget`], [`InboundTarget`] and
//! [`GatewayTarget`], the client builds its request from them.

use super::{ConvertError, ErrorKind, Result, narrow_u16, required};
use crate::proto::discovery as pb;
use trellis_policy::{OutboundPolicy, ResourceRef, Target};

/// What a client's proxy asks `OutboundPolicies.Watch` about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundTarget {
    /// The ClusterIP and port the application connected to.
    pub target: Target,
    /// The client's namespace: its consumer routes take precedence.
    pub client_namespace: String,
    /// The client pod's name, for diagnostics.
    pub client_workload: String,
}

impl From<&OutboundTarget> for pb::OutboundTarget {
    fn from(t: &OutboundTarget) -> Self {
        Self {
            target: Some((&t.target).into()),
            client_namespace: t.client_namespace.clone(),
            client_workload: t.client_workload.clone(),
        }
    }
}

impl TryFrom<pb::OutboundTarget> for OutboundTarget {
    type Error = ConvertError;
    fn try_from(t: pb::OutboundTarget) -> Result<Self> {
        Ok(Self {
            target: required("target", t.target)?,
            client_namespace: t.client_namespace,
            client_workload: t.client_workload,
        })
    }
}

/// What a workload's proxy asks `InboundPolicies.Watch` about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundTarget {
    /// The pod.
    pub workload: ResourceRef,
    /// The container port.
    pub port: u16,
}

impl From<&InboundTarget> for pb::InboundTarget {
    fn from(t: &InboundTarget) -> Self {
        Self {
            workload: Some((&t.workload).into()),
            port: t.port.into(),
        }
    }
}

impl TryFrom<pb::InboundTarget> for InboundTarget {
    type Error = ConvertError;
    fn try_from(t: pb::InboundTarget) -> Result<Self> {
        Ok(Self {
            workload: required("workload", t.workload)?,
            port: narrow_u16("port", t.port)?,
        })
    }
}

/// What a gateway proxy asks `GatewayConfig.Watch` about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatewayTarget {
    pub gateway: ResourceRef,
}

impl From<&GatewayTarget> for pb::GatewayTarget {
    fn from(t: &GatewayTarget) -> Self {
        Self {
            gateway: Some((&t.gateway).into()),
        }
    }
}

impl TryFrom<pb::GatewayTarget> for GatewayTarget {
    type Error = ConvertError;
    fn try_from(t: pb::GatewayTarget) -> Result<Self> {
        Ok(Self {
            gateway: required("gateway", t.gateway)?,
        })
    }
}

/// `Some(policy)` is the target's policy; `None` says the target is no
/// Service port and the proxy forwards to the original destination.
impl From<Option<&OutboundPolicy>> for pb::OutboundUpdate {
    fn from(p: Option<&OutboundPolicy>) -> Self {
        use pb::outbound_update::Kind;
        Self {
            kind: Some(match p {
                Some(p) => Kind::Policy(p.into()),
                None => Kind::NoPolicy(pb::NoPolicy {}),
            }),
        }
    }
}

impl From<&OutboundPolicy> for pb::OutboundUpdate {
    fn from(p: &OutboundPolicy) -> Self {
        Self::from(Some(p))
    }
}

/// An update with neither variant set is an error, not "no policy": an
/// update from a newer controller must not silently drop a target's routes.
impl TryFrom<pb::OutboundUpdate> for Option<OutboundPolicy> {
    type Error = ConvertError;
    fn try_from(u: pb::OutboundUpdate) -> Result<Self> {
        use pb::outbound_update::Kind;
        match u.kind {
            Some(Kind::Policy(p)) => OutboundPolicy::try_from(p).map(Some),
            Some(Kind::NoPolicy(pb::NoPolicy {})) => Ok(None),
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}
