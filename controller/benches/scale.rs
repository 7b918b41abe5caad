//! Scale benchmark (not a test; prints its numbers):
//! 10,000 Services with 5 ready endpoints each (50,000 endpoints, every pod
//! meshed), 10,000 HTTPRoutes (each splitting its Service with the next
//! one), and 1,000 gRPC streams over loopback (250 Services watched from 4
//! client namespaces each).
//!
//! Reports the cold index build, the time from one route change to every
//! affected subscriber holding the new policy (p50/p99 over 200 changes),
//! and the process RSS. Baseline measured in the same run: resolving one
//! policy directly, without the index, channels or gRPC.
//!
//! `cargo bench -p trellis-controller --bench scale`

use futures::StreamExt;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_api::OutboundTarget;
use trellis_api::proto::discovery::{self as pb, outbound_policies_client::OutboundPoliciesClient};
use trellis_controller::config::{Config, LogFormat, SourceConfig};
use trellis_controller::index::{Settings, SharedIndex};
use trellis_controller::objects::Object;
use trellis_controller::source::{Source, SourceError};
use trellis_controller::{resolve, server};
use trellis_policy::{OutboundPolicy, Target};

const SERVICES: usize = 10_000;
const ENDPOINTS_PER_SERVICE: usize = 5;
const NAMESPACES: usize = 100;
const WATCHED_SERVICES: usize = 250;
const CLIENT_NAMESPACES: usize = 4;
const CONNECTIONS: usize = 20;
const CHANGES: usize = 200;

fn ns(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

fn cluster_ip(i: usize) -> String {
    format!("198.19.{}.{}", i / 250, i % 250 + 1)
}

fn route(i: usize, weight: u32) -> Object {
    let next = (i + 1) % SERVICES;
    let v = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": format!("route-{i}"), "namespace": ns(i)},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": format!("svc-{i}"), "port": 80}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "backendRefs": [{"name": format!("svc-{i}"), "port": 80, "weight": weight}]},
                {"backendRefs": [
                    {"name": format!("svc-{i}"), "port": 80, "weight": 90},
                    {"name": format!("svc-{next}"), "namespace": ns(next), "port": 80, "weight": 10}
                ]}
            ]
        }
    });
    Object::from_value(v).unwrap().unwrap()
}

fn value(v: serde_json::Value) -> Object {
    Object::from_value(v).unwrap().unwrap()
}

/// The objects, generated one at a time as a watch would deliver them, so
/// the benchmark never holds more than the index does.
fn objects() -> impl Iterator<Item = Object> {
    let namespaces = (0..NAMESPACES).flat_map(|n| {
        [
            value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}")}})),
            // Every route's second backend is in the next namespace.
            value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "from-all", "namespace": format!("ns-{n}")},
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": format!("ns-{}", (n + NAMESPACES - 1) % NAMESPACES)}],
                         "to": [{"group": "", "kind": "Service"}]}
            })),
        ]
    });
    let services = (0..SERVICES).flat_map(|i| {
        let mut out = vec![value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": ns(i)},
            "spec": {"clusterIP": cluster_ip(i), "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}]}
        }))];
        let mut endpoints = Vec::new();
        for e in 0..ENDPOINTS_PER_SERVICE {
            let p = i * ENDPOINTS_PER_SERVICE + e;
            let ip = format!("10.{}.{}.{}", p / 65536, (p / 256) % 256, p % 256);
            let pod = format!("svc-{i}-{e}");
            out.push(value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns(i)},
                "spec": {"serviceAccountName": format!("sa-{i}"), "containers": [{"name": "app"}, {"name": "trellis-proxy"}]},
                "status": {"podIP": ip}
            })));
            endpoints.push(json!({"addresses": [ip], "conditions": {"ready": true},
                                  "targetRef": {"kind": "Pod", "name": pod, "namespace": ns(i)}}));
        }
        out.push(value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{i}-abc"), "namespace": ns(i), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        })));
        out
    });
    namespaces
        .chain(services)
        .chain((0..SERVICES).map(|i| route(i, 1)))
}

/// Feeds nothing: the benchmark applies objects itself, like a source would.
struct Manual;

impl Source for Manual {
    fn run(
        self: Box<Self>,
        _index: SharedIndex,
        ready: watch::Sender<bool>,
    ) -> futures::future::BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            ready.send_replace(true);
            futures::future::pending().await
        })
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn first_weight(p: &OutboundPolicy) -> u32 {
    p.http_routes
        .first()
        .map_or(0, |r| r.rules[0].backends[0].weight)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rss_start = rss_mib();
    let config = Config {
        source: SourceConfig::Manifests(Vec::new()),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        settings: Settings::default(),
        log: "warn".into(),
        log_format: LogFormat::Plain,
        identity: None,
    };
    let running = server::start_with(config, Box::new(Manual)).await.unwrap();
    let index = running.index.clone();

    let start = Instant::now();
    let mut count = 0;
    {
        let mut index = index.lock();
        for o in objects() {
            index.apply(o);
            count += 1;
        }
    }
    let build = start.elapsed();
    let rss_index = rss_mib();

    // Baseline: resolving one policy straight from the store.
    let target: SocketAddr = format!("{}:80", cluster_ip(17)).parse().unwrap();
    let start = Instant::now();
    let n = 1000;
    for _ in 0..n {
        std::hint::black_box(resolve::outbound(index.lock().store(), target, &ns(17)));
    }
    let direct = start.elapsed() / n;

    // 1,000 streams: WATCHED_SERVICES Services x CLIENT_NAMESPACES clients.
    let url = format!("http://{}", running.grpc_addr);
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut holders: Vec<Vec<watch::Receiver<u32>>> = Vec::new();
    let subscribed = Instant::now();
    let mut first = Vec::new();
    for s in 0..WATCHED_SERVICES {
        let svc = s * (SERVICES / WATCHED_SERVICES);
        let mut rxs = Vec::new();
        for c in 0..CLIENT_NAMESPACES {
            let channel = channels[(s * CLIENT_NAMESPACES + c) % CONNECTIONS].clone();
            let mut client = OutboundPoliciesClient::new(channel);
            let t = OutboundTarget {
                target: Target(format!("{}:80", cluster_ip(svc)).parse().unwrap()),
                client_namespace: format!("client-{c}"),
                client_workload: "bench".into(),
            };
            let (tx, rx) = watch::channel(0u32);
            let (got_first, first_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let stream = client
                    .watch(pb::OutboundTarget::from(&t))
                    .await
                    .unwrap()
                    .into_inner();
                let mut updates = trellis_api::watch::updates::<_, Option<OutboundPolicy>>(stream);
                let mut got_first = Some(got_first);
                while let Some(Ok(Some(p))) = updates.next().await {
                    tx.send_replace(first_weight(&p));
                    if let Some(g) = got_first.take() {
                        let _ = g.send(());
                    }
                }
            });
            first.push(first_rx);
            rxs.push(rx);
        }
        holders.push(rxs);
    }
    for f in first {
        f.await.unwrap();
    }
    let subscribe_all = subscribed.elapsed();
    let rss_streams = rss_mib();

    // Route changes: each affects the CLIENT_NAMESPACES subscribers of its Service.
    let mut latencies = Vec::with_capacity(CHANGES);
    for k in 0..CHANGES {
        let s = (k * 7) % WATCHED_SERVICES;
        let svc = s * (SERVICES / WATCHED_SERVICES);
        let weight = u32::try_from(k).unwrap() + 2;
        let changed = route(svc, weight);
        let start = Instant::now();
        index.lock().apply(changed);
        for rx in holders[s].iter_mut() {
            rx.wait_for(|w| *w == weight).await.unwrap();
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let rss_end = rss_mib();

    println!("trellis-controller scale benchmark");
    println!(
        "  objects: {SERVICES} Services, {} endpoints (meshed pods), {SERVICES} HTTPRoutes; {} objects in all",
        SERVICES * ENDPOINTS_PER_SERVICE,
        count
    );
    println!(
        "  cold index build:                 {:>10.1} ms (objects decoded and applied one by one)",
        build.as_secs_f64() * 1e3
    );
    println!(
        "  {} streams subscribed and served: {:>10.1} ms ({CONNECTIONS} HTTP/2 connections)",
        WATCHED_SERVICES * CLIENT_NAMESPACES,
        subscribe_all.as_secs_f64() * 1e3
    );
    println!(
        "  baseline, one direct resolve:     {:>10.1} µs",
        direct.as_secs_f64() * 1e6
    );
    println!(
        "  route change -> all {CLIENT_NAMESPACES} affected subscribers hold it ({CHANGES} changes):"
    );
    println!(
        "    p50 {:>8.2} ms ({:.0}x baseline)   p99 {:>8.2} ms   target p99 <= 100 ms",
        p50.as_secs_f64() * 1e3,
        p50.as_secs_f64() / direct.as_secs_f64().max(1e-9),
        p99.as_secs_f64() * 1e3
    );
    println!(
        "  RSS: start {rss_start:.0} MiB, after index {rss_index:.0} MiB, with streams {rss_streams:.0} MiB, end {rss_end:.0} MiB   target <= 300 MiB"
    );
    running.shutdown().await.unwrap();
}
