//! The discovery services proxies subscribe to. They only read the index's
//! watch channels: each call subscribes to one target and streams the
//! current value at once and then every changed value
//! ([`trellis_api::watch::serve`]). A slow subscriber only ever gets the
//! latest value and never holds up the index or anyone else.

use crate::index::{Outbound, SharedIndex};
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use trellis_api::proto::discovery::{
    self as pb,
    gateway_config_server::{GatewayConfig, GatewayConfigServer},
    inbound_policies_server::{InboundPolicies, InboundPoliciesServer},
    outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer},
};
use trellis_api::proto::policy as pbp;
use trellis_api::watch::{ResponseStream, serve};
use trellis_api::{GatewayTarget, InboundTarget, OutboundTarget};
use trellis_identity_client::serve::PeerIdentity;
use trellis_policy::{GatewayPolicy, SpiffeId};

/// The three watch services over one index.
#[derive(Clone, Debug)]
pub struct Discovery {
    index: SharedIndex,
    metrics: Arc<Metrics>,
}

impl Discovery {
    pub fn new(index: SharedIndex, metrics: Arc<Metrics>) -> Self {
        Self { index, metrics }
    }

    /// Serves the three services on `listener` in plaintext until
    /// `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        self.serve_incoming(incoming, shutdown).await
    }

    /// Serves the three services over mTLS under `identity`: only clients
    /// holding a mesh certificate get through, and they can verify this is
    /// the controller.
    pub async fn serve_mtls(
        self,
        listener: tokio::net::TcpListener,
        identity: &trellis_identity_client::Identity,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = trellis_identity_client::serve::incoming(listener, identity);
        self.serve_incoming(incoming, shutdown).await
    }

    async fn serve_incoming<IO, IE>(
        self,
        incoming: impl futures::Stream<Item = Result<IO, IE>> + Send + 'static,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error>
    where
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(OutboundPoliciesServer::new(self.clone()))
            .add_service(InboundPoliciesServer::new(self.clone()))
            .add_service(GatewayConfigServer::new(self))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}

/// The verified client of an mTLS connection; `None` in plaintext.
fn peer<T>(request: &Request<T>) -> Option<SpiffeId> {
    request
        .extensions()
        .get::<PeerIdentity>()
        .map(|p| p.0.clone())
}

/// Over mTLS a client watches only its own namespace's view — its
/// consumer routes, its pods' inbound policies, its Gateways — the
/// namespace of its verified SPIFFE id. Plaintext (a controller without
/// identity) is not checked.
fn authorize(peer: Option<&SpiffeId>, namespace: &str) -> Result<(), Status> {
    let Some(peer) = peer else {
        return Ok(());
    };
    match peer.service_account() {
        Some(sa) if sa.namespace == namespace => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "{peer} may not watch the policies of namespace {namespace:?}"
        ))),
    }
}

/// Counts a stream while it is open.
struct Open(Arc<Metrics>, &'static str);

impl Open {
    fn new(metrics: &Arc<Metrics>, service: &'static str) -> Self {
        metrics.stream_opened(service);
        Self(metrics.clone(), service)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.stream_closed(self.1);
    }
}

#[tonic::async_trait]
impl OutboundPolicies for Discovery {
    type WatchStream = ResponseStream<pb::OutboundUpdate>;

    async fn watch(
        &self,
        request: Request<pb::OutboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = peer(&request);
        let t = OutboundTarget::try_from(request.into_inner())?;
        if !t.client_namespace.is_empty() {
            authorize(peer.as_ref(), &t.client_namespace)?;
        }
        let target: SocketAddr = t.target.0;
        let rx = self.index.lock().outbound(target, &t.client_namespace);
        let open = Open::new(&self.metrics, "outbound");
        let metrics = self.metrics.clone();
        Ok(Response::new(serve(rx, move |o: &Outbound| {
            let _ = &open;
            metrics.update_sent("outbound");
            match o {
                Outbound::Policy(p) => pb::OutboundUpdate::from(p.as_ref()),
                Outbound::NoPolicy => pb::OutboundUpdate::from(None),
            }
        })))
    }
}

#[tonic::async_trait]
impl InboundPolicies for Discovery {
    type WatchStream = ResponseStream<pbp::InboundPolicy>;

    async fn watch(
        &self,
        request: Request<pb::InboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = peer(&request);
        let t = InboundTarget::try_from(request.into_inner())?;
        authorize(peer.as_ref(), &t.workload.namespace)?;
        let rx = self.index.lock().inbound(t.workload, t.port);
        let open = Open::new(&self.metrics, "inbound");
        let metrics = self.metrics.clone();
        Ok(Response::new(serve(rx, move |p| {
            let _ = &open;
            metrics.update_sent("inbound");
            pbp::InboundPolicy::from(p.as_ref())
        })))
    }
}

#[tonic::async_trait]
impl GatewayConfig for Discovery {
    type WatchStream = ResponseStream<pbp::GatewayPolicy>;

    async fn watch(
        &self,
        request: Request<pb::GatewayTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = peer(&request);
        let t = GatewayTarget::try_from(request.into_inner())?;
        authorize(peer.as_ref(), &t.gateway.namespace)?;
        let gateway = t.gateway.clone();
        let rx = self.index.lock().gateway(t.gateway);
        let open = Open::new(&self.metrics, "gateway");
        let metrics = self.metrics.clone();
        Ok(Response::new(serve(rx, move |p| {
            let _ = &open;
            metrics.update_sent("gateway");
            match p {
                Some(p) => pbp::GatewayPolicy::from(p.as_ref()),
                // Unknown or not Trellis': no listeners to serve.
                None => pbp::GatewayPolicy::from(&GatewayPolicy {
                    gateway: gateway.clone(),
                    listeners: Vec::new(),
                }),
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_watches_only_its_own_namespace_over_mtls() {
        let shop = SpiffeId::for_service_account("cluster.local", "shop", "web");
        let odd = SpiffeId::parse("spiffe://cluster.local/workload/x").unwrap();
        for (peer, namespace, allowed) in [
            (None, "anything", true),
            (Some(&shop), "shop", true),
            (Some(&shop), "billing", false),
            (Some(&shop), "shop-2", false),
            (Some(&odd), "shop", false),
        ] {
            let got = authorize(peer, namespace);
            assert_eq!(got.is_ok(), allowed, "{peer:?} {namespace}: {got:?}");
            if let Err(status) = got {
                assert_eq!(status.code(), tonic::Code::PermissionDenied);
            }
        }
    }
}
