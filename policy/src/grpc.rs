//! gRPC routes: `GRPCRoute` rules after the controller resolved them.

use crate::{
    HeaderMatch, HostMatch, HttpBackend, RouteRef, SessionPersistence, Timeouts,
    duration::serde_opt_duration, filter::HttpFilter, regex::Regex,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A GRPCRoute attached to a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpcRoute {
    pub meta: RouteRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<HostMatch>,
    pub rules: Vec<GrpcRule>,
}

/// One rule of a GRPCRoute.
///
/// GRPCRoute has no `timeouts` or `retry` fields in Gateway API v1.6; Trellis
/// reads them from the route's annotations (`timeout.trellis.io/request`,
/// `retry.trellis.io/grpc-codes`, ...), the way Linkerd does, so gRPC clients
/// get the same protections as HTTP ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpcRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these selects the rule; empty matches every call.
    #[serde(default)]
    pub matches: Vec<GrpcMatch>,
    /// Only header modifiers and mirrors are valid on GRPCRoute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
    #[serde(default)]
    pub backends: Vec<HttpBackend>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<GrpcRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// `GRPCRouteMatch`: every present condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrpcMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// Matches the `/<service>/<method>` of a call. An absent part matches
/// anything; at least one is present.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GrpcMethodMatch {
    Exact {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
    },
    Regex {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<Regex>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<Regex>,
    },
}

/// Retries of a gRPC rule, on the named gRPC status codes (numbers, e.g. 14
/// for UNAVAILABLE) and on connection errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrpcRetry {
    #[serde(default)]
    pub codes: Vec<u32>,
    pub attempts: u32,
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}
