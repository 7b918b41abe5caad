//! The conformance tests as data (`tests/conformance/mesh-tests.yaml`) and
//! the comparison of one response with one expectation, the way the upstream
//! mesh suite's echo client compares them (status in the allowed set;
//! response headers present or absent; the backend pod's name prefix;
//! request headers as the echo saw them, joined with ","), plus the checks the
//! upstream gateway suite makes that its mesh client cannot: the request path
//! the echo saw and the redirect's `Location`.

use crate::client::Response;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The mesh conformance tests of Gateway API v1.6.1.
pub const MESH_TESTS: &str = include_str!("../../conformance/mesh-tests.yaml");

#[derive(Debug, thiserror::Error)]
#[error("bad conformance test data: {0}")]
pub struct DataError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Test {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub features: Vec<String>,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub manifests: Vec<String>,
    #[serde(default)]
    pub cases: Vec<Case>,
    #[serde(default)]
    pub weights: Option<Weights>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace of the echo-v1 pod that sends.
    #[serde(default = "mesh_namespace")]
    pub client: String,
    pub request: Req,
    #[serde(default)]
    pub expect: Expect,
}

pub fn mesh_namespace() -> String {
    "gateway-conformance-mesh".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Req {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_host() -> String {
    "echo".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Expect {
    pub status: Vec<u16>,
    pub backend: String,
    pub namespace: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub absent_headers: Vec<String>,
    pub request_headers: BTreeMap<String, String>,
    pub absent_request_headers: Vec<String>,
    pub request_path: Option<String>,
    /// The Host and method the backend must have seen (the gateway suite
    /// checks them when its expected request names them).
    pub host: Option<String>,
    pub method: Option<String>,
    pub redirect: Option<Redirect>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Weights {
    #[serde(default)]
    pub grpc: bool,
    pub request: Req,
    pub expected: BTreeMap<String, f64>,
}

/// Every test, in the order of the data file.
pub fn tests() -> Result<Vec<Test>, DataError> {
    serde_saphyr::from_str(MESH_TESTS).map_err(|e| DataError(e.to_string()))
}

impl Case {
    /// A readable name: the one given, else method and path.
    pub fn title(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            let path = if self.request.path.is_empty() {
                "/"
            } else {
                &self.request.path
            };
            format!("{index} {} {path}", self.request.host)
        })
    }
}

/// Why a response does not meet an expectation (None when it does).
pub fn compare(req: &Req, exp: &Expect, resp: &Response) -> Option<String> {
    let statuses = if exp.status.is_empty() {
        vec![200]
    } else {
        exp.status.clone()
    };
    if !statuses.contains(&resp.status) {
        return Some(format!("wanted status {statuses:?}, got {}", resp.status));
    }
    let echo = resp.echo();
    if !exp.request_headers.is_empty() || !exp.absent_request_headers.is_empty() {
        let Some(echo) = &echo else {
            return Some("no echo body: request headers not captured".into());
        };
        for (name, want) in &exp.request_headers {
            match echo.header(name) {
                None => return Some(format!("expected request header {name} to be set")),
                Some(got) if got.join(",") != *want => {
                    return Some(format!(
                        "expected request header {name}={want}, got {}",
                        got.join(",")
                    ));
                }
                Some(_) => {}
            }
        }
        for name in &exp.absent_request_headers {
            if let Some(v) = echo.header(name) {
                return Some(format!("expected request header {name} absent, got {v:?}"));
            }
        }
    }
    for (what, want, got) in [
        ("Host", &exp.host, echo.as_ref().map(|e| e.host.as_str())),
        (
            "method",
            &exp.method,
            echo.as_ref().map(|e| e.method.as_str()),
        ),
    ] {
        if let Some(want) = want
            && got != Some(want.as_str())
        {
            return Some(format!(
                "expected the echo to see {what} {want}, got {:?}",
                got.unwrap_or_default()
            ));
        }
    }
    if let Some(path) = &exp.request_path {
        let got = echo.as_ref().map(|e| e.path.as_str()).unwrap_or_default();
        if got != path {
            return Some(format!("expected the echo to see path {path}, got {got:?}"));
        }
    }
    for name in &exp.absent_headers {
        if let Some(v) = resp.headers.get(&name.to_ascii_lowercase()) {
            return Some(format!("expected no response header {name}, got {v:?}"));
        }
    }
    for (name, want) in &exp.headers {
        let got = resp.header(name).unwrap_or_default();
        if got != want {
            return Some(format!(
                "expected response header {name}={want}, got {got:?}"
            ));
        }
    }
    if !exp.backend.is_empty() {
        let pod = echo.as_ref().map(|e| e.pod.as_str()).unwrap_or_default();
        if !pod.starts_with(&exp.backend) {
            return Some(format!(
                "expected pod name to start with {}, got {pod:?}",
                exp.backend
            ));
        }
        if let Some(ns) = &exp.namespace {
            let got = echo
                .as_ref()
                .map(|e| e.namespace.as_str())
                .unwrap_or_default();
            if got != ns {
                return Some(format!("expected namespace {ns}, got {got:?}"));
            }
        }
    }
    if let Some(want) = &exp.redirect {
        let Some(location) = resp.header("location") else {
            return Some("expected a Location header".into());
        };
        let got = parse_location(location);
        let path = if req.path.is_empty() { "/" } else { &req.path };
        // Upstream's defaults (`setRedirectRequestDefaults`): the host is
        // not checked unless given; scheme, port and path are the request
        // URL's (no port for `http://echo/...`).
        let want = Redirect {
            scheme: Some(want.scheme.clone().unwrap_or_else(|| "http".into())),
            host: want.host.clone().or_else(|| got.host.clone()),
            port: want.port.clone().or_else(|| url_port(&req.host)),
            path: Some(
                want.path
                    .clone()
                    .unwrap_or_else(|| path.split('?').next().unwrap_or(path).to_string()),
            ),
        };
        if got != want {
            return Some(format!(
                "redirect Location {location:?} is {got:?}, expected {want:?}"
            ));
        }
    }
    None
}

/// The port written in a request's `host` (`echo:8080`), as Go's
/// `URL.Port()` reads it from `http://echo:8080/...`; `None` for `echo`.
fn url_port(host: &str) -> Option<String> {
    match host.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            Some(p.to_string())
        }
        _ => None,
    }
}

/// Splits an absolute `Location` into scheme, host, port and path (query
/// dropped), as Go's `url.Parse` would.
pub fn parse_location(location: &str) -> Redirect {
    let (scheme, rest) = location.split_once("://").unwrap_or(("", location));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p.to_string())),
        _ => (authority, None),
    };
    let path = path.split('?').next().unwrap_or_default();
    Redirect {
        scheme: Some(scheme.to_string()),
        host: Some(host.to_string()),
        port,
        path: Some(if path.is_empty() {
            "/".into()
        } else {
            path.into()
        }),
    }
}

#[cfg(test)]
mod tests;
