//! No token, key or CSR content in any log line, at any level. Its own
//! test binary: the subscriber is the process' global one, so every task
//! on every thread logs through it.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Sandbox, id, settings};
use trellis_identity_client::KeyRequest;

/// Collects log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_hold_no_token_key_or_csr_content() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let sandbox = Sandbox::new();
    let server = sandbox.start(settings()).await;
    sandbox.token("secret-token-web", "shop", "web");
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    sandbox.token_until("secret-token-old", "shop", "web", past);
    let request = KeyRequest::generate(&id("shop", "web")).unwrap();
    let csr = request.csr_der().to_vec();
    sandbox
        .certify(&server, "secret-token-web", csr.clone())
        .await
        .unwrap();
    let _ = sandbox
        .certify(&server, "secret-token-old", csr.clone())
        .await;
    let _ = sandbox
        .certify(&server, "secret-token-unknown", csr.clone())
        .await;
    let _ = sandbox
        .certify(&server, "secret-token-web", b"garbage-csr-bytes".to_vec())
        .await;
    let other = KeyRequest::generate(&id("shop", "payments")).unwrap();
    let _ = sandbox
        .certify(&server, "secret-token-web", other.csr_der().to_vec())
        .await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("certificate issued"), "{text}");
    assert!(text.contains("certificate request refused"), "{text}");
    for secret in [
        "secret-token",
        "garbage-csr",
        "PRIVATE KEY",
        "ns/shop/sa/payments",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the logs:\n{text}");
    }
    let csr_hex: String = csr[..16].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&csr_hex));
}
