//! Watches against the controller's discovery service.
//!
//! The channel is plaintext, or — with a [`serve::Connector`] — mTLS under
//! the workload's own certificate towards a controller that must present the
//! SPIFFE id the proxy was given (`TRELLIS_CONTROLLER_IDENTITY`), so a
//! pod that answers on the controller's address cannot feed the proxy
//! policies or the identities its mTLS trusts.

use super::{Backoff, InboundWatch, OutboundWatch, Ready, apply_outbound};
use crate::{metrics::Metrics, upstream::Upstreams};
use std::{
    sync::{Arc, Weak},
    time::Duration,
};
use tonic::transport::{Channel, Endpoint};
use trellis_api::{
    InboundTarget, OutboundTarget,
    proto::discovery::{
        inbound_policies_client::InboundPoliciesClient,
        outbound_policies_client::OutboundPoliciesClient,
    },
};
use trellis_identity_client::serve;
use trellis_policy::{InboundPolicy, OutboundPolicy, ResourceRef, Target};

/// A lazily connected channel to the controller, shared by every watch.
#[derive(Clone, Debug)]
pub struct Controller {
    endpoint: Endpoint,
    channel: Channel,
    /// mTLS under this workload's identity towards the controller's
    /// SPIFFE id; `None` for plaintext.
    tls: Option<serve::Connector>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid controller address {addr:?}: {source}")]
pub struct InvalidAddress {
    addr: String,
    source: tonic::transport::Error,
}

impl Controller {
    /// `addr` is `host:port` or a URI.
    pub fn new(addr: &str, tls: Option<serve::Connector>) -> Result<Self, InvalidAddress> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|source| InvalidAddress {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = match &tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
        };
        Ok(Self {
            endpoint,
            channel,
            tls,
        })
    }

    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => self.endpoint.connect().await,
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
        }
    }

    /// The shared channel, for the gateway's configuration watch.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Connects once in the background and marks the proxy ready when the
    /// controller answers.
    pub(super) fn spawn_readiness(&self, ready: Arc<Ready>, metrics: Arc<Metrics>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff(0);
            loop {
                match this.connect().await {
                    Ok(_) => {
                        tracing::info!(controller = %this.endpoint.uri(), mtls = this.tls.is_some(), "connected to the controller");
                        metrics.controller_connected(true);
                        ready.set_policy();
                        return;
                    }
                    Err(e) => {
                        // The transport error's source says why (refused,
                        // a certificate that is not the controller's).
                        let why = std::error::Error::source(&e).map(ToString::to_string);
                        tracing::warn!(controller = %this.endpoint.uri(), error = %e, cause = ?why, "controller unreachable");
                        tokio::time::sleep(backoff.next()).await;
                    }
                }
            }
        });
    }

    pub(super) async fn watch_outbound(
        self,
        target: Target,
        workload: Option<ResourceRef>,
        w: Weak<OutboundWatch>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
    ) {
        let request = OutboundTarget {
            target,
            client_namespace: workload
                .as_ref()
                .map(|w| w.namespace.clone())
                .unwrap_or_default(),
            client_workload: workload.map(|w| w.name).unwrap_or_default(),
        };
        let mut backoff = Backoff(0);
        loop {
            let mut client = OutboundPoliciesClient::new(self.channel.clone());
            match client.watch(tonic::Request::new((&request).into())).await {
                Ok(rsp) => {
                    metrics.controller_connected(true);
                    let mut updates = rsp.into_inner();
                    loop {
                        let message = match updates.message().await {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(s) => {
                                tracing::debug!(target = %target.0, status = %s, "policy stream broke");
                                break;
                            }
                        };
                        let Some(watch) = w.upgrade() else { return };
                        match Option::<OutboundPolicy>::try_from(message) {
                            Ok(policy) => {
                                backoff.reset();
                                apply_outbound(&watch, target, policy, &upstreams, &metrics);
                            }
                            Err(e) => {
                                tracing::warn!(target = %target.0, error = %e, "refused a policy update; keeping the previous one");
                                metrics.update_invalid();
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(target = %target.0, %status, "policy watch failed");
                    if status.code() == tonic::Code::Unavailable {
                        metrics.controller_connected(false);
                    }
                }
            }
            let Some(watch) = w.upgrade() else { return };
            watch.unavailable();
            drop(watch);
            tokio::time::sleep(backoff.next()).await;
        }
    }

    pub(super) async fn watch_inbound(
        self,
        workload: ResourceRef,
        port: u16,
        w: Weak<InboundWatch>,
    ) {
        let request = InboundTarget { workload, port };
        let mut backoff = Backoff(0);
        loop {
            let mut client = InboundPoliciesClient::new(self.channel.clone());
            if let Ok(rsp) = client.watch(tonic::Request::new((&request).into())).await {
                let mut updates = rsp.into_inner();
                while let Ok(Some(message)) = updates.message().await {
                    let Some(watch) = w.upgrade() else { return };
                    match InboundPolicy::try_from(message) {
                        Ok(policy) => {
                            backoff.reset();
                            watch.publish(Arc::new(Some(policy)));
                        }
                        Err(e) => {
                            tracing::warn!(port, error = %e, "refused an inbound policy update")
                        }
                    }
                }
            }
            let Some(watch) = w.upgrade() else { return };
            watch.unavailable();
            drop(watch);
            tokio::time::sleep(backoff.next()).await;
        }
    }
}
