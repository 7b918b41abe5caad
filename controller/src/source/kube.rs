//! Kubernetes as the source of objects: one kube-runtime watcher per kind
//! feeding the index (`InitApply`… `InitDone` become one `reset`, later
//! events `apply`/`delete`), plus the lease and status writer
//! ([`super::lease`], [`super::status_writer`]).
//!
//! A kind whose CRD is not installed (the list answers 404) counts as empty
//! so the controller still becomes ready; its watcher keeps retrying with
//! backoff and picks the kind up once the CRD appears.

use super::{Source, SourceError, lease, status_writer};
use crate::crd::{AuthorizationPolicy, TcpRoute};
use crate::index::SharedIndex;
use crate::objects::{Kind, Object, ObjectKey};
use futures::future::BoxFuture;
use futures::{StreamExt, TryFutureExt};
use gateway_api::experimental::{
    gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute, httproutes::HttpRoute,
    referencegrants::ReferenceGrant, tlsroutes::TlsRoute,
    xbackendtrafficpolicies::XBackendTrafficPolicy, xmeshes::XMesh,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tokio::sync::{mpsc, watch};

/// Where the lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// The Kubernetes source.
#[derive(Clone)]
pub struct Kubernetes {
    client: Client,
    lease: LeaseConfig,
}

impl Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    pub fn new(client: Client, lease: LeaseConfig) -> Self {
        Self { client, lease }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

/// Watches one kind until the stream ends (it does not, in practice: the
/// watcher relists and retries with backoff).
async fn watch_kind<K>(
    client: Client,
    kind: Kind,
    config: watcher::Config,
    wrap: fn(K) -> Object,
    index: SharedIndex,
    synced: mpsc::UnboundedSender<Kind>,
) -> Result<(), SourceError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api = Api::<K>::all(client);
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut buffer = Vec::new();
    let mut initial = true;
    let mark = |initial: &mut bool| {
        if std::mem::take(initial) {
            // The receiver only goes away when the controller stops.
            let _ = synced.send(kind);
        }
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(o)) => buffer.push(wrap(o)),
            Ok(Event::InitDone) => {
                index.lock().reset(kind, std::mem::take(&mut buffer));
                mark(&mut initial);
            }
            Ok(Event::Apply(o)) => index.lock().apply(wrap(o)),
            Ok(Event::Delete(o)) => {
                let key = ObjectKey::new(o.namespace().unwrap_or_default(), o.name_any());
                index.lock().delete(kind, &key);
            }
            Err(e) if is_not_found(&e) => {
                if initial {
                    tracing::warn!(%kind, "not served by the API server (CRD missing?); treating as empty");
                    index.lock().reset(kind, Vec::new());
                    mark(&mut initial);
                }
            }
            Err(e) => tracing::warn!(%kind, "watch failed, retrying: {e}"),
        }
    }
    Err(SourceError::WatchEnded {
        kind: kind.group_kind().1,
    })
}

impl Source for Kubernetes {
    fn run(
        self: Box<Self>,
        index: SharedIndex,
        ready: watch::Sender<bool>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let c = &self.client;
            let all = watcher::Config::default;
            let mut tasks: Vec<BoxFuture<'static, Result<(), SourceError>>> = vec![
                Box::pin(watch_kind::<Namespace>(
                    c.clone(),
                    Kind::Namespace,
                    all(),
                    Object::Namespace,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<Service>(
                    c.clone(),
                    Kind::Service,
                    all(),
                    Object::Service,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<EndpointSlice>(
                    c.clone(),
                    Kind::EndpointSlice,
                    all(),
                    Object::EndpointSlice,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<Pod>(
                    c.clone(),
                    Kind::Pod,
                    all(),
                    Object::Pod,
                    index.clone(),
                    tx.clone(),
                )),
                // Only TLS Secrets are ever read: listener certificates.
                Box::pin(watch_kind::<Secret>(
                    c.clone(),
                    Kind::Secret,
                    all().fields("type=kubernetes.io/tls"),
                    Object::Secret,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<HttpRoute>(
                    c.clone(),
                    Kind::HttpRoute,
                    all(),
                    Object::HttpRoute,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<GrpcRoute>(
                    c.clone(),
                    Kind::GrpcRoute,
                    all(),
                    Object::GrpcRoute,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<TcpRoute>(
                    c.clone(),
                    Kind::TcpRoute,
                    all(),
                    Object::TcpRoute,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<TlsRoute>(
                    c.clone(),
                    Kind::TlsRoute,
                    all(),
                    Object::TlsRoute,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<Gateway>(
                    c.clone(),
                    Kind::Gateway,
                    all(),
                    Object::Gateway,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<GatewayClass>(
                    c.clone(),
                    Kind::GatewayClass,
                    all(),
                    Object::GatewayClass,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<ReferenceGrant>(
                    c.clone(),
                    Kind::ReferenceGrant,
                    all(),
                    Object::ReferenceGrant,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<XBackendTrafficPolicy>(
                    c.clone(),
                    Kind::BackendTrafficPolicy,
                    all(),
                    Object::BackendTrafficPolicy,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<XMesh>(
                    c.clone(),
                    Kind::Mesh,
                    all(),
                    Object::Mesh,
                    index.clone(),
                    tx.clone(),
                )),
                Box::pin(watch_kind::<AuthorizationPolicy>(
                    c.clone(),
                    Kind::AuthorizationPolicy,
                    all(),
                    Object::AuthorizationPolicy,
                    index.clone(),
                    tx.clone(),
                )),
            ];
            drop(tx);
            let kinds = tasks.len();
            let (leader_tx, leader_rx) = watch::channel(false);
            tasks.push(Box::pin(
                lease::run(self.client.clone(), self.lease.clone(), leader_tx)
                    .map_err(SourceError::from),
            ));
            tasks.push(Box::pin(
                crate::deployer::run(
                    self.client.clone(),
                    index.clone(),
                    leader_rx.clone(),
                    self.lease.namespace.clone(),
                )
                .map_err(SourceError::from),
            ));
            tasks.push(Box::pin(
                status_writer::run(self.client.clone(), index.clone(), leader_rx)
                    .map_err(SourceError::from),
            ));
            let readiness = async move {
                let mut seen = std::collections::HashSet::new();
                while let Some(kind) = rx.recv().await {
                    seen.insert(kind);
                    if seen.len() == kinds {
                        tracing::info!("every kind listed; ready");
                        ready.send_replace(true);
                    }
                }
                futures::future::pending::<Result<(), SourceError>>().await
            };
            tasks.push(Box::pin(readiness));
            let (result, _, _) = futures::future::select_all(tasks).await;
            result
        })
    }
}
