//! proptest strategies: every `trellis-policy` model type comes from
//! `trellis_policy::build::arbitrary` (valid by construction: lower-case
//! hostnames, SPIFFE ids and regular expressions that parse back); this file
//! adds the discovery requests that only `trellis-api` defines.

use proptest::prelude::*;
use trellis_api::{GatewayTarget, InboundTarget, OutboundTarget};
pub use trellis_policy::build::arbitrary::*;

pub fn outbound_target() -> impl Strategy<Value = OutboundTarget> {
    (target(), text(), text()).prop_map(|(target, client_namespace, client_workload)| {
        OutboundTarget {
            target,
            client_namespace,
            client_workload,
        }
    })
}

pub fn inbound_target() -> impl Strategy<Value = InboundTarget> {
    (resource_ref(), any::<u16>()).prop_map(|(workload, port)| InboundTarget { workload, port })
}

pub fn gateway_target() -> impl Strategy<Value = GatewayTarget> {
    resource_ref().prop_map(|gateway| GatewayTarget { gateway })
}
