//! Both ends of a watch: the stream `watch::serve` makes of a channel, and
//! over a real tonic server on 127.0.0.1 with a real client, `watch::updates`.

mod support;

use futures::{FutureExt, StreamExt};
use std::{net::SocketAddr, sync::Arc};
use support::fixtures::*;
use tokio::sync::watch as channel;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Server};
use trellis_api::{
    OutboundTarget,
    proto::{
        discovery::{
            self as dpb,
            gateway_config_client::GatewayConfigClient,
            gateway_config_server::{GatewayConfig, GatewayConfigServer},
            inbound_policies_client::InboundPoliciesClient,
            inbound_policies_server::{InboundPolicies, InboundPoliciesServer},
            outbound_policies_client::OutboundPoliciesClient,
            outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer},
        },
        policy as pb,
    },
    watch::{self, Error, ResponseStream},
};
use trellis_policy::{GatewayPolicy, InboundPolicy, OutboundPolicy, ResourceRef, Target};

type Shared = Option<Arc<OutboundPolicy>>;

fn policy(version: u16) -> Arc<OutboundPolicy> {
    Arc::new(
        outbound("shop", "web", "198.19.0.7:80")
            .endpoints(vec![endpoint(&format!("198.18.0.{}:8080", version % 250))]),
    )
}

fn to_update(p: &Shared) -> dpb::OutboundUpdate {
    dpb::OutboundUpdate::from(p.as_deref())
}

// ---- the server-side stream, polled directly ----

#[tokio::test]
async fn sends_the_current_value_at_once() {
    let (tx, rx) = channel::channel(Some(policy(1)));
    tx.send_replace(Some(policy(2)));
    let mut stream = watch::serve(rx, to_update);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, to_update(&Some(policy(2))));
}

#[tokio::test]
async fn an_unchanged_value_is_not_sent_again() {
    let (tx, rx) = channel::channel(Some(policy(1)));
    let mut stream = watch::serve(rx, to_update);
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        to_update(&Some(policy(1)))
    );

    // A new Arc with an equal policy: the channel reports a change, the
    // stream must not.
    tx.send_replace(Some(policy(1)));
    assert!(
        stream.next().now_or_never().is_none(),
        "equal value re-sent"
    );

    tx.send_replace(None);
    assert_eq!(stream.next().await.unwrap().unwrap(), to_update(&None));
    tx.send_replace(Some(policy(1)));
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        to_update(&Some(policy(1)))
    );
}

#[tokio::test]
async fn a_slow_subscriber_gets_only_the_latest_value_and_blocks_no_one() {
    let (tx, rx) = channel::channel(Some(policy(0)));
    let mut slow = watch::serve(rx.clone(), to_update);
    let mut fast = watch::serve(rx, to_update);
    assert_eq!(
        slow.next().await.unwrap().unwrap(),
        to_update(&Some(policy(0)))
    );
    assert_eq!(
        fast.next().await.unwrap().unwrap(),
        to_update(&Some(policy(0)))
    );

    for version in 1..=100 {
        tx.send_replace(Some(policy(version)));
        let got = fast.next().await.unwrap().unwrap();
        assert_eq!(got, to_update(&Some(policy(version))), "fast subscriber");
    }

    assert_eq!(
        slow.next().await.unwrap().unwrap(),
        to_update(&Some(policy(100)))
    );
    assert!(slow.next().now_or_never().is_none(), "a backlog was kept");
}

#[tokio::test]
async fn the_stream_ends_when_the_sender_is_gone() {
    let (tx, rx) = channel::channel(Some(policy(1)));
    let mut stream = watch::serve(rx, to_update);
    tx.send_replace(Some(policy(2)));
    drop(tx);
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        to_update(&Some(policy(2)))
    );
    assert!(stream.next().await.is_none());
}

// ---- over gRPC on loopback ----

/// A fake control plane: state in watch channels, as the controller's index
/// holds it. Outbound serves model values; inbound serves raw messages so a
/// test can send one that does not convert; the gateway stream fails after
/// one message.
struct ControlPlane {
    outbound: channel::Receiver<Shared>,
    inbound: channel::Receiver<pb::InboundPolicy>,
}

#[tonic::async_trait]
impl OutboundPolicies for ControlPlane {
    type WatchStream = ResponseStream<dpb::OutboundUpdate>;

    async fn watch(
        &self,
        request: Request<dpb::OutboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = OutboundTarget::try_from(request.into_inner())?;
        if target.target != Target("198.19.0.7:80".parse().unwrap()) {
            return Ok(Response::new(watch::serve(
                channel::channel(None).1,
                to_update,
            )));
        }
        Ok(Response::new(watch::serve(
            self.outbound.clone(),
            to_update,
        )))
    }
}

#[tonic::async_trait]
impl InboundPolicies for ControlPlane {
    type WatchStream = ResponseStream<pb::InboundPolicy>;

    async fn watch(
        &self,
        _: Request<dpb::InboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(watch::serve(
            self.inbound.clone(),
            Clone::clone,
        )))
    }
}

#[tonic::async_trait]
impl GatewayConfig for ControlPlane {
    type WatchStream = ResponseStream<pb::GatewayPolicy>;

    async fn watch(
        &self,
        _: Request<dpb::GatewayTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = pb::GatewayPolicy::from(&gateway("edge", "public"));
        Ok(Response::new(Box::pin(futures::stream::iter([
            Ok(first),
            Err(Status::unavailable("index reset")),
        ]))))
    }
}

async fn start(
    outbound: channel::Receiver<Shared>,
    inbound: channel::Receiver<pb::InboundPolicy>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let plane = Arc::new(ControlPlane { outbound, inbound });
    let server = Server::builder()
        .add_service(OutboundPoliciesServer::from_arc(plane.clone()))
        .add_service(InboundPoliciesServer::from_arc(plane.clone()))
        .add_service(GatewayConfigServer::from_arc(plane))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

fn shop_web_target() -> OutboundTarget {
    OutboundTarget {
        target: Target("198.19.0.7:80".parse().unwrap()),
        client_namespace: "shop".into(),
        client_workload: "client-0".into(),
    }
}

#[tokio::test]
async fn outbound_watch_over_grpc() {
    let (tx, rx) = channel::channel(Some(policy(1)));
    let addr = start(rx, channel::channel(pb::InboundPolicy::default()).1).await;
    let mut client = OutboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let stream = client
        .watch(dpb::OutboundTarget::from(&shop_web_target()))
        .await
        .unwrap()
        .into_inner();
    let mut updates = watch::updates::<_, Option<OutboundPolicy>>(stream);
    assert_eq!(
        updates.next().await.unwrap().unwrap(),
        Some((*policy(1)).clone())
    );

    tx.send_replace(Some(policy(1)));
    tx.send_replace(Some(policy(2)));
    assert_eq!(
        updates.next().await.unwrap().unwrap(),
        Some((*policy(2)).clone())
    );

    tx.send_replace(None);
    assert_eq!(updates.next().await.unwrap().unwrap(), None);

    drop(tx);
    assert!(
        updates.next().await.is_none(),
        "the stream ends with the channel"
    );

    // A target that is no Service port: "no policy", then nothing more.
    let elsewhere = OutboundTarget {
        target: Target("198.18.0.9:8080".parse().unwrap()),
        ..shop_web_target()
    };
    let stream = client
        .watch(dpb::OutboundTarget::from(&elsewhere))
        .await
        .unwrap()
        .into_inner();
    let mut updates = watch::updates::<_, Option<OutboundPolicy>>(stream);
    assert_eq!(updates.next().await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn a_request_that_does_not_convert_is_an_invalid_argument() {
    let addr = start(
        channel::channel(None).1,
        channel::channel(pb::InboundPolicy::default()).1,
    )
    .await;
    let mut client = OutboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = client
        .watch(dpb::OutboundTarget {
            target: None,
            client_namespace: "shop".into(),
            client_workload: "client-0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "target: required field is missing");
}

#[tokio::test]
async fn an_invalid_update_is_reported_and_the_watch_goes_on() {
    let valid = inbound("shop", "web-0", 8080);
    let (tx, rx) = channel::channel(pb::InboundPolicy::from(&valid));
    let addr = start(channel::channel(None).1, rx).await;
    let mut client = InboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let stream = client
        .watch(dpb::InboundTarget {
            workload: Some(pb::ResourceRef::from(&ResourceRef::new("shop", "web-0"))),
            port: 8080,
        })
        .await
        .unwrap()
        .into_inner();
    let mut updates = watch::updates::<_, InboundPolicy>(stream);
    assert_eq!(updates.next().await.unwrap().unwrap(), valid);

    tx.send_replace(pb::InboundPolicy {
        port: 70_000,
        ..pb::InboundPolicy::from(&valid)
    });
    match updates.next().await.unwrap() {
        Err(Error::Invalid(e)) => assert_eq!(
            e.to_string(),
            "inbound.port: 70000 is out of range (at most 65535)"
        ),
        other => panic!("expected an invalid update, got {other:?}"),
    }

    let next = InboundPolicy {
        port: 9090,
        ..valid.clone()
    };
    tx.send_replace(pb::InboundPolicy::from(&next));
    assert_eq!(updates.next().await.unwrap().unwrap(), next);
}

#[tokio::test]
async fn a_failed_stream_is_a_status() {
    let addr = start(
        channel::channel(None).1,
        channel::channel(pb::InboundPolicy::default()).1,
    )
    .await;
    let mut client = GatewayConfigClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let stream = client
        .watch(dpb::GatewayTarget {
            gateway: Some(pb::ResourceRef::from(&ResourceRef::new("edge", "public"))),
        })
        .await
        .unwrap()
        .into_inner();
    let mut updates = watch::updates::<_, GatewayPolicy>(stream);
    assert_eq!(
        updates.next().await.unwrap().unwrap(),
        gateway("edge", "public")
    );
    match updates.next().await.unwrap() {
        Err(Error::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(status.message(), "index reset");
        }
        other => panic!("expected a status, got {other:?}"),
    }
    assert!(updates.next().await.is_none());
}
