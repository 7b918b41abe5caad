//! Handshakes between real configs on loopback TCP.

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_policy::SpiffeId;

use super::id;
use crate::testing::TestCa;
use crate::{
    ALPN_H2, ALPN_TCP, Direction, HandshakeOutcome, Identity, TlsMetrics, TrustBundle, bundle,
    peer_identity,
};

const HOUR: Duration = Duration::from_secs(3600);

/// What the server saw: the client's identity and the negotiated protocol.
type Accepted = (Option<SpiffeId>, Option<Vec<u8>>);

/// One connection: the server echoes a byte, so each side also learns
/// whether the other accepted its certificate.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (io::Result<Accepted>, io::Result<Option<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let conn = tls.get_ref().1;
        let seen = (
            peer_identity(conn),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        );
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await?;
        Ok(seen)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(alpn)
    }
    .await;
    (server.await.unwrap(), client)
}

fn workload(ca: &TestCa, who: &SpiffeId) -> Identity {
    Identity::fixed(
        ca.certificate(who, HOUR),
        ca.bundle(),
        TlsMetrics::default(),
    )
}

fn outcome<T>(r: &io::Result<T>) -> HandshakeOutcome {
    match r {
        Ok(_) => HandshakeOutcome::Ok,
        Err(e) => HandshakeOutcome::of_io_error(e),
    }
}

#[tokio::test]
async fn peers_of_one_mesh_agree_on_identity_and_protocol() {
    let ca = TestCa::new("cluster.local");
    let (web, client) = (id("shop", "web"), id("shop", "checkout"));
    let server = workload(&ca, &web);
    let caller = workload(&ca, &client);
    let (accepted, connected) = handshake(
        server.server_config(&[ALPN_H2, ALPN_TCP]),
        caller.client_config(&web, &[ALPN_TCP]),
    )
    .await;
    let (peer, alpn) = accepted.unwrap();
    assert_eq!(peer, Some(client));
    assert_eq!(alpn.as_deref(), Some(ALPN_TCP));
    assert_eq!(connected.unwrap().as_deref(), Some(ALPN_TCP));
}

#[tokio::test]
async fn connections_use_tls13_and_the_hybrid_post_quantum_group() {
    let ca = TestCa::new("cluster.local");
    let web = id("shop", "web");
    let server = workload(&ca, &web).server_config(&[ALPN_H2]);
    let client = workload(&ca, &id("shop", "checkout")).client_config(&web, &[ALPN_H2]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsAcceptor::from(server).accept(tcp).await.unwrap()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(client)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    drop(accept.await.unwrap());
}

#[tokio::test]
async fn a_server_that_is_not_the_announced_identity_is_refused() {
    let ca = TestCa::new("cluster.local");
    let metrics = TlsMetrics::default();
    let server = workload(&ca, &id("shop", "impostor"));
    let caller = Identity::fixed(
        ca.certificate(&id("shop", "checkout"), HOUR),
        ca.bundle(),
        metrics.clone(),
    );
    let (accepted, connected) = handshake(
        server.server_config(&[ALPN_H2]),
        caller.client_config(&id("shop", "web"), &[ALPN_H2]),
    )
    .await;
    let connected = metrics.record(Direction::Outbound, connected);
    let error = connected.unwrap_err().to_string();
    assert!(
        error.contains("spiffe://cluster.local/ns/shop/sa/impostor"),
        "{error}"
    );
    assert!(
        error.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{error}"
    );
    assert_eq!(outcome(&accepted), HandshakeOutcome::Refused);
    assert_eq!(
        metrics.handshakes(Direction::Outbound, HandshakeOutcome::WrongIdentity),
        1
    );
}

#[tokio::test]
async fn a_server_of_another_mesh_is_refused() {
    let (ours, theirs) = (TestCa::new("cluster.local"), TestCa::new("cluster.local"));
    let web = id("shop", "web");
    let (_, connected) = handshake(
        workload(&theirs, &web).server_config(&[ALPN_H2]),
        workload(&ours, &id("shop", "checkout")).client_config(&web, &[ALPN_H2]),
    )
    .await;
    assert_eq!(outcome(&connected), HandshakeOutcome::UnknownCa);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = TestCa::new("cluster.local");
    let web = id("shop", "web");
    let metrics = TlsMetrics::default();
    let server = Identity::fixed(ca.certificate(&web, HOUR), ca.bundle(), metrics.clone());
    // A plain TLS client that trusts the mesh but has no certificate.
    let mut anonymous = crate::tls::identity_service_config(&ca.bundle()).unwrap();
    anonymous.alpn_protocols = vec![ALPN_H2.to_vec()];
    anonymous
        .dangerous()
        .set_certificate_verifier(Arc::new(crate::tls::PeerVerifier::new(
            server.bundle(),
            web.clone(),
        )));
    let (accepted, connected) =
        handshake(server.server_config(&[ALPN_H2]), Arc::new(anonymous)).await;
    let accepted = metrics.record(Direction::Inbound, accepted);
    assert_eq!(outcome(&accepted), HandshakeOutcome::NoCertificate);
    assert!(connected.is_err(), "the client must not get an answer");
    assert_eq!(
        metrics.handshakes(Direction::Inbound, HandshakeOutcome::NoCertificate),
        1
    );
}

#[tokio::test]
async fn a_client_of_another_mesh_is_refused() {
    let (ours, theirs) = (TestCa::new("cluster.local"), TestCa::new("cluster.local"));
    let web = id("shop", "web");
    // The stranger trusts our anchor, so only our server's check can stop it.
    let stranger = Identity::fixed(
        theirs.certificate(&id("shop", "checkout"), HOUR),
        ours.bundle(),
        TlsMetrics::default(),
    );
    let (accepted, connected) = handshake(
        workload(&ours, &web).server_config(&[ALPN_H2]),
        stranger.client_config(&web, &[ALPN_H2]),
    )
    .await;
    assert_eq!(outcome(&accepted), HandshakeOutcome::UnknownCa);
    assert!(connected.is_err());
}

#[tokio::test]
async fn no_common_protocol_is_refused() {
    let ca = TestCa::new("cluster.local");
    let web = id("shop", "web");
    let (accepted, _) = handshake(
        workload(&ca, &web).server_config(&[ALPN_H2]),
        workload(&ca, &id("shop", "checkout")).client_config(&web, &[ALPN_TCP]),
    )
    .await;
    assert_eq!(outcome(&accepted), HandshakeOutcome::NoAlpn);
}

#[tokio::test]
async fn a_bundle_of_two_anchors_accepts_certificates_of_both() {
    let (old, new) = (TestCa::new("cluster.local"), TestCa::new("cluster.local"));
    let both = TrustBundle::from_der(vec![old.anchor().clone(), new.anchor().clone()]).unwrap();
    let (web, client) = (id("shop", "web"), id("shop", "checkout"));
    let server = Identity::fixed(
        old.certificate(&web, HOUR),
        both.clone(),
        TlsMetrics::default(),
    );
    let caller = Identity::fixed(new.certificate(&client, HOUR), both, TlsMetrics::default());
    let (accepted, connected) = handshake(
        server.server_config(&[ALPN_H2]),
        caller.client_config(&web, &[ALPN_H2]),
    )
    .await;
    assert_eq!(accepted.unwrap().0, Some(client.clone()));
    connected.unwrap();
    // And the other way round: new server, old client.
    let server = Identity::fixed(
        new.certificate(&web, HOUR),
        TrustBundle::from_der(vec![old.anchor().clone(), new.anchor().clone()]).unwrap(),
        TlsMetrics::default(),
    );
    let caller = Identity::fixed(
        old.certificate(&client, HOUR),
        TrustBundle::from_der(vec![old.anchor().clone(), new.anchor().clone()]).unwrap(),
        TlsMetrics::default(),
    );
    let (accepted, connected) = handshake(
        server.server_config(&[ALPN_H2]),
        caller.client_config(&web, &[ALPN_H2]),
    )
    .await;
    assert_eq!(accepted.unwrap().0, Some(client));
    connected.unwrap();
}

#[tokio::test]
async fn configs_follow_the_bundle_file_as_it_rotates() {
    let (old, new) = (TestCa::new("cluster.local"), TestCa::new("cluster.local"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.pem");
    std::fs::write(&path, old.bundle().to_pem()).unwrap();
    let mut bundle = bundle::watch_file(path.clone(), Duration::from_millis(20));
    let (web, client) = (id("shop", "web"), id("shop", "checkout"));
    // The server's certificate is fixed to the old CA; its trust follows the file.
    let own = Identity::fixed(
        old.certificate(&web, HOUR),
        old.bundle(),
        TlsMetrics::default(),
    );
    let server_config = Arc::new(crate::tls::server_config(
        own.watch(),
        bundle.clone(),
        &[ALPN_H2],
    ));
    let caller = Identity::fixed(
        new.certificate(&client, HOUR),
        TrustBundle::from_der(vec![old.anchor().clone(), new.anchor().clone()]).unwrap(),
        TlsMetrics::default(),
    );
    let (accepted, _) = handshake(
        server_config.clone(),
        caller.client_config(&web, &[ALPN_H2]),
    )
    .await;
    assert_eq!(outcome(&accepted), HandshakeOutcome::UnknownCa);

    let both = format!("{}{}", old.bundle().to_pem(), new.bundle().to_pem());
    let tmp = dir.path().join("bundle.pem.tmp");
    std::fs::write(&tmp, both).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), bundle.changed())
        .await
        .expect("the bundle file change is seen")
        .unwrap();
    assert_eq!(bundle.borrow().as_ref().unwrap().anchors().len(), 2);
    let (accepted, connected) =
        handshake(server_config, caller.client_config(&web, &[ALPN_H2])).await;
    assert_eq!(accepted.unwrap().0, Some(client));
    connected.unwrap();
}

#[test]
fn a_bundle_must_hold_a_certificate() {
    assert!(matches!(
        TrustBundle::from_pem(b""),
        Err(bundle::BundleError::Empty)
    ));
    assert!(
        TrustBundle::from_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
        )
        .is_err()
    );
    let ca = TestCa::new("cluster.local");
    let round = TrustBundle::from_pem(ca.bundle().to_pem().as_bytes()).unwrap();
    assert_eq!(round, ca.bundle());
}

#[tokio::test]
async fn the_mesh_helpers_handshake_and_count() {
    let ca = TestCa::new("cluster.local");
    let (web, client) = (id("shop", "web"), id("shop", "checkout"));
    let server = workload(&ca, &web);
    let caller = workload(&ca, &client);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbound = server.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, client) = inbound.accept(tcp).await.unwrap();
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ok").await.unwrap();
        (client, alpn)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = caller.connect(tcp, addr.ip(), &web, ALPN_H2).await.unwrap();
    let mut answer = [0u8; 2];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(accept.await.unwrap(), (client, Some(ALPN_H2.to_vec())));
    assert_eq!(
        server
            .metrics()
            .handshakes(Direction::Inbound, HandshakeOutcome::Ok),
        1
    );
    assert_eq!(
        caller
            .metrics()
            .handshakes(Direction::Outbound, HandshakeOutcome::Ok),
        1
    );

    // The same helpers refuse a peer that is not the announced one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbound = server.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        inbound.accept(tcp).await.map(|(_, id)| id)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = caller
        .connect(tcp, addr.ip(), &id("shop", "db"), ALPN_TCP)
        .await;
    assert!(refused.is_err());
    assert!(accept.await.unwrap().is_err());
    assert_eq!(
        caller
            .metrics()
            .handshakes(Direction::Outbound, HandshakeOutcome::WrongIdentity),
        1
    );
    assert_eq!(
        server
            .metrics()
            .handshakes(Direction::Inbound, HandshakeOutcome::Refused),
        1
    );
}
