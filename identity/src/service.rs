//! `Identity.Certify`: rate limit (per caller address) → authenticate the
//! token → check the CSR → refuse a CSR that asks for another identity →
//! sign the caller's SPIFFE id over the CSR's key. Every refusal has its
//! gRPC code and is counted by reason; log lines name the caller and the
//! reason, never a token, a key or what the CSR holds.

use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
use trellis_api::proto::identity::identity_server::Identity;
use trellis_api::proto::identity::{CertifyRequest, CertifyResponse};

use crate::auth::{AuthError, Authenticator};
use crate::ca::Authority;
use crate::csr;
use crate::limit::RateLimit;
use crate::metrics::{CaMetrics, Refusal};

/// The authority in use (swapped on rotation) and what it issues.
#[derive(Debug)]
pub struct Ca {
    pub authority: ArcSwap<Authority>,
    pub trust_domain: String,
    pub lifetime: Duration,
}

pub struct CertifyService {
    ca: Arc<Ca>,
    auth: Arc<dyn Authenticator>,
    limit: RateLimit,
    metrics: CaMetrics,
}

impl std::fmt::Debug for CertifyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifyService")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

struct Refused {
    reason: Refusal,
    status: Status,
}

fn refused(reason: Refusal, status: Status) -> Refused {
    Refused { reason, status }
}

impl CertifyService {
    pub fn new(
        ca: Arc<Ca>,
        auth: Arc<dyn Authenticator>,
        limit: RateLimit,
        metrics: CaMetrics,
    ) -> Self {
        Self {
            ca,
            auth,
            limit,
            metrics,
        }
    }

    async fn certify(
        &self,
        peer: Option<IpAddr>,
        request: CertifyRequest,
        caller_id: &mut Option<String>,
    ) -> Result<CertifyResponse, Refused> {
        if let Some(ip) = peer
            && !self.limit.allow(ip)
        {
            return Err(refused(
                Refusal::RateLimited,
                Status::resource_exhausted("too many certificate requests from this address"),
            ));
        }
        if request.token.is_empty() {
            return Err(refused(
                Refusal::Unauthenticated,
                Status::unauthenticated("no token"),
            ));
        }
        let caller = self
            .auth
            .authenticate(&request.token)
            .await
            .map_err(|e| match e {
                AuthError::Unavailable(_) => {
                    refused(Refusal::Unavailable, Status::unavailable(e.to_string()))
                }
                AuthError::Refused(_) | AuthError::Expired => refused(
                    Refusal::Unauthenticated,
                    Status::unauthenticated(e.to_string()),
                ),
            })?;
        let id = caller.spiffe_id(&self.ca.trust_domain).map_err(|e| {
            refused(
                Refusal::Unauthenticated,
                Status::unauthenticated(e.to_string()),
            )
        })?;
        *caller_id = Some(id.to_string());
        let csr = csr::check(&request.csr_der)
            .map_err(|e| refused(Refusal::InvalidCsr, Status::invalid_argument(e.to_string())))?;
        if csr.uri_sans.iter().any(|u| u != id.as_str()) {
            return Err(refused(
                Refusal::PermissionDenied,
                Status::permission_denied(format!(
                    "csr asks for an identity other than the caller's, {id}"
                )),
            ));
        }
        let authority = self.ca.authority.load();
        let chain = authority
            .issue_workload(&id, &csr.public_key, self.ca.lifetime, SystemTime::now())
            .map_err(|e| {
                tracing::error!(error = %e, "signing failed");
                refused(Refusal::Internal, Status::internal("signing failed"))
            })?;
        let (_, not_after) = trellis_identity_client::cert::validity(&chain[0])
            .map_err(|_| refused(Refusal::Internal, Status::internal("signing failed")))?;
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        Ok(CertifyResponse {
            chain_der: chain.into_iter().map(|c| c.to_vec()).collect(),
            not_after: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            identity: id.to_string(),
        })
    }
}

#[tonic::async_trait]
impl Identity for CertifyService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let mut caller = None;
        match self.certify(peer, request.into_inner(), &mut caller).await {
            Ok(response) => {
                self.metrics.issued();
                tracing::info!(identity = %response.identity, peer = ?peer, "certificate issued");
                Ok(Response::new(response))
            }
            Err(Refused { reason, status }) => {
                self.metrics.refused(reason);
                tracing::warn!(
                    reason = reason.as_str(),
                    caller = caller.as_deref().unwrap_or("unauthenticated"),
                    peer = ?peer,
                    "certificate request refused"
                );
                Err(status)
            }
        }
    }
}
