//! Fixtures for the identity service tests: a service on loopback with its
//! state in a temporary directory, the sandbox token file written like the
//! sandbox does, and calls made with the proxy's own client library.

#![allow(dead_code, unreachable_pub)]

pub mod kube;

use rustls_pki_types::CertificateDer;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use trellis_identity::auth::TokenFile;
use trellis_identity::server::{Parts, Server, Settings};
use trellis_identity::store::{DirStore, FileBundle};
use trellis_identity_client::{Certifier, CertifyError, GrpcCertifier, TrustBundle};
use trellis_policy::SpiffeId;

/// The DNS name the test services' certificates carry.
pub const NAME: &str = "trellis-identity.test";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", ns, sa)
}

/// Loopback listeners, a long reload interval (tests reload explicitly),
/// a generous rate limit.
pub fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        trust_domain: "cluster.local".into(),
        server_names: vec![NAME.into()],
        server_ips: vec![],
        lifetime: Duration::from_secs(24 * 3600),
        rate_burst: 100,
        rate_refill: Duration::from_secs(1),
        reload_interval: Duration::from_secs(3600),
    }
}

/// A directory holding what a sandbox identity service uses: `state/`,
/// `bundle.pem`, `tokens.json`.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    tokens: std::sync::Mutex<Vec<serde_json::Value>>,
    calls: AtomicUsize,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            tokens: Default::default(),
            calls: AtomicUsize::new(0),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.dir.path().join("bundle.pem")
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::read(&self.bundle_path()).unwrap()
    }

    pub fn parts(&self) -> Parts {
        Parts {
            store: Box::new(DirStore::new(self.state())),
            sinks: vec![Box::new(FileBundle::new(self.bundle_path()))],
            auth: Arc::new(TokenFile::new(self.tokens_path())),
        }
    }

    pub async fn start(&self, settings: Settings) -> Server {
        Server::start(settings, self.parts()).await.unwrap()
    }

    /// Adds a token for `ns/sa` expiring at `expires`, then writes the file
    /// the way the sandbox does (0600, replaced by rename).
    pub fn token_until(&self, token: &str, ns: &str, sa: &str, expires: SystemTime) {
        let at = time::OffsetDateTime::from(expires)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let mut tokens = self.tokens.lock().unwrap();
        tokens
            .push(json!({"token": token, "namespace": ns, "serviceAccount": sa, "expiresAt": at}));
        let doc = serde_json::to_vec_pretty(&json!({ "tokens": *tokens })).unwrap();
        let tmp = self.dir.path().join(".tokens.json.tmp");
        std::fs::write(&tmp, doc).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(tmp, self.tokens_path()).unwrap();
    }

    /// A token for `ns/sa` valid for an hour.
    pub fn token(&self, token: &str, ns: &str, sa: &str) {
        self.token_until(token, ns, sa, SystemTime::now() + Duration::from_secs(3600));
    }

    /// A file holding `token`, as a projected token volume would.
    pub fn token_file(&self, token: &str) -> PathBuf {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("token-{n}"));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// Calls `Certify` as a proxy does, naming the service `server_name`.
    pub async fn certify_as(
        &self,
        server: &Server,
        server_name: &str,
        token: &str,
        csr_der: Vec<u8>,
    ) -> Result<Vec<CertificateDer<'static>>, CertifyError> {
        let certifier = GrpcCertifier {
            addr: server.grpc_addr().to_string(),
            server_name: server_name.into(),
            token: self.token_file(token),
            timeout: Duration::from_secs(10),
        };
        certifier.certify(csr_der, &self.bundle()).await
    }

    pub async fn certify(
        &self,
        server: &Server,
        token: &str,
        csr_der: Vec<u8>,
    ) -> Result<Vec<CertificateDer<'static>>, CertifyError> {
        self.certify_as(server, NAME, token, csr_der).await
    }
}

/// The gRPC code of a refusal.
pub fn code(result: &Result<Vec<CertificateDer<'static>>, CertifyError>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(CertifyError::Refused { code, .. }) => *code,
        Err(other) => panic!("not a refusal: {other}"),
    }
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// GET on the admin port; the body.
pub async fn admin_get(server: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.admin_addr())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
