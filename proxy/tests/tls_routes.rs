//! Tier 1: a sidecar routes TLS it does not terminate by the ClientHello's
//! SNI, following the TLSRoutes whose parent is the Service: the hello is
//! read, not answered, and replayed to the backend the route picks, so the
//! client's TLS session is with the backend itself.

mod edge;
mod support;

use edge::{Pki, presented_names, read_some, sni_backends};
use support::{cluster_ip, outbound, pod, sidecar};
use tokio::io::AsyncWriteExt;
use trellis_policy::{
    Protocol,
    build::{service, tls_route},
};
use trellis_proxy::config::SourceConfig;

#[tokio::test]
async fn tls_to_a_service_follows_its_tlsroutes_by_sni() {
    let n = 30;
    let pki = Pki::new();
    let (one, two) = sni_backends(n, &pki, &["*.example.com"]).await;
    let detected = cluster_ip(n, 443);
    let declared = cluster_ip(n, 8443);
    let policy = |target, protocol| {
        let mut p = outbound(
            target,
            service("shop", "web", 443).endpoint(&one.to_string()),
        );
        p.protocol = protocol;
        p.tls_routes = vec![
            tls_route("shop", "one")
                .host("one.example.com")
                .backend(service("shop", "one", 443).endpoint(&one.to_string()))
                .tls(),
            tls_route("shop", "two")
                .host("*.example.com")
                .backend(service("shop", "two", 443).endpoint(&two.to_string()))
                .tls(),
        ];
        p
    };
    let cp = support::ControlPlane::default();
    // Sniffed (no appProtocol) and declared (`appProtocol: tls`) alike.
    cp.set(policy(detected, Protocol::Detect));
    cp.set(policy(declared, Protocol::Tls));
    let running = cp.start(pod(n, 9)).await;
    let source = SourceConfig::Controller(running.addr.to_string());
    let client = sidecar(pod(n, 1), source, &[detected, declared]).await;

    for entry in &client.outbound_fixed {
        for (sni, who) in [
            ("one.example.com", "one"),
            ("two.example.com", "two"),
            ("x.example.com", "two"),
        ] {
            // The backend's own certificate verifies: the bytes went through.
            let mut tls = pki.connect(*entry, sni, &[]).await.unwrap();
            let names = presented_names(&tls);
            let greeting = read_some(&mut tls, who.len() + 1).await;
            assert_eq!(greeting, format!("{who}:").as_bytes(), "{sni}: {names:?}");
            tls.write_all(b"ping").await.unwrap();
            assert_eq!(read_some(&mut tls, 4).await, b"ping");
        }
        // No TLSRoute for the SNI: closed, nothing answers.
        assert!(pki.connect(*entry, "other.org", &[]).await.is_err());
    }
    drop(running);
}
