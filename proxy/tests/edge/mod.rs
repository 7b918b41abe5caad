//! Test support for the gateway: a fake controller serving
//! `GatewayConfig.Watch` from a watch channel the test controls, gateways
//! started in-process, listener builders that read like the Gateway they
//! stand for, a small PKI (a CA and certificates for hostnames), TLS
//! clients, and a TLS echo backend.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::client::TlsStream;
use trellis_api::{
    GatewayTarget,
    contract::port,
    proto::{
        discovery::{
            self as pb,
            gateway_config_server::{GatewayConfig, GatewayConfigServer},
        },
        policy as policy_pb,
    },
};
use trellis_identity_client::Identity;
use trellis_policy::{
    CertificatePem, GatewayPolicy, GrpcRoute, HostMatch, HttpRoute, Listener, ListenerProtocol,
    ListenerTls, ResourceRef, TcpRoute, TlsMode, TlsRoute,
};
use trellis_proxy::{
    Sidecar,
    config::{Config as SidecarConfig, SourceConfig},
    gateway::{Gateway, GatewayConfig as Config},
};

/// The Gateway every test serves.
pub fn gateway_ref() -> ResourceRef {
    ResourceRef::new("edge", "web")
}

/// A fake controller with one Gateway's configuration.
#[derive(Clone)]
pub struct Plane {
    tx: Arc<watch::Sender<GatewayPolicy>>,
    /// Every Gateway asked for.
    pub asked: Arc<Mutex<Vec<ResourceRef>>>,
}

impl Plane {
    pub fn new(listeners: Vec<Listener>) -> Self {
        let policy = GatewayPolicy {
            gateway: gateway_ref(),
            listeners,
        };
        Self {
            tx: Arc::new(watch::channel(policy).0),
            asked: Arc::default(),
        }
    }

    /// Publishes a new set of listeners.
    pub fn set(&self, listeners: Vec<Listener>) {
        self.tx.send_modify(|p| p.listeners = listeners);
    }

    /// Serves on `ip` (a free port) for the rest of the test.
    pub async fn start(&self, ip: IpAddr) -> SocketAddr {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = GatewayConfigServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        addr
    }
}

type Stream<M> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<M, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GatewayConfig for Plane {
    type WatchStream = Stream<policy_pb::GatewayPolicy>;

    async fn watch(
        &self,
        request: tonic::Request<pb::GatewayTarget>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let target = GatewayTarget::try_from(request.into_inner())?;
        self.asked.lock().unwrap().push(target.gateway);
        let rx = self.tx.subscribe();
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::WatchStream::new(rx)
                .map(|p| Ok(policy_pb::GatewayPolicy::from(&p))),
        )))
    }
}

/// A gateway for Gateway `edge/web`, listening on `ip`, configured by the
/// controller at `plane`; mTLS under `identity` when given.
pub async fn gateway(ip: IpAddr, plane: SocketAddr, identity: Option<Identity>) -> Gateway {
    let config = Config {
        gateway: gateway_ref(),
        controller: plane.to_string(),
        listen_ip: ip,
        admin_addr: SocketAddr::new(ip, 0),
        mesh_port: port::PROXY_INBOUND,
        worker_threads: 1,
        shutdown_grace: Duration::from_secs(5),
        identity: None,
        controller_identity: None,
    };
    let gw = match identity {
        Some(id) => Gateway::start_with_identity(&config, id).await,
        None => Gateway::start(&config).await,
    }
    .unwrap();
    applied(&gw, 1).await;
    gw
}

/// Waits until the gateway applied `n` configurations.
pub async fn applied(gw: &Gateway, n: u64) {
    let mut rx = gw.applied();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
        .await
        .expect("the gateway applied the configuration within 10 s")
        .unwrap();
}

/// A listener, written like the Gateway's spec:
/// `listener("https", 8443).https(&[cert]).hostname("*.example.com").route(r)`.
pub fn listener(name: &str, port: u16) -> ListenerBuilder {
    ListenerBuilder(Listener {
        name: name.into(),
        port,
        protocol: ListenerProtocol::Http,
        hostname: None,
        tls: None,
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        tls_routes: Vec::new(),
        tcp_routes: Vec::new(),
    })
}

#[derive(Debug)]
pub struct ListenerBuilder(Listener);

impl ListenerBuilder {
    pub fn hostname(mut self, h: &str) -> Self {
        self.0.hostname = Some(HostMatch::parse(h).unwrap());
        self
    }

    pub fn https(mut self, certificates: &[CertificatePem]) -> Self {
        self.0.protocol = ListenerProtocol::Https;
        self.0.tls = Some(ListenerTls {
            mode: TlsMode::Terminate,
            certificates: certificates.to_vec(),
        });
        self
    }

    pub fn passthrough(mut self) -> Self {
        self.0.protocol = ListenerProtocol::Tls;
        self.0.tls = Some(ListenerTls {
            mode: TlsMode::Passthrough,
            certificates: Vec::new(),
        });
        self
    }

    pub fn tcp(mut self) -> Self {
        self.0.protocol = ListenerProtocol::Tcp;
        self
    }

    pub fn route(mut self, r: impl Into<HttpRoute>) -> Self {
        self.0.http_routes.push(r.into());
        self
    }

    pub fn grpc_route(mut self, r: impl Into<GrpcRoute>) -> Self {
        self.0.grpc_routes.push(r.into());
        self
    }

    pub fn tls_route(mut self, r: TlsRoute) -> Self {
        self.0.tls_routes.push(r);
        self
    }

    pub fn tcp_route(mut self, r: TcpRoute) -> Self {
        self.0.tcp_routes.push(r);
        self
    }
}

impl From<ListenerBuilder> for Listener {
    fn from(b: ListenerBuilder) -> Listener {
        b.0
    }
}

/// A CA that issues server certificates for hostnames.
pub struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca: CertificateDer<'static>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` with its key, as a listener carries it.
    pub fn certificate(&self, names: &[&str]) -> CertificatePem {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        CertificatePem {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client trusting this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut c =
            rustls::ClientConfig::builder_with_provider(trellis_identity_client::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    /// A TLS connection to `addr` for `sni`, verified against this CA.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(self.client(alpn))
            .connect(name, tcp)
            .await
    }
}

/// The DNS names of the certificate the server presented.
pub fn presented_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// What an HTTP exchange returned.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One GET over an established connection (HTTP/2 when ALPN chose it).
pub async fn get_over(tls: TlsStream<TcpStream>, host: &str, path: &str) -> Answer {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let rsp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(req).await.unwrap()
    };
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A TLS server answering each connection with `<name>:` and then echoing.
pub async fn tls_echo(addr: SocketAddr, name: &'static str, cert: &CertificatePem) -> SocketAddr {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(trellis_identity_client::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.write_all(format!("{name}:").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    addr
}

/// Two TLS echo backends of test `n` for SNI routing: "one" at host 2
/// with a certificate for one.example.com, "two" at host 3 for
/// `two_names` (port 9443 both).
pub async fn sni_backends(n: u8, pki: &Pki, two_names: &[&str]) -> (SocketAddr, SocketAddr) {
    let at = |host| SocketAddr::new(std::net::IpAddr::from([127, 77, n, host]), 9443);
    let one = tls_echo(at(2), "one", &pki.certificate(&["one.example.com"])).await;
    let two = tls_echo(at(3), "two", &pki.certificate(two_names)).await;
    (one, two)
}

/// Reads at least `n` bytes within 10 s.
pub async fn read_some<I: tokio::io::AsyncRead + Unpin>(io: &mut I, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while out.len() < n {
            let k = io.read(&mut buf).await.unwrap();
            assert!(k > 0, "closed after {out:?}");
            out.extend_from_slice(&buf[..k]);
        }
    })
    .await
    .expect("an answer within 10 s");
    out
}

/// A meshed pod's sidecar on `ip` (the mesh port) with mTLS under
/// `identity` and no controller: its inbound side serves whoever the
/// identity verifies.
pub async fn meshed_sidecar(ip: IpAddr, identity: Identity) -> Sidecar {
    let config = SidecarConfig {
        workload: Some(ResourceRef::new("shop", "web-0")),
        ..crate::support::sidecar_config(ip, SourceConfig::None)
    };
    Sidecar::start_with_identity(&config, identity)
        .await
        .unwrap()
}

/// An application answering with the client identity its sidecar
/// verified (`x-trellis-client-id`), `-` for none.
pub async fn who_app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let id = req
                        .headers()
                        .get(trellis_api::contract::header::CLIENT_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(id),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}
