//! Inbound policy: what a workload's proxy accepts on one of its ports.
//!
//! - protocol: `trellis.io/opaque-ports` on the pod, else the `appProtocol`
//!   (or opaque-ports annotation) of the Service ports whose EndpointSlices
//!   send this pod traffic on that port;
//! - mTLS mode: `trellis.io/mtls` on the pod, else on its namespace, else the
//!   mesh-wide `--mtls-mode`;
//! - authorization: the `AuthorizationPolicy` objects of the pod's namespace
//!   that target it (namespace-wide, or one of the Services it backs).

use super::backend::port_protocol;
use crate::index::policies::AuthzTarget;
use crate::index::store::Store;
use std::collections::BTreeSet;
use trellis_policy::{Authorization, AuthorizationPolicy, InboundPolicy, Protocol, ResourceRef};

/// The Services whose EndpointSlices list `pod`.
pub fn services_of(store: &Store, pod: &ResourceRef) -> BTreeSet<ResourceRef> {
    store
        .pod_slices
        .get(pod)
        .into_iter()
        .flatten()
        .filter_map(|k| store.slices.get(k)?.service.clone())
        .collect()
}

fn protocol(store: &Store, workload: &ResourceRef, port: u16) -> Protocol {
    if let Some(pod) = store.pods.get(workload)
        && pod.opaque_ports.contains(&port)
    {
        return Protocol::Opaque;
    }
    for key in store.pod_slices.get(workload).into_iter().flatten() {
        let Some(slice) = store.slices.get(key) else {
            continue;
        };
        let svc = slice.service.as_ref().and_then(|s| store.services.get(s));
        for sp in slice.ports.iter().filter(|p| p.port == Some(port)) {
            let svc_port = svc.and_then(|s| Some((s, s.ports.iter().find(|p| p.name == sp.name)?)));
            let proto = match svc_port {
                Some((svc, svc_port)) => match port_protocol(svc, svc_port) {
                    Protocol::Detect => Protocol::from_app_protocol(sp.app_protocol.as_deref()),
                    p => p,
                },
                None => Protocol::from_app_protocol(sp.app_protocol.as_deref()),
            };
            if proto != Protocol::Detect {
                return proto;
            }
        }
    }
    Protocol::Detect
}

/// The inbound policy of `workload` (a pod) on `port`. A pod the index does
/// not know yet gets the defaults of its namespace; the stream updates when
/// the pod appears.
pub fn inbound(store: &Store, workload: &ResourceRef, port: u16) -> InboundPolicy {
    let pod = store.pods.get(workload);
    let mtls = pod
        .and_then(|p| p.mtls)
        .or_else(|| {
            store
                .namespaces
                .get(&workload.namespace)
                .and_then(|n| n.mtls)
        })
        .unwrap_or(store.settings.mtls_mode);
    let services = services_of(store, workload);
    let policies = store
        .authz
        .values()
        .filter(|a| a.meta.namespace == workload.namespace)
        .filter(|a| match &a.target {
            AuthzTarget::Namespace => true,
            AuthzTarget::Services(names) => services
                .iter()
                .any(|s| s.namespace == a.meta.namespace && names.contains(&s.name)),
        })
        .map(|a| AuthorizationPolicy {
            meta: a.meta.clone(),
            rules: a.rules.clone(),
        })
        .collect();
    InboundPolicy {
        workload: workload.clone(),
        port,
        protocol: protocol(store, workload, port),
        mtls,
        authorization: Authorization { policies },
    }
}
