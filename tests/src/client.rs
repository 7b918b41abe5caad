//! An HTTP client that sends from inside a pod's network namespace, as a
//! process in the pod would: names resolve through the pod's hosts file, the
//! connection is made in the pod's namespace (so the pod's capture rules see
//! it), redirects are never followed. Used by the conformance runner and the
//! demo.

use crate::netns;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve {host:?} in {netns}")]
    Resolve { host: String, netns: String },
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("request to {url} timed out")]
    Timeout { url: String },
}

/// A request as the conformance suite describes it: `host` is where the
/// connection goes (`name[:port]`, port 80 by default); a `Host` entry in
/// `headers` overrides the Host header only.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub host: String,
    pub path: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lower-case header name → values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The echo server's JSON, when the body is one.
    pub fn echo(&self) -> Option<Echo> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The echo server's answer (DESIGN.md, "The echo server").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Echo {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub pod: String,
    pub service: String,
}

impl Echo {
    /// Request header values by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&Vec<String>> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Splits `name[:port]` (port 80 when absent).
pub fn host_port(host: &str) -> (&str, u16) {
    match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(80)),
        _ => (host, 80),
    }
}

/// Sends one HTTP/1.1 request from `netns`.
pub async fn send(netns: &str, req: &Request, timeout: Duration) -> Result<Response, Error> {
    let url = format!("http://{}{}", req.host, req.path);
    let fut = send_inner(netns, req, &url, timeout);
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout { url: url.clone() })?
}

/// Sends one HTTPS request (HTTP/1.1) from `netns` to `req.host`, with
/// `sni` as the server name, trusting only the PEM certificates of
/// `trusted` (as the upstream suite trusts the certificate it made).
pub async fn send_tls(
    netns: &str,
    req: &Request,
    sni: &str,
    trusted: &str,
    timeout: Duration,
) -> Result<Response, Error> {
    let url = format!("https://{}{} (SNI {sni})", req.host, req.path);
    let fut = async {
        let tcp = connect(netns, req, &url, timeout).await?;
        let http = |message: String| Error::Http {
            url: url.clone(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(trusted.as_bytes()) {
            let cert = cert.map_err(|e| http(format!("trusted certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| http(format!("trusted certificate: {e}")))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| http(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| http(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(GoHostnames(webpki)))
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string())
            .map_err(|e| http(format!("server name {sni:?}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| http(format!("TLS handshake: {e}")))?;
        exchange(tls, req, &url).await
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout { url: url.clone() })?
}

/// Server certificates verified as the upstream suite's Go client verifies
/// them: the chain by webpki against the trusted certificates, the name by
/// Go's rules. webpki refuses a wildcard right under a top-level label
/// (`*.org`, which the suite's own certificate carries); Go matches it, one
/// label for the `*` as always. Only that refusal is reconsidered, and only
/// after webpki has verified the chain (it checks the name last).
#[derive(Debug)]
struct GoHostnames(std::sync::Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for GoHostnames {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error as TlsError};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if dns_names(end_entity)
                .iter()
                .any(|n| go_hostname_match(n, &server_name.to_str())) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The DNS names (SANs) of a certificate.
fn dns_names(cert: &rustls::pki_types::CertificateDer<'_>) -> Vec<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let Ok((_, x509)) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    x509.subject_alternative_name()
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// Go's `crypto/x509` hostname match: the same number of labels, each
/// equal ignoring case, except a leading `*` label, which matches any one.
pub fn go_hostname_match(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let (p, h): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), host.split('.').collect());
    p.len() == h.len()
        && !h.iter().any(|l| l.is_empty())
        && p.iter()
            .zip(&h)
            .enumerate()
            .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
}

/// A TCP connection from `netns` to `req.host` (resolved in the pod's hosts file).
async fn connect(
    netns: &str,
    req: &Request,
    url: &str,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, Error> {
    let (name, port) = host_port(&req.host);
    let ip = netns::resolve(netns, name).ok_or_else(|| Error::Resolve {
        host: name.to_string(),
        netns: netns.to_string(),
    })?;
    let addr = SocketAddr::from((ip, port));
    let ns = netns.to_string();
    let std_stream = tokio::task::spawn_blocking(move || netns::connect_in(&ns, addr, timeout))
        .await
        .map_err(|e| Error::Http {
            url: url.to_string(),
            message: e.to_string(),
        })??;
    let http = |message: String| Error::Http {
        url: url.to_string(),
        message,
    };
    std_stream
        .set_nonblocking(true)
        .map_err(|e| http(e.to_string()))?;
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| http(e.to_string()))
}

async fn send_inner(
    netns: &str,
    req: &Request,
    url: &str,
    timeout: Duration,
) -> Result<Response, Error> {
    let stream = connect(netns, req, url, timeout).await?;
    exchange(stream, req, url).await
}

/// One HTTP/1.1 exchange over an established connection.
async fn exchange<I>(io: I, req: &Request, url: &str) -> Result<Response, Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let http = |message: String| Error::Http {
        url: url.to_string(),
        message,
    };
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| http(e.to_string()))?;
    tokio::spawn(conn);
    let method = if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    };
    let mut builder = http::Request::builder().method(method).uri(&req.path);
    let host_override = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    builder = builder.header("host", host_override.unwrap_or_else(|| req.host.clone()));
    for (k, v) in req
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| http(e.to_string()))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in resp.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).to_string());
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_like_a_url() {
        assert_eq!(host_port("echo"), ("echo", 80));
        assert_eq!(host_port("echo-v1:8080"), ("echo-v1", 8080));
        assert_eq!(host_port("echo.ns"), ("echo.ns", 80));
    }

    #[test]
    fn hostnames_match_as_go_matches_them() {
        let cases = [
            ("*.org", "example.org", true),
            ("*.org", "a.example.org", false),
            ("*", "example.org", false),
            ("*.example.com", "WWW.example.com", true),
            ("*.example.com", "example.com", false),
            ("www.example.com", "www.example.com.", true),
            ("w*.example.com", "www.example.com", false),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(go_hostname_match(pattern, host), want, "{pattern} {host}");
        }
    }

    #[test]
    fn echo_headers_are_case_insensitive() {
        let r = Response {
            status: 200,
            headers: BTreeMap::new(),
            body: Bytes::from_static(
                br#"{"path":"/a","headers":{"X-Header-Set":["v"]},"pod":"echo-v1-x","namespace":"n"}"#,
            ),
        };
        let e = r.echo().unwrap();
        assert_eq!(e.header("x-header-set"), Some(&vec!["v".to_string()]));
        assert_eq!(e.pod, "echo-v1-x");
    }
}
