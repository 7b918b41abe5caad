//! The index's compact copy of the cluster: what resolution needs from each
//! object, converted once when the object arrives.

use crate::objects::ObjectKey;
use crate::routes::{RouteKey, RouteSpec};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use trellis_api::contract::{self, key};
use trellis_policy::{MtlsMode, ResourceRef};

/// Flags that shape resolution.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trust_domain: String,
    pub cluster_domain: String,
    /// The mesh-wide mTLS mode when neither pod nor namespace says.
    pub mtls_mode: MtlsMode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            trust_domain: contract::DEFAULT_TRUST_DOMAIN.to_string(),
            cluster_domain: contract::DEFAULT_CLUSTER_DOMAIN.to_string(),
            mtls_mode: MtlsMode::Permissive,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceInfo {
    pub mtls: Option<MtlsMode>,
    /// For Gateway listeners that allow routes from selected namespaces.
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `trellis.io/opaque-ports` on the Service (Service port numbers).
    pub opaque_ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One EndpointSlice, reduced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceInfo {
    pub service: Option<ResourceRef>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SlicePort {
    pub name: String,
    pub port: Option<u16>,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    pub pod: Option<ResourceRef>,
    pub zone: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub ips: Vec<IpAddr>,
    pub service_account: String,
    /// Runs the `trellis-proxy` container (or init container).
    pub meshed: bool,
    pub mtls: Option<MtlsMode>,
    /// `trellis.io/opaque-ports` on the pod (container ports).
    pub opaque_ports: Vec<u16>,
    /// Named container ports, for Services whose `targetPort` is a name.
    pub named_ports: BTreeMap<String, u16>,
}

/// A `ReferenceGrant`, reduced: who may refer to what in its namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrantInfo {
    /// (group, kind, namespace)
    pub from: Vec<(String, String, String)>,
    /// (group, kind, name)
    pub to: Vec<(String, String, Option<String>)>,
}

/// All objects the index knows, in their reduced forms.
#[derive(Debug, Default)]
pub struct Store {
    pub settings: Settings,
    pub namespaces: HashMap<String, NamespaceInfo>,
    pub services: HashMap<ResourceRef, ServiceInfo>,
    pub by_cluster_ip: HashMap<IpAddr, ResourceRef>,
    /// EndpointSlices by their own key.
    pub slices: HashMap<ObjectKey, SliceInfo>,
    /// Service → its EndpointSlices.
    pub service_slices: HashMap<ResourceRef, BTreeSet<ObjectKey>>,
    /// Pod → the EndpointSlices that list it.
    pub pod_slices: HashMap<ResourceRef, BTreeSet<ObjectKey>>,
    pub pods: HashMap<ResourceRef, PodInfo>,
    pub routes: BTreeMap<RouteKey, RouteSpec>,
    /// Parent (Service or Gateway) → routes naming it in a parentRef.
    pub routes_by_parent: HashMap<ResourceRef, BTreeSet<RouteKey>>,
    /// Backend Service → routes referring to it (backendRefs and mirrors).
    pub routes_by_backend: HashMap<ResourceRef, BTreeSet<RouteKey>>,
    pub grants: HashMap<ObjectKey, GrantInfo>,
    pub traffic_policies: HashMap<ObjectKey, crate::index::policies::TrafficPolicy>,
    pub meshes: BTreeMap<String, crate::index::policies::MeshInfo>,
    pub authz: BTreeMap<ObjectKey, crate::index::policies::AuthzInfo>,
    pub gateway_classes: BTreeMap<String, crate::index::gateways::ClassInfo>,
    pub gateways: BTreeMap<ResourceRef, crate::index::gateways::GatewayInfo>,
    pub secrets: HashMap<ResourceRef, crate::index::gateways::SecretInfo>,
    /// Gateways a gateway proxy reported ready for (`Programmed`).
    pub programmed: BTreeSet<ResourceRef>,
}

impl Store {
    /// The routes naming `parent` (a Service or a Gateway) in a parentRef
    /// that could be converted (no `UnsupportedValue`), in key order.
    pub fn accepted_routes_of<'a>(
        &'a self,
        parent: &ResourceRef,
    ) -> impl Iterator<Item = &'a RouteSpec> + 'a {
        self.routes_by_parent
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|k| self.routes.get(k))
            .filter(|r| r.error.is_none())
    }
}

pub fn resource_ref(meta: &ObjectMeta) -> ResourceRef {
    ResourceRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

pub fn creation_timestamp(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

fn parse_mtls(annotations: &BTreeMap<String, String>, what: &str) -> Option<MtlsMode> {
    let v = annotations.get(key::MTLS)?;
    match v.trim().to_ascii_lowercase().as_str() {
        "strict" => Some(MtlsMode::Strict),
        "permissive" => Some(MtlsMode::Permissive),
        other => {
            tracing::warn!(
                object = what,
                value = other,
                "ignoring invalid {} annotation",
                key::MTLS
            );
            None
        }
    }
}

/// Parses a comma-separated port list (`80,8080` or ranges `8000-8010`).
pub fn parse_ports(value: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid port {part:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let b: u16 = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

fn opaque_ports(annotations: &BTreeMap<String, String>, what: &str) -> Vec<u16> {
    match annotations.get(key::OPAQUE_PORTS).map(|v| parse_ports(v)) {
        Some(Ok(ports)) => ports,
        Some(Err(e)) => {
            tracing::warn!(
                object = what,
                "ignoring {} annotation: {e}",
                key::OPAQUE_PORTS
            );
            Vec::new()
        }
        None => Vec::new(),
    }
}

impl NamespaceInfo {
    pub fn from_object(ns: &Namespace) -> Self {
        Self {
            mtls: parse_mtls(ns.annotations(), &ns.name_any()),
            labels: ns.labels().clone(),
        }
    }
}

impl ServiceInfo {
    pub fn from_object(svc: &Service) -> Self {
        let what = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
        let spec = svc.spec.clone().unwrap_or_default();
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .unwrap_or_default()
            .iter()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let target_port = match p.target_port {
                    Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(n).ok()?),
                    Some(IntOrString::String(s)) => match s.parse::<u16>() {
                        Ok(n) => TargetPort::Number(n),
                        Err(_) => TargetPort::Name(s),
                    },
                    None => TargetPort::Number(port),
                };
                Some(ServicePort {
                    name: p.name.unwrap_or_default(),
                    port,
                    target_port,
                    app_protocol: p.app_protocol,
                })
            })
            .collect();
        Self {
            cluster_ips,
            ports,
            opaque_ports: opaque_ports(svc.annotations(), &what),
        }
    }

    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

impl SliceInfo {
    pub fn from_object(slice: &EndpointSlice) -> Self {
        let namespace = slice.namespace().unwrap_or_default();
        let service = slice
            .labels()
            .get("kubernetes.io/service-name")
            .map(|name| ResourceRef::new(namespace.clone(), name.clone()));
        let ports = slice
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| SlicePort {
                name: p.name.unwrap_or_default(),
                port: p.port.and_then(|n| u16::try_from(n).ok()),
                app_protocol: p.app_protocol,
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| SliceEndpoint {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                // An unknown readiness is to be read as ready (EndpointConditions docs).
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                pod: e.target_ref.as_ref().and_then(|r| {
                    (r.kind.as_deref() == Some("Pod")).then(|| {
                        ResourceRef::new(
                            r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                            r.name.clone().unwrap_or_default(),
                        )
                    })
                }),
                zone: e.zone.clone(),
            })
            .collect();
        Self {
            service,
            ports,
            endpoints,
        }
    }
}

impl PodInfo {
    pub fn from_object(pod: &Pod) -> Self {
        let what = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let spec = pod.spec.clone().unwrap_or_default();
        let meshed = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == contract::PROXY_CONTAINER_NAME);
        let named_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect();
        let status = pod.status.clone().unwrap_or_default();
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .unwrap_or_default()
            .iter()
            .map(|p| p.ip.clone())
            .chain(status.pod_ip)
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        Self {
            ips,
            service_account: spec
                .service_account_name
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            meshed,
            mtls: parse_mtls(pod.annotations(), &what),
            opaque_ports: opaque_ports(pod.annotations(), &what),
            named_ports,
        }
    }
}

/// A `kubernetes.io/tls` Secret's PEM data.
pub fn tls_secret(secret: &Secret) -> Option<(String, String)> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some((text("tls.crt")?, text("tls.key")?))
}
