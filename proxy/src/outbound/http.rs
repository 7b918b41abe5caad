//! The outbound HTTP path, one request at a time, in stages:
//!
//! ```text
//!  request ──► route (find: Gateway API precedence; no match → 404)
//!          ──► filters (the rule's: redirect / CORS preflight answer here)
//!          ──► split (backend by weight; none or invalid → 500)
//!          ──► filters (the backend's)
//!          ──► exchange (mirrors; attempts with retries, budget and
//!              timeouts; each attempt: balance (P2C, failure accrual) ─► endpoint)
//!          ──► response filters (the backend's, then the rule's), CORS, metrics
//! ```
//!
//! A Gateway listener's requests take the same stages with the listener's
//! routes ([`Frontend::Listener`]): no route is 404, redirects keep the
//! listener's scheme and port, and each request reaches its backend in the
//! HTTP version the backend speaks.
//!
//! The target's resolved policy is loaded once per request (an atomic load,
//! no lock) and held until the response head is back, so a policy swap
//! never disturbs a request in flight, and a weight change applies from
//! the next request on. Every answer of the proxy itself is a [`Refusal`]:
//! an HTTP status with [`crate::http::PROXY_ERROR`], or for a gRPC client
//! the matching gRPC status in a trailers-only response.

use super::{
    exchange::Exchange,
    filters::{self, Origin, Plan},
    resolved::{BackendState, Frontend, Resolved},
};
use crate::{
    body::Body,
    discovery::OutboundWatch,
    grpc,
    http::{error_response, forward_upgrade, is_upgrade, upstream_error},
    metrics::{self, Metrics, Name, RouteLabels, RouteMetrics},
    mirror::{self, Mirror},
    retry::{self, Policy},
    upstream::Upstream,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::{Arc, OnceLock};
use tokio::time::Instant;
use trellis_policy::{HttpBackend, HttpFilter, HttpMatch, Timeouts, split};

/// Why the proxy answers a request itself.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: String,
}

impl Refusal {
    pub fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    /// The answer: an HTTP status, or a gRPC status for a gRPC client.
    pub fn into_response(self, grpc: bool) -> Response<Body> {
        if grpc {
            grpc::status_response(grpc::code_for(self.status), &self.why)
        } else {
            error_response(self.status, &self.why)
        }
    }
}

/// The outcome of the route stage: what the matching rule says, or the
/// Service itself when the target has no routes.
struct Routed<'a> {
    label: Name,
    filters: &'a [HttpFilter],
    /// The match that selected an HTTP rule (`ReplacePrefixMatch` needs it).
    matched: Option<&'a HttpMatch>,
    backends: Option<RuleBackends<'a>>,
    timeouts: Timeouts,
    retry: Policy<'a>,
    /// The metric series per backend of the rule (the Service's one when no
    /// route governs).
    series: &'a [OnceLock<RouteMetrics>],
}

/// A rule's backends as the policy states them and as resolved (same order).
type RuleBackends<'a> = (&'a [HttpBackend], &'a [Option<Arc<BackendState>>]);

/// Serves the HTTP requests of one client connection to one target.
#[derive(Debug)]
pub struct OutboundHttp {
    pub watch: Arc<OutboundWatch>,
    /// The original destination, for a target that turns out not to be a
    /// Service (none for a Gateway listener, which always has a policy).
    pub orig: Option<Arc<Upstream>>,
    pub metrics: Arc<Metrics>,
}

impl OutboundHttp {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let resolved = self.watch.load_full();
        let grpc = grpc::is_grpc(&req);
        let mut labels = RouteLabels {
            direction: resolved.frontend.direction(),
            service: resolved.service.clone(),
            route: metrics::fixed::none(),
            backend: metrics::fixed::empty(),
        };
        let mut series = None;
        let staged = self.stages(&resolved, req, &mut labels, &mut series, start, grpc);
        let rsp = match staged.await {
            Ok(rsp) => rsp,
            Err(r) => r.into_response(grpc),
        };
        let status = rsp.status();
        let grpc_failed = grpc && retry::grpc_status(rsp.headers()).is_some_and(|c| c != 0);
        let success = !status.is_server_error() && !grpc_failed;
        match series {
            Some(slot) => {
                let series = slot.get_or_init(|| RouteMetrics::new(&self.metrics, labels));
                series.request(status.as_u16(), start.elapsed());
                series.outcome(success);
            }
            None => {
                self.metrics
                    .request(&labels, status.as_u16(), start.elapsed());
                self.metrics.outcome(&labels, success);
            }
        }
        rsp
    }

    /// The stages; `series` is set once the route and backend are known
    /// (the labels are then final).
    async fn stages<'r>(
        &self,
        resolved: &'r Resolved,
        mut req: Request<Incoming>,
        labels: &mut RouteLabels,
        series: &mut Option<&'r OnceLock<RouteMetrics>>,
        start: Instant,
        grpc: bool,
    ) -> Result<Response<Body>, Refusal> {
        let Some(policy) = &resolved.policy else {
            let Some(orig) = &self.orig else {
                return Err(no_route());
            };
            labels.backend = metrics::fixed::original_destination();
            return Ok(send_once(orig, req).await);
        };
        let routed = route(resolved, &req, grpc)?;
        labels.route = routed.label.clone();
        let origin = Origin {
            scheme: resolved.frontend.scheme(),
            port: policy.port,
            service: &policy.service.name,
        };
        let mut plan = Plan::default();
        if let Some(answer) =
            filters::request(routed.filters, routed.matched, &mut req, origin, &mut plan)?
        {
            return Ok(answer);
        }
        let (backend, state, slot) = split_stage(resolved, &routed)?;
        labels.backend = state.name.clone();
        *series = Some(slot);
        let backend_filters = backend.map_or(&[][..], |b| &b.filters[..]);
        if let Some(answer) =
            filters::request(backend_filters, routed.matched, &mut req, origin, &mut plan)?
        {
            return Ok(answer);
        }
        if let Frontend::Listener { .. } = resolved.frontend {
            crate::gateway::backend_version(&mut req, backend.map(|b| &b.backend), grpc);
        }
        let mut rsp = if is_upgrade(&req) {
            let endpoint = state.balancer.pick().ok_or_else(|| no_endpoints(state))?;
            send_once(&endpoint, req).await
        } else {
            let mirrors = plan
                .mirrors
                .iter()
                .filter(|m| m.fraction.selects(fastrand::u64(..)))
                .filter_map(|m| {
                    let backend = resolved.backend(&m.backend)?.clone();
                    Some(Mirror {
                        labels: RouteLabels {
                            backend: backend.name.clone(),
                            ..labels.clone()
                        },
                        backend,
                        timeout: routed.timeouts.request.unwrap_or(mirror::DEFAULT_TIMEOUT),
                    })
                })
                .collect();
            Exchange {
                metrics: &self.metrics,
                labels,
                backend: state,
                retry: routed.retry,
                timeouts: routed.timeouts,
                start,
                grpc,
                mirrors,
            }
            .run(req)
            .await?
        };
        filters::response(backend_filters, &mut rsp)?;
        filters::response(routed.filters, &mut rsp)?;
        if let Some(cors) = &plan.cors {
            cors.apply(rsp.headers_mut());
        }
        Ok(rsp)
    }
}

/// One exchange with no policy around it (the original destination, or an
/// upgrade), with the endpoint's load tracked until the response head.
async fn send_once(endpoint: &Upstream, req: Request<Incoming>) -> Response<Body> {
    let in_flight = endpoint.load.start();
    let result = if is_upgrade(&req) {
        forward_upgrade(req, |req| endpoint.send_upgrade(req)).await
    } else {
        endpoint.send(req).await
    };
    in_flight.finish();
    result.unwrap_or_else(|e| upstream_error(&e))
}

fn no_endpoints(state: &BackendState) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("backend {} has no ready endpoints", state.name),
    )
}

/// The route stage. gRPC calls go to the GRPCRoutes when there are any;
/// HTTPRoutes govern everything else.
fn route<'a>(
    resolved: &'a Resolved,
    req: &Request<Incoming>,
    grpc: bool,
) -> Result<Routed<'a>, Refusal> {
    if !resolved.grpc.is_empty() && grpc {
        return match resolved.grpc.find(req) {
            Some(m) => {
                let rule = &resolved.grpc_rules[m.route_index][m.rule_index];
                Ok(Routed {
                    label: rule.label.clone(),
                    filters: &m.rule.filters,
                    matched: None,
                    backends: Some((&m.rule.backends, &rule.backends)),
                    timeouts: m.rule.timeouts,
                    retry: m.rule.retry.as_ref().map_or(Policy::None, Policy::Grpc),
                    series: &rule.metrics,
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
                    matched: m.matched,
                    backends: Some((&m.rule.backends, &rule.backends)),
                    timeouts: m.rule.timeouts,
                    retry: m.rule.retry.as_ref().map_or(Policy::None, Policy::Http),
                    series: &rule.metrics,
                })
            }
            None => Err(no_route()),
        };
    }
    if !resolved.grpc.is_empty() || resolved.frontend != Frontend::Service {
        return Err(no_route());
    }
    Ok(Routed {
        label: metrics::fixed::default_route(),
        filters: &[],
        matched: None,
        backends: None,
        timeouts: Timeouts::default(),
        retry: Policy::None,
        series: std::slice::from_ref(&resolved.default_metrics),
    })
}

fn no_route() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, "no route rule matches the request")
}

/// The chosen backend: as the rule states it (`None` for the Service
/// itself), its state, and the metric series of the choice.
type Split<'a> = (
    Option<&'a HttpBackend>,
    &'a Arc<BackendState>,
    &'a OnceLock<RouteMetrics>,
);

/// The split stage: the backend by weight, or the Service itself.
fn split_stage<'a>(resolved: &'a Resolved, routed: &Routed<'a>) -> Result<Split<'a>, Refusal> {
    let Some((backends, states)) = routed.backends else {
        let series = &resolved.default_metrics;
        return resolved
            .default
            .as_ref()
            .map(|s| (None, s, series))
            .ok_or_else(|| {
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
        Some(state) => Ok((Some(&backends[i]), state, &routed.series[i])),
        None => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backend {} is invalid", backends[i].backend.name()),
        )),
    }
}
