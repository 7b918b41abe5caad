//! The typed Kubernetes objects the index consumes, whichever source they
//! come from, and their decoding from a manifest document.

use crate::crd::{AuthorizationPolicy, TcpRoute};
use gateway_api::experimental::{
    gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute, httproutes::HttpRoute,
    referencegrants::ReferenceGrant, tlsroutes::TlsRoute,
    xbackendtrafficpolicies::XBackendTrafficPolicy, xmeshes::XMesh,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use std::fmt;

/// Every kind the index reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    Secret,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    Gateway,
    GatewayClass,
    ReferenceGrant,
    BackendTrafficPolicy,
    Mesh,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Secret,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TcpRoute,
        Kind::TlsRoute,
        Kind::Gateway,
        Kind::GatewayClass,
        Kind::ReferenceGrant,
        Kind::BackendTrafficPolicy,
        Kind::Mesh,
        Kind::AuthorizationPolicy,
    ];

    /// The API group and kind as Kubernetes spells them.
    pub fn group_kind(&self) -> (&'static str, &'static str) {
        const GW: &str = "gateway.networking.k8s.io";
        const XGW: &str = "gateway.networking.x-k8s.io";
        match self {
            Kind::Namespace => ("", "Namespace"),
            Kind::Service => ("", "Service"),
            Kind::EndpointSlice => ("discovery.k8s.io", "EndpointSlice"),
            Kind::Pod => ("", "Pod"),
            Kind::Secret => ("", "Secret"),
            Kind::HttpRoute => (GW, "HTTPRoute"),
            Kind::GrpcRoute => (GW, "GRPCRoute"),
            Kind::TcpRoute => (GW, "TCPRoute"),
            Kind::TlsRoute => (GW, "TLSRoute"),
            Kind::Gateway => (GW, "Gateway"),
            Kind::GatewayClass => (GW, "GatewayClass"),
            Kind::ReferenceGrant => (GW, "ReferenceGrant"),
            Kind::BackendTrafficPolicy => (XGW, "XBackendTrafficPolicy"),
            Kind::Mesh => (XGW, "XMesh"),
            Kind::AuthorizationPolicy => {
                (trellis_api::contract::POLICY_GROUP, "AuthorizationPolicy")
            }
        }
    }

    /// The kind for an `apiVersion` group and `kind`; `None` for kinds the
    /// controller does not read (Deployments and the like are skipped).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group_kind() == (group, kind))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.group_kind().1)
    }
}

/// A namespaced (or, for cluster-scoped kinds, empty-namespace) object name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object of a kind the index reads.
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    Secret(Secret),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    TcpRoute(TcpRoute),
    TlsRoute(TlsRoute),
    Gateway(Gateway),
    GatewayClass(GatewayClass),
    ReferenceGrant(ReferenceGrant),
    BackendTrafficPolicy(XBackendTrafficPolicy),
    Mesh(XMesh),
    AuthorizationPolicy(AuthorizationPolicy),
}

macro_rules! each_object {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Namespace($o) => $body,
            Object::Service($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::Pod($o) => $body,
            Object::Secret($o) => $body,
            Object::HttpRoute($o) => $body,
            Object::GrpcRoute($o) => $body,
            Object::TcpRoute($o) => $body,
            Object::TlsRoute($o) => $body,
            Object::Gateway($o) => $body,
            Object::GatewayClass($o) => $body,
            Object::ReferenceGrant($o) => $body,
            Object::BackendTrafficPolicy($o) => $body,
            Object::Mesh($o) => $body,
            Object::AuthorizationPolicy($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Secret(_) => Kind::Secret,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::Gateway(_) => Kind::Gateway,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::BackendTrafficPolicy(_) => Kind::BackendTrafficPolicy,
            Object::Mesh(_) => Kind::Mesh,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    pub fn key(&self) -> ObjectKey {
        each_object!(self, o => ObjectKey::new(o.namespace().unwrap_or_default(), o.name_any()))
    }

    /// Decodes one manifest document. `Ok(None)` for kinds the controller
    /// does not read; an error names the kind and what was wrong.
    pub fn from_value(value: serde_json::Value) -> Result<Option<Object>, DecodeError> {
        let field = |name: &'static str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or(DecodeError::MissingField(name))
        };
        let api_version = field("apiVersion")?;
        let kind = field("kind")?;
        let (api_version, kind) = (api_version.as_str(), kind.as_str());
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let Some(k) = Kind::from_group_kind(group, kind) else {
            return Ok(None);
        };
        let supported: &[&str] = match k {
            Kind::Namespace | Kind::Service | Kind::Pod | Kind::Secret => &["v1"],
            Kind::EndpointSlice => &["v1"],
            Kind::HttpRoute | Kind::GrpcRoute | Kind::Gateway | Kind::GatewayClass => {
                &["v1", "v1beta1"]
            }
            Kind::ReferenceGrant => &["v1", "v1beta1", "v1alpha2"],
            Kind::TcpRoute => &["v1", "v1alpha2"],
            Kind::TlsRoute => &["v1", "v1alpha3", "v1alpha2"],
            Kind::BackendTrafficPolicy | Kind::Mesh | Kind::AuthorizationPolicy => &["v1alpha1"],
        };
        if !supported.contains(&version) {
            return Err(DecodeError::Version {
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            });
        }
        let err = |e: serde_json::Error| DecodeError::Invalid {
            kind: kind.to_string(),
            reason: e.to_string(),
        };
        let obj = match k {
            Kind::Namespace => Object::Namespace(serde_json::from_value(value).map_err(err)?),
            Kind::Service => Object::Service(serde_json::from_value(value).map_err(err)?),
            Kind::EndpointSlice => {
                Object::EndpointSlice(serde_json::from_value(value).map_err(err)?)
            }
            Kind::Pod => Object::Pod(serde_json::from_value(value).map_err(err)?),
            Kind::Secret => Object::Secret(serde_json::from_value(value).map_err(err)?),
            Kind::HttpRoute => Object::HttpRoute(serde_json::from_value(value).map_err(err)?),
            Kind::GrpcRoute => Object::GrpcRoute(serde_json::from_value(value).map_err(err)?),
            Kind::TcpRoute => Object::TcpRoute(serde_json::from_value(value).map_err(err)?),
            Kind::TlsRoute => Object::TlsRoute(serde_json::from_value(value).map_err(err)?),
            Kind::Gateway => Object::Gateway(serde_json::from_value(value).map_err(err)?),
            Kind::GatewayClass => Object::GatewayClass(serde_json::from_value(value).map_err(err)?),
            Kind::ReferenceGrant => {
                Object::ReferenceGrant(serde_json::from_value(value).map_err(err)?)
            }
            Kind::BackendTrafficPolicy => {
                Object::BackendTrafficPolicy(serde_json::from_value(value).map_err(err)?)
            }
            Kind::Mesh => Object::Mesh(serde_json::from_value(value).map_err(err)?),
            Kind::AuthorizationPolicy => {
                Object::AuthorizationPolicy(serde_json::from_value(value).map_err(err)?)
            }
        };
        let mut obj = obj;
        if obj.key().name.is_empty() {
            return Err(DecodeError::MissingField("metadata.name"));
        }
        // Like kubectl, a namespaced object without a namespace lands in `default`.
        let cluster_scoped = matches!(k, Kind::Namespace | Kind::GatewayClass | Kind::Mesh);
        if !cluster_scoped {
            each_object!(&mut obj, o => {
                let ns = &mut o.meta_mut().namespace;
                if ns.as_deref().is_none_or(str::is_empty) {
                    *ns = Some("default".to_string());
                }
            });
        }
        Ok(Some(obj))
    }
}

/// A manifest document that is not a valid object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("missing {0}")]
    MissingField(&'static str),
    #[error("{kind}: unsupported apiVersion {api_version:?}")]
    Version { kind: String, api_version: String },
    #[error("invalid {kind}: {reason}")]
    Invalid { kind: String, reason: String },
}
