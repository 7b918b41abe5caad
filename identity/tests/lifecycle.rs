//! The CA over time: restarts keep the trust root, a trust-anchor rotation
//! with two anchors keeps every proxy talking, certificates renew through
//! the real service, and the binary's flags.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{NAME, Sandbox, id, mode, settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_identity::ca;
use trellis_identity::cli::{AnchorStep, anchor_step};
use trellis_identity::store::DirStore;
use trellis_identity_client::{
    ALPN_H2, Identity, IdentityConfig, KeyRequest, Renewal, TlsMetrics, TrustBundle,
};
use trellis_policy::SpiffeId;

#[tokio::test]
async fn a_restart_keeps_the_trust_root() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    let anchor = server.authority().anchor().clone();
    let bundle = std::fs::read(sandbox.bundle_path()).unwrap();
    sandbox.token("tok-web", "shop", "web");
    let request = KeyRequest::generate(&id("shop", "web")).unwrap();
    let chain = sandbox
        .certify(&server, "tok-web", request.csr_der().to_vec())
        .await
        .unwrap();
    server.stop().await;

    assert_eq!(mode(&sandbox.state()), 0o700);
    for name in [
        ca::CA_CRT,
        ca::CA_KEY,
        ca::ISSUER_CRT,
        ca::ISSUER_KEY,
        ca::BUNDLE_CRT,
    ] {
        assert_eq!(mode(&sandbox.state().join(name)), 0o600, "{name}");
    }

    let again = sandbox.start(settings()).await;
    assert_eq!(again.authority().anchor(), &anchor);
    assert_eq!(std::fs::read(sandbox.bundle_path()).unwrap(), bundle);
    // What was issued before the restart still verifies.
    request
        .certificate(chain, &id("shop", "web"), &sandbox.bundle())
        .unwrap();
}

/// A proxy's identity against the sandbox's service, following the
/// bundle file quickly.
fn proxy(
    sandbox: &Sandbox,
    server_addr: std::net::SocketAddr,
    me: &SpiffeId,
    token: &str,
) -> Identity {
    let (ns, sa) = {
        let r = me.service_account().unwrap();
        (r.namespace.clone(), r.name.clone())
    };
    sandbox.token(token, &ns, &sa);
    let config = IdentityConfig {
        addr: server_addr.to_string(),
        server_name: NAME.into(),
        token: sandbox.token_file(token),
        trust_bundle: sandbox.bundle_path(),
        id: me.clone(),
        renewal: Renewal {
            bundle_poll: Duration::from_millis(20),
            min_backoff: Duration::from_millis(50),
            ..Renewal::default()
        },
    };
    Identity::start(config, TlsMetrics::default())
}

/// One mTLS exchange between two proxies; the client id the server saw.
async fn exchange(server: &Identity, client: &Identity) -> std::io::Result<SpiffeId> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let inbound = server.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let (mut tls, id) = inbound.accept(tcp).await?;
        tls.write_all(b"k").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(id)
    });
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = client.connect(tcp, addr.ip(), server.id(), ALPN_H2).await?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await?;
    accept.await.map_err(std::io::Error::other)?
}

async fn anchors_seen(identity: &Identity, n: usize) {
    let mut bundle = identity.bundle();
    tokio::time::timeout(
        Duration::from_secs(10),
        bundle.wait_for(|b| b.as_ref().is_some_and(|b| b.anchors().len() == n)),
    )
    .await
    .expect("the proxy follows the bundle file")
    .unwrap();
}

#[tokio::test]
async fn rotating_the_trust_anchor_keeps_every_proxy_talking() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    let store = DirStore::new(sandbox.state());
    let old_anchor = server.authority().anchor().clone();
    let web = proxy(&sandbox, server.grpc_addr(), &id("shop", "web"), "tok-web");
    web.ready().await.unwrap();

    // Step 1: a second anchor is trusted everywhere before anything uses it.
    anchor_step(&store, AnchorStep::Add, "cluster.local")
        .await
        .unwrap();
    assert!(server.reload().await.unwrap());
    assert_eq!(server.authority().bundle().len(), 2);
    assert_eq!(
        server.authority().anchor(),
        &old_anchor,
        "still issuing from the old anchor"
    );
    assert_eq!(
        sandbox.bundle().anchors().len(),
        2,
        "the bundle file has both"
    );
    anchors_seen(&web, 2).await;

    // Step 2: issue from the new anchor; old certificates keep verifying.
    anchor_step(&store, AnchorStep::Promote, "cluster.local")
        .await
        .unwrap();
    assert!(server.reload().await.unwrap());
    let new_anchor = server.authority().anchor().clone();
    assert_ne!(new_anchor, old_anchor);
    let checkout = proxy(
        &sandbox,
        server.grpc_addr(),
        &id("shop", "checkout"),
        "tok-checkout",
    );
    let fresh = checkout.ready().await.unwrap();
    let only_new = TrustBundle::from_der(vec![new_anchor.clone()]).unwrap();
    let only_old = TrustBundle::from_der(vec![old_anchor]).unwrap();
    let verifies = |chain: &[rustls_pki_types::CertificateDer<'static>], bundle: &TrustBundle| {
        let leaf = rustls::server::ParsedCertificate::try_from(&chain[0]).unwrap();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &leaf,
            bundle.roots(),
            &chain[1..],
            rustls_pki_types::UnixTime::now(),
            trellis_identity_client::provider()
                .signature_verification_algorithms
                .all,
        )
        .is_ok()
    };
    assert!(
        verifies(fresh.chain(), &only_new),
        "new certificates chain to the new anchor"
    );
    assert!(
        verifies(web.current().unwrap().chain(), &only_old),
        "web still holds an old one"
    );
    assert_eq!(
        exchange(&web, &checkout).await.unwrap(),
        id("shop", "checkout")
    );
    assert_eq!(exchange(&checkout, &web).await.unwrap(), id("shop", "web"));

    // Step 3, once old certificates are gone: the old anchor is dropped.
    anchor_step(&store, AnchorStep::Retire, "cluster.local")
        .await
        .unwrap();
    server.reload().await.unwrap();
    assert_eq!(sandbox.bundle().anchors(), &[new_anchor]);
    assert_eq!(
        server.metrics().issued_count(),
        2,
        "the reloads issued nothing by themselves"
    );
}

#[tokio::test]
async fn certificates_renew_through_the_service() {
    let sandbox = Sandbox::new();
    let mut s = settings();
    s.lifetime = Duration::from_secs(2);
    let server = sandbox.start(s).await;
    let web = proxy(&sandbox, server.grpc_addr(), &id("shop", "web"), "tok-web");
    let first = web.ready().await.unwrap();
    let mut certs = web.watch();
    let renewed = tokio::time::timeout(
        Duration::from_secs(20),
        certs.wait_for(|c| c.as_ref().is_some_and(|c| !Arc::ptr_eq(c, &first))),
    )
    .await
    .expect("renewed before expiry")
    .unwrap()
    .clone()
    .unwrap();
    assert_ne!(renewed.chain()[0], first.chain()[0]);
    assert!(renewed.not_after() >= first.not_after());
    assert!(server.metrics().issued_count() >= 2);
}

/// A child process killed when the test ends, whatever happens.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary, as the sandbox and the chart run it.
fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_trellis-identity"))
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "--bogus"),
        (
            &["--state-dir", state, "--certificate-lifetime", "5x"],
            "--certificate-lifetime",
        ),
        (
            &["--state-dir", state, "--certificate-lifetime", "0s"],
            "more than zero",
        ),
        (&["--tokens-file", "t.json"], "--state-dir"),
        (
            &["--state-dir", state, "--ca-secret", "ns/name"],
            "not both",
        ),
        (&["--ca-secret", "just-a-name"], "NAMESPACE/NAME"),
        (
            &["--state-dir", state, "--trust-domain", "Bad Domain"],
            "--trust-domain",
        ),
        (
            &["--state-dir", state, "--server-name", "10.0.0.1"],
            "--server-ip",
        ),
        (&["--state-dir", state, "--listen", "nowhere"], "nowhere"),
        (
            &["--state-dir", state, "--bundle-namespaces", "a=b"],
            "--bundle-configmap",
        ),
    ];
    for (args, needle) in cases {
        let out = binary().args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_broken_ca_in_the_store_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(ca::CA_CRT), "not pem").unwrap();
    let out = binary()
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .args(["--tokens-file", "/nonexistent", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("ca.crt"), "{stderr}");
}

#[test]
fn the_binary_serves_and_rotation_steps_run_against_its_store() {
    let sandbox = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Running(
        binary()
            .args(["--state-dir", sandbox.state().to_str().unwrap()])
            .args(["--bundle-file", sandbox.bundle_path().to_str().unwrap()])
            .args(["--tokens-file", sandbox.tokens_path().to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "127.0.0.1:0", "--server-name", NAME])
            .args(["--reload-interval", "1s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let appeared = async {
            while !sandbox.bundle_path().exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), appeared)
            .await
            .expect("the bundle file is written at start");
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let web = proxy(&sandbox, addr, &id("shop", "web"), "tok-web");
        tokio::time::timeout(Duration::from_secs(20), web.ready())
            .await
            .expect("a certificate from the binary")
            .unwrap();

        let status = binary()
            .args([
                "anchors",
                "add",
                "--state-dir",
                sandbox.state().to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        anchors_seen(&web, 2).await;
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.0.wait().unwrap().success(),
        "SIGTERM stops it cleanly"
    );

    let out = binary()
        .args([
            "anchors",
            "add",
            "--state-dir",
            sandbox.state().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second staged anchor is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already staged"));
}
