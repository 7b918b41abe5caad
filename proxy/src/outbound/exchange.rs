//! The endpoint stage of a routed request: attempts, retries, timeouts and
//! mirrors.
//!
//! ```text
//!  deadline = start + min(timeouts.request, grpc-timeout)   ── passes → 504 / DEADLINE_EXCEEDED
//!  ├─ mirrors: a copy each, in their own tasks (see crate::mirror)
//!  └─ loop: endpoint (P2C, failure accrual) ── attempt, cut at timeouts.backendRequest
//!        outcome → accrual; retried? (rule's codes, connection errors, attempt timeouts;
//!                  attempts left; body replayable; budget → else 503) ── backoff ─┘
//! ```
//!
//! A retry is decided on the response head only, before anything reaches
//! the client, so no response byte is ever sent twice. The body of the
//! answer that is finally returned is cut at the deadline too (the request
//! timeout covers the whole exchange).

use super::{BackendState, http::Refusal};
use crate::{
    body::{Body, ReqBody},
    client,
    grpc::{self, code},
    metrics::{Metrics, RouteLabels},
    mirror::{Head, Mirror},
    replay::Replay,
    retry::{self, Outcome, Policy},
    upstream::Upstream,
};
use http::{Request, Response, StatusCode, request::Parts};
use http_body::Body as _;
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::time::{Instant, timeout_at};
use trellis_policy::Timeouts;

/// One routed request on its way to a backend.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub metrics: &'a Arc<Metrics>,
    pub labels: &'a RouteLabels,
    pub backend: &'a BackendState,
    pub retry: Policy<'a>,
    pub timeouts: Timeouts,
    /// When the request arrived.
    pub start: Instant,
    pub grpc: bool,
    pub mirrors: Vec<Mirror>,
}

/// The client's body as attempts get it.
enum Source {
    Empty,
    Once(Option<Incoming>),
    Replay(Replay),
}

impl Source {
    fn next(&mut self) -> ReqBody {
        match self {
            Source::Empty => ReqBody::Empty,
            Source::Once(b) => b.take().map_or(ReqBody::Empty, ReqBody::Incoming),
            Source::Replay(r) => ReqBody::Replay(r.body()),
        }
    }

    fn follower(&self) -> ReqBody {
        match self {
            Source::Replay(r) => ReqBody::Replay(r.follower()),
            Source::Empty | Source::Once(_) => ReqBody::Empty,
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            Source::Empty => true,
            Source::Once(_) => false,
            Source::Replay(r) => r.can_replay(),
        }
    }
}

/// How an attempt ended.
enum Attempt {
    Response(Response<Body>),
    Failed(client::Error),
    TimedOut,
}

impl Exchange<'_> {
    pub async fn run(mut self, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
        let (parts, body) = req.into_parts();
        let grpc_timeout = if self.grpc {
            parts
                .headers
                .get(grpc::TIMEOUT)
                .and_then(grpc::parse_timeout)
        } else {
            None
        };
        let deadline = [self.timeouts.request, grpc_timeout]
            .into_iter()
            .flatten()
            .min()
            .map(|d| self.start + d);
        let mut source = if body.is_end_stream() {
            Source::Empty
        } else if self.retry.is_configured() || !self.mirrors.is_empty() {
            Source::Replay(Replay::new(body))
        } else {
            Source::Once(Some(body))
        };
        let retries = self.retry.max_retries() > 0 && !matches!(source, Source::Once(_));
        let head = (retries || !self.mirrors.is_empty()).then(|| Head::of(&parts));
        if let Some(head) = &head {
            for m in std::mem::take(&mut self.mirrors) {
                m.spawn(self.metrics.clone(), head, source.follower());
            }
        }
        self.backend.budget.deposit();
        let attempts = self.attempts(parts, head.as_ref(), &mut source, deadline);
        match deadline {
            None => attempts.await,
            Some(at) => match timeout_at(at, attempts).await {
                Ok(r) => r,
                Err(_) => Err(self.request_timed_out()),
            },
        }
    }

    /// `timeouts.request` (or the client's `grpc-timeout`) passed.
    fn request_timed_out(&self) -> Refusal {
        self.metrics.timeout(self.labels, "request");
        Refusal::new(StatusCode::GATEWAY_TIMEOUT, "the request timed out")
    }

    async fn attempts(
        &self,
        parts: Parts,
        head: Option<&Head>,
        source: &mut Source,
        deadline: Option<Instant>,
    ) -> Result<Response<Body>, Refusal> {
        let mut first = Some(parts);
        let mut retries = 0;
        let mut previous: Option<Arc<Upstream>> = None;
        loop {
            let balancer = &self.backend.balancer;
            let picked = match &previous {
                None => balancer.pick(),
                Some(p) => balancer.pick_other(p),
            };
            let endpoint = picked.ok_or_else(|| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("backend {} has no ready endpoints", self.backend.name),
                )
            })?;
            let body = source.next();
            let mut req = match (first.take(), head) {
                (Some(parts), _) => Request::from_parts(parts, body),
                (None, Some(head)) => head.request(body),
                (None, None) => {
                    return Err(Refusal::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "a retry without the request head",
                    ));
                }
            };
            let attempt_deadline = [
                deadline,
                self.timeouts.backend_request.map(|d| Instant::now() + d),
            ]
            .into_iter()
            .flatten()
            .min();
            if self.grpc
                && let Some(at) = attempt_deadline
            {
                let left = at.saturating_duration_since(Instant::now());
                req.headers_mut()
                    .insert(grpc::TIMEOUT, grpc::format_timeout(left));
            }
            let attempt = self.attempt(&endpoint, req, attempt_deadline).await;
            let outcome = match &attempt {
                Attempt::Response(rsp) => self.retry.response(rsp.status(), rsp.headers()),
                Attempt::Failed(e) if e.is_retry_safe() => Outcome::ConnectFailed,
                Attempt::Failed(_) => Outcome::Broken,
                Attempt::TimedOut if deadline.is_some() && attempt_deadline == deadline => {
                    return Err(self.request_timed_out());
                }
                Attempt::TimedOut => {
                    self.metrics.timeout(self.labels, "backend_request");
                    Outcome::TimedOut
                }
            };
            let backoff = retry::backoff(self.retry.base_backoff(), retries + 1, fastrand::f64());
            let again = self.retry.retries(outcome)
                && retries < self.retry.max_retries()
                && source.can_replay()
                && head.is_some()
                && deadline.is_none_or(|d| Instant::now() + backoff < d);
            if !again {
                return finish(attempt, attempt_deadline);
            }
            if !self.backend.budget.withdraw() {
                self.metrics.budget_exhausted(self.labels);
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the retry budget of backend {} is spent", self.backend.name),
                ));
            }
            drop(attempt);
            previous = Some(endpoint);
            self.metrics.retry(self.labels);
            retries += 1;
            tokio::time::sleep(backoff).await;
        }
    }

    /// One attempt on one endpoint; its outcome goes to failure accrual.
    async fn attempt(
        &self,
        endpoint: &Upstream,
        req: Request<ReqBody>,
        deadline: Option<Instant>,
    ) -> Attempt {
        let in_flight = endpoint.load.start();
        let sent = endpoint.send(req);
        let attempt = match deadline {
            None => sent.await.map_or_else(Attempt::Failed, Attempt::Response),
            Some(at) => match timeout_at(at, sent).await {
                Ok(r) => r.map_or_else(Attempt::Failed, Attempt::Response),
                Err(_) => Attempt::TimedOut,
            },
        };
        in_flight.finish();
        let failed = match &attempt {
            Attempt::Response(rsp) => {
                rsp.status().is_server_error()
                    || retry::grpc_status(rsp.headers()) == Some(code::UNAVAILABLE)
            }
            Attempt::Failed(_) | Attempt::TimedOut => true,
        };
        if !failed {
            endpoint.accrual.success();
        } else if endpoint.accrual.failure().is_some() {
            tracing::debug!(endpoint = %endpoint.addr, backend = %self.backend.name, "endpoint ejected");
            self.metrics.ejection(&self.backend.name);
        }
        attempt
    }
}

/// The client's answer from the last attempt.
fn finish(attempt: Attempt, deadline: Option<Instant>) -> Result<Response<Body>, Refusal> {
    match attempt {
        Attempt::Response(rsp) => Ok(match deadline {
            Some(at) => rsp.map(|b| b.with_deadline(at)),
            None => rsp,
        }),
        Attempt::Failed(e) => {
            tracing::debug!(error = %e, "upstream failed");
            Err(Refusal::new(StatusCode::BAD_GATEWAY, e.to_string()))
        }
        Attempt::TimedOut => Err(Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the backend request timed out",
        )),
    }
}
