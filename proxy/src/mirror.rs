//! `RequestMirror`: a copy of the request goes to another backend; its
//! answer is read and thrown away.
//!
//! A mirror can never hurt the client: it runs in a task of its own, its
//! body is a follower copy ([`crate::replay`]) that only reads what the real
//! attempt already pulled (and fails once the client's body is released),
//! it is cut off after [`Mirror::timeout`], and each mirror backend takes at
//! most [`MAX_IN_FLIGHT`] mirrored requests at once — beyond that a mirror
//! is dropped and counted, never queued. Memory per mirror is therefore
//! bounded by the replay limit, and the number of mirrors by the limit.

use crate::{
    body::ReqBody,
    metrics::{Metrics, RouteLabels},
    outbound::BackendState,
};
use http::{HeaderMap, Method, Request, Uri, Version, request::Parts};
use http_body_util::BodyExt;
use std::{sync::Arc, time::Duration};

/// Mirrored requests in flight per mirror backend.
pub const MAX_IN_FLIGHT: usize = 100;
/// How long a mirror may take when the rule sets no request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request head that can be sent again (retries, mirrors).
#[derive(Clone, Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Head {
    pub fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    pub fn request<B>(&self, body: B) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// One mirror of one request.
#[derive(Debug)]
pub struct Mirror {
    pub backend: Arc<BackendState>,
    /// The route's labels with the mirror backend.
    pub labels: RouteLabels,
    pub timeout: Duration,
}

impl Mirror {
    /// Sends the copy in the background.
    pub fn spawn(self, metrics: Arc<Metrics>, head: &Head, body: ReqBody) {
        let Ok(permit) = self.backend.mirrors.clone().try_acquire_owned() else {
            metrics.mirror(&self.labels, "dropped");
            return;
        };
        let Some(endpoint) = self.backend.balancer.pick() else {
            metrics.mirror(&self.labels, "failed");
            return;
        };
        let req = head.request(body);
        tokio::spawn(async move {
            let exchange = async {
                let rsp = endpoint.send(req).await.ok()?;
                let ok = !rsp.status().is_server_error();
                // Read the answer to its end so the connection is reused.
                rsp.into_body().collect().await.ok()?;
                Some(ok)
            };
            let ok = tokio::time::timeout(self.timeout, exchange)
                .await
                .ok()
                .flatten();
            match ok {
                Some(true) => endpoint.accrual.success(),
                _ => {
                    if endpoint.accrual.failure().is_some() {
                        metrics.ejection(&self.backend.name);
                    }
                }
            }
            metrics.mirror(&self.labels, if ok.is_some() { "sent" } else { "failed" });
            drop(permit);
        });
    }
}
