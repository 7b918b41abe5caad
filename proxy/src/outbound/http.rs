//! The outbound HTTP path, one request at a time, in stages:
//!
//! ```text
//!  request ──► route (find: Gateway API precedence; no match → 404)
//!          ──► filters (the rule's request filters)
//!          ──► split (backend by weight; none or invalid → 500)
//!          ──► balance (P2C over peak-EWMA; no endpoint → 503)
//!          ──► endpoint (direct, or over the mesh; upgrades on their own connection)
//!          ──► response filters, metrics
//! ```
//!
//! The target's resolved policy is loaded once per request (an atomic load,
//! no lock) and held until the response head is back, so a policy swap
//! never disturbs a request in flight.

use super::resolved::{BackendState, Resolved};
use crate::{
    body::Body,
    discovery::OutboundWatch,
    http::{error_response, forward_upgrade, is_upgrade, upstream_error},
    metrics::{self, Direction, Metrics, Name, RouteLabels},
    upstream::Upstream,
};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::time::Instant;
use trellis_policy::{HttpBackend, HttpFilter, split};

/// Why the proxy answers a request itself.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    why: String,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }
}

/// The outcome of the route stage: the rule's filters and backends, or the
/// Service itself when the target has no routes.
struct Routed<'a> {
    label: Name,
    filters: &'a [HttpFilter],
    backends: Option<RuleBackends<'a>>,
}

/// A rule's backends as the policy states them and as resolved (same order).
type RuleBackends<'a> = (&'a [HttpBackend], &'a [Option<Arc<BackendState>>]);

/// Serves the HTTP requests of one client connection to one target.
#[derive(Debug)]
pub struct OutboundHttp {
    pub watch: Arc<OutboundWatch>,
    /// The original destination, for a target that turns out not to be a
    /// Service.
    pub orig: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
}

impl OutboundHttp {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let resolved = self.watch.load_full();
        let mut labels = RouteLabels {
            direction: Direction::Outbound,
            service: resolved.service.clone(),
            route: metrics::fixed::none(),
            backend: metrics::fixed::empty(),
        };
        let rsp = match self.stages(&resolved, req, &mut labels).await {
            Ok(rsp) => rsp,
            Err(r) => error_response(r.status, &r.why),
        };
        self.metrics
            .request(&labels, rsp.status().as_u16(), start.elapsed());
        rsp
    }

    async fn stages(
        &self,
        resolved: &Resolved,
        mut req: Request<Incoming>,
        labels: &mut RouteLabels,
    ) -> Result<Response<Body>, Refusal> {
        if resolved.policy.is_none() {
            labels.backend = metrics::fixed::original_destination();
            return self.send(&self.orig, req).await;
        }
        let routed = route(resolved, &req)?;
        labels.route = routed.label.clone();
        request_filters(routed.filters, &mut req)?;
        let (backend, state) = split_stage(resolved, &routed)?;
        labels.backend = state.name.clone();
        if let Some(b) = backend {
            request_filters(&b.filters, &mut req)?;
        }
        let endpoint = state.balancer.pick().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("backend {} has no ready endpoints", state.name),
            )
        })?;
        let mut rsp = self.send(&endpoint, req).await?;
        response_filters(routed.filters, &mut rsp)?;
        if let Some(b) = backend {
            response_filters(&b.filters, &mut rsp)?;
        }
        Ok(rsp)
    }

    /// The endpoint stage: one exchange, with the endpoint's load tracked
    /// until the response head arrives.
    async fn send(
        &self,
        endpoint: &Upstream,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Refusal> {
        let in_flight = endpoint.load.start();
        let result = if is_upgrade(&req) {
            forward_upgrade(req, |req| endpoint.send_upgrade(req)).await
        } else {
            endpoint.send(req).await
        };
        in_flight.finish();
        result.or_else(|e| Ok(upstream_error(&e)))
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The route stage.
fn route<'a>(resolved: &'a Resolved, req: &Request<Incoming>) -> Result<Routed<'a>, Refusal> {
    if !resolved.grpc.is_empty() && is_grpc(req) {
        return match resolved.grpc.find(req) {
            Some(m) => {
                let rule = &resolved.grpc_rules[m.route_index][m.rule_index];
                Ok(Routed {
                    label: rule.label.clone(),
                    filters: &m.rule.filters,
                    backends: Some((&m.rule.backends, &rule.backends)),
                })
            }
            None => Err(no_route()),
        };
    }
    if !resolved.http.is_empty() {
        return match resolved.http.find(req) {
            Some(m) => {
                let rule = &resolved.http_rules[m.route_index][m.rule_index];
                Ok(Routed {
                    label: rule.label.clone(),
                    filters: &m.rule.filters,
                    backends: Some((&m.rule.backends, &rule.backends)),
                })
            }
            None => Err(no_route()),
        };
    }
    if !resolved.grpc.is_empty() {
        return Err(no_route());
    }
    Ok(Routed {
        label: metrics::fixed::default_route(),
        filters: &[],
        backends: None,
    })
}

fn no_route() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, "no route rule matches the request")
}

/// The split stage: the backend by weight, or the Service itself.
fn split_stage<'a>(
    resolved: &'a Resolved,
    routed: &Routed<'a>,
) -> Result<(Option<&'a HttpBackend>, &'a Arc<BackendState>), Refusal> {
    let Some((backends, states)) = routed.backends else {
        return resolved.default.as_ref().map(|s| (None, s)).ok_or_else(|| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the service backend is invalid",
            )
        });
    };
    let i =
        split::choose(backends.iter().map(|b| b.weight), fastrand::u64(..)).ok_or_else(|| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the rule has no backend with a weight",
            )
        })?;
    match &states[i] {
        Some(state) => Ok((Some(&backends[i]), state)),
        None => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backend {} is invalid", backends[i].backend.name()),
        )),
    }
}

/// The filters stage (request side). Header modifiers apply here; a filter
/// the controller could not resolve answers 500 as the spec requires.
fn request_filters(filters: &[HttpFilter], req: &mut Request<Incoming>) -> Result<(), Refusal> {
    for f in filters {
        match f {
            HttpFilter::RequestHeaderModifier(m) => m
                .apply(req.headers_mut())
                .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            HttpFilter::Invalid { message } => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message.clone(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn response_filters(filters: &[HttpFilter], rsp: &mut Response<Body>) -> Result<(), Refusal> {
    for f in filters {
        if let HttpFilter::ResponseHeaderModifier(m) = f {
            m.apply(rsp.headers_mut())
                .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
    }
    Ok(())
}
