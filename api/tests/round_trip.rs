//! Every message of `policy.proto` and `discovery.proto` round-trips through
//! the model: model → proto → bytes → proto → model is the identity.

mod support;

use proptest::prelude::*;
use prost::Message;
use std::{fmt::Debug, net::SocketAddr, time::Duration};
use support::arbitrary::*;
use trellis_api::{
    ConvertError, GatewayTarget, InboundTarget, OutboundTarget,
    convert::{duration_from_proto, duration_to_proto},
    proto::{discovery as dpb, policy as pb},
};
use trellis_policy::*;

/// Encodes `value`'s message, decodes the bytes and converts back.
fn round_trip<T, P>(value: &T) -> Result<(), TestCaseError>
where
    T: PartialEq + Debug + TryFrom<P, Error = ConvertError>,
    P: Message + Default + PartialEq + for<'a> From<&'a T>,
{
    let message = P::from(value);
    let decoded = P::decode(message.encode_to_vec().as_slice())
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert!(decoded == message, "bytes changed the message");
    let back = T::try_from(decoded).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

macro_rules! round_trips {
    ($($test:ident: $strategy:expr => $message:ty;)*) => {
        proptest! {
            $(
                #[test]
                fn $test(value in $strategy) {
                    round_trip::<_, $message>(&value)?;
                }
            )*
        }
    };
}

round_trips! {
    resource_ref_: resource_ref() => pb::ResourceRef;
    route_ref_: route_ref() => pb::RouteRef;
    socket_addr_: socket_addr() => pb::SocketAddr;
    target_: target() => pb::SocketAddr;
    host_match_: host_match() => pb::HostMatch;
    endpoint_: endpoint() => pb::Endpoint;
    retry_budget_: retry_budget() => pb::RetryBudget;
    service_backend_: service_backend() => pb::ServiceBackend;
    backend_: backend() => pb::Backend;
    weighted_backend_: weighted_backend() => pb::WeightedBackend;
    header_value_: header_value() => pb::HeaderValue;
    header_modifier_: header_modifier() => pb::HeaderModifier;
    path_modifier_: path_modifier() => pb::PathModifier;
    request_redirect_: request_redirect() => pb::RequestRedirect;
    url_rewrite_: url_rewrite() => pb::UrlRewrite;
    fraction_: fraction() => pb::Fraction;
    request_mirror_: request_mirror() => pb::RequestMirror;
    cors_: cors() => pb::Cors;
    http_filter_: http_filter() => pb::HttpFilter;
    path_match_: path_match() => pb::PathMatch;
    value_match_: value_match() => pb::ValueMatch;
    header_match_: header_match() => pb::HeaderMatch;
    query_param_match_: query_param_match() => pb::QueryParamMatch;
    http_match_: http_match() => pb::HttpMatch;
    timeouts_: timeouts() => pb::Timeouts;
    http_retry_: http_retry() => pb::HttpRetry;
    session_persistence_: session_persistence() => pb::SessionPersistence;
    http_backend_: http_backend() => pb::HttpBackend;
    http_rule_: http_rule() => pb::HttpRule;
    http_route_: http_route() => pb::HttpRoute;
    grpc_method_match_: grpc_method_match() => pb::GrpcMethodMatch;
    grpc_match_: grpc_match() => pb::GrpcMatch;
    grpc_retry_: grpc_retry() => pb::GrpcRetry;
    grpc_rule_: grpc_rule() => pb::GrpcRule;
    grpc_route_: grpc_route() => pb::GrpcRoute;
    tcp_rule_: tcp_rule() => pb::TcpRule;
    tcp_route_: tcp_route() => pb::TcpRoute;
    tls_route_: tls_route() => pb::TlsRoute;
    outbound_policy_: outbound_policy() => pb::OutboundPolicy;
    authz_source_: authz_source() => pb::AuthzSource;
    authz_rule_: authz_rule() => pb::AuthzRule;
    authorization_policy_: authorization_policy() => pb::AuthorizationPolicy;
    authorization_: authorization() => pb::Authorization;
    inbound_policy_: inbound_policy() => pb::InboundPolicy;
    certificate_pem_: certificate_pem() => pb::CertificatePem;
    listener_tls_: listener_tls() => pb::ListenerTls;
    listener_: listener() => pb::Listener;
    gateway_policy_: gateway_policy() => pb::GatewayPolicy;
    outbound_target_: outbound_target() => dpb::OutboundTarget;
    inbound_target_: inbound_target() => dpb::InboundTarget;
    gateway_target_: gateway_target() => dpb::GatewayTarget;
}

proptest! {
    /// `OutboundUpdate` carries `Option<OutboundPolicy>`: `None` is `no_policy`.
    #[test]
    fn outbound_update(value in proptest::option::of(outbound_policy())) {
        let message = dpb::OutboundUpdate::from(value.as_ref());
        let decoded = dpb::OutboundUpdate::decode(message.encode_to_vec().as_slice()).unwrap();
        prop_assert!(decoded == message);
        let back = Option::<OutboundPolicy>::try_from(decoded)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, value);
    }

    #[test]
    fn durations(d in duration()) {
        prop_assert_eq!(duration_from_proto(duration_to_proto(d)), Ok(d));
    }
}

/// No timeouts travel as an absent message, and an empty message reads back
/// as no timeouts, so the default is never ambiguous.
#[test]
fn default_timeouts_are_an_absent_message() {
    let rule = HttpRule::default();
    assert_eq!(pb::HttpRule::from(&rule).timeouts, None);
    assert_eq!(pb::GrpcRule::from(&GrpcRule::default()).timeouts, None);

    let with_empty = pb::HttpRule {
        timeouts: Some(pb::Timeouts::default()),
        ..pb::HttpRule::from(&rule)
    };
    assert_eq!(HttpRule::try_from(with_empty).unwrap(), rule);

    let set = HttpRule {
        timeouts: Timeouts {
            request: Some(Duration::from_secs(5)),
            backend_request: None,
        },
        ..HttpRule::default()
    };
    let message = pb::HttpRule::from(&set).timeouts.unwrap();
    assert_eq!(
        message.request,
        Some(prost_types::Duration {
            seconds: 5,
            nanos: 0
        })
    );
    assert_eq!(message.backend_request, None);
}

/// Durations protobuf cannot hold saturate instead of wrapping.
#[test]
fn huge_durations_saturate() {
    assert_eq!(
        duration_to_proto(Duration::MAX),
        prost_types::Duration {
            seconds: i64::MAX,
            nanos: 999_999_999
        }
    );
}

#[test]
fn socket_addrs_are_textual() {
    let v6: SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
    assert_eq!(
        pb::SocketAddr::from(v6),
        pb::SocketAddr {
            ip: "2001:db8::1".into(),
            port: 8080
        }
    );
    let v4: SocketAddr = "198.19.0.7:80".parse().unwrap();
    assert_eq!(pb::SocketAddr::from(v4).ip, "198.19.0.7");
}

/// The discovery requests the proxy sends are the ones the controller reads.
#[test]
fn discovery_requests() {
    let outbound = OutboundTarget {
        target: Target("198.19.0.7:80".parse().unwrap()),
        client_namespace: "shop".into(),
        client_workload: "web-0".into(),
    };
    assert_eq!(
        OutboundTarget::try_from(dpb::OutboundTarget::from(&outbound)),
        Ok(outbound)
    );
    let inbound = InboundTarget {
        workload: ResourceRef::new("shop", "web-0"),
        port: 8080,
    };
    assert_eq!(
        InboundTarget::try_from(dpb::InboundTarget::from(&inbound)),
        Ok(inbound)
    );
    let gateway = GatewayTarget {
        gateway: ResourceRef::new("edge", "public"),
    };
    assert_eq!(
        GatewayTarget::try_from(dpb::GatewayTarget::from(&gateway)),
        Ok(gateway)
    );
}
