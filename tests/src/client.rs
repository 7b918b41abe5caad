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

async fn send_inner(
    netns: &str,
    req: &Request,
    url: &str,
    timeout: Duration,
) -> Result<Response, Error> {
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
    let stream = tokio::net::TcpStream::from_std(std_stream).map_err(|e| http(e.to_string()))?;
    let io = hyper_util::rt::TokioIo::new(stream);
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
