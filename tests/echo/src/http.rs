//! The HTTP side (DESIGN.md, "The echo server"): every path answers 200 with
//! the JSON echo of the request, except
//!
//! - `/health` → 200 `OK`;
//! - `/status/NNN` → status NNN (400 unless three digits);
//! - `/retry[/...]?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]`
//!   → the first N requests with that uuid fail (after waiting D, a Go
//!   duration like `250ms`): with status C, or else by a TCP reset of the
//!   connection (HTTP/1) or of the stream (HTTP/2); later ones echo;
//! - a WebSocket upgrade (any path) → a WebSocket echoing every message.
//!
//! `?delay=D` delays an echo; the request header `X-Echo-Set-Header:
//! Name:Value[,Name:Value…]` sets response headers.

use crate::config::Identity;
use crate::tls::TlsInfo;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::Role};

/// State shared by every connection of the server.
#[derive(Debug, Default)]
pub struct Shared {
    pub identity: Identity,
    /// Attempts seen per `/retry` uuid.
    retries: Mutex<HashMap<String, u32>>,
}

impl Shared {
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            retries: Mutex::default(),
        }
    }
}

/// What the server knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The port that accepted it.
    pub port: u16,
    pub tls: Option<TlsInfo>,
    /// Set to make the connection close with a TCP reset.
    pub reset: Arc<AtomicBool>,
}

/// The request failed on purpose: hyper resets the HTTP/2 stream, or closes
/// the HTTP/1 connection, which `Conn::reset` turns into a TCP reset.
#[derive(Debug, thiserror::Error)]
#[error("reset on purpose by /retry")]
pub struct Reset;

/// The JSON echo.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Echo<'a> {
    path: String,
    host: String,
    method: &'a str,
    proto: &'static str,
    headers: BTreeMap<String, Vec<String>>,
    namespace: &'a str,
    service: &'a str,
    pod: &'a str,
    http_port: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsInfo>,
}

type Answer = Response<Full<Bytes>>;

pub async fn handle(
    shared: Arc<Shared>,
    conn: Conn,
    mut req: Request<Incoming>,
) -> Result<Answer, Reset> {
    if is_websocket(&req) {
        return Ok(websocket(&mut req));
    }
    let (parts, body) = req.into_parts();
    // Read the whole body so the connection can carry the next request.
    let _ = body.collect().await;
    let req = Request::from_parts(parts, ());
    let path = req.uri().path();
    let query = query(&req);
    if path == "/health" {
        return Ok(text(StatusCode::OK, "OK"));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = (code.len() == 3)
            .then(|| code.parse::<u16>().ok())
            .flatten()
            .and_then(|c| StatusCode::from_u16(c).ok());
        return Ok(match status {
            Some(status) => text(status, ""),
            None => text(
                StatusCode::BAD_REQUEST,
                &format!("invalid status code {code:?}"),
            ),
        });
    }
    if (path == "/retry" || path.starts_with("/retry/"))
        && let Some(failure) = retry(&shared, &conn, &req, &query).await?
    {
        return Ok(failure);
    }
    if let Some(delay) = query.get("delay") {
        match parse_duration(delay) {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid delay {delay:?}"),
                ));
            }
        }
    }
    Ok(echo(&shared.identity, &conn, &req))
}

fn echo(id: &Identity, conn: &Conn, req: &Request<()>) -> Answer {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name != header::HOST {
            headers
                .entry(canonical(name.as_str()))
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let echo = Echo {
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        host: host(req),
        method: req.method().as_str(),
        proto: proto(req.version()),
        headers,
        namespace: &id.namespace,
        service: &id.service,
        pod: &id.pod,
        http_port: conn.port,
        version: &id.version,
        cluster: &id.cluster,
        tls: conn.tls.as_ref(),
    };
    let body = serde_json::to_string_pretty(&echo).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    match set_headers(req) {
        Ok(extra) => {
            for (name, value) in extra {
                set.append(name, value);
            }
            response
        }
        Err(message) => text(StatusCode::BAD_REQUEST, &message),
    }
}

/// The `X-Echo-Set-Header` entries, in order.
fn set_headers(req: &Request<()>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for value in req.headers().get_all("x-echo-set-header") {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, val) = item.split_once(':').unwrap_or((item, ""));
            let bad = || format!("invalid X-Echo-Set-Header entry {item:?}: expected Name:Value");
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
            let val = HeaderValue::from_str(val.trim()).map_err(|_| bad())?;
            // One entry per name; repeats join with a comma, like the upstream echo.
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, existing)) => {
                    let joined = format!(
                        "{},{}",
                        existing.to_str().unwrap_or_default(),
                        val.to_str().unwrap_or_default()
                    );
                    *existing = HeaderValue::from_str(&joined).map_err(|_| bad())?;
                }
                None => out.push((name, val)),
            }
        }
    }
    Ok(out)
}

/// Counts the attempt; `Some(answer)` or `Err(Reset)` while it must fail.
async fn retry(
    shared: &Shared,
    conn: &Conn,
    req: &Request<()>,
    query: &HashMap<String, String>,
) -> Result<Option<Answer>, Reset> {
    let bad = |msg: String| Ok(Some(text(StatusCode::BAD_REQUEST, &msg)));
    let Some(uuid) = query.get("uuid") else {
        return bad("/retry needs a uuid query parameter".into());
    };
    let succeed_after = match query.get("succeedAfter").map(|n| n.parse::<u32>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad(format!("invalid succeedAfter {:?}", query["succeedAfter"])),
    };
    let code = match query.get("responseCode") {
        None => None,
        Some(c) => match c
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => Some(code),
            None => return bad(format!("invalid responseCode {c:?}")),
        },
    };
    let delay = match query.get("delayRetry") {
        None => None,
        Some(d) => match parse_duration(d) {
            Some(d) => Some(d),
            None => return bad(format!("invalid delayRetry {d:?}")),
        },
    };
    let attempt = {
        let mut retries = shared.retries.lock();
        let n = retries.entry(uuid.clone()).or_default();
        *n += 1;
        *n
    };
    if attempt > succeed_after {
        return Ok(None);
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match code {
        Some(code) => Ok(Some(text(
            code,
            &format!("attempt {attempt} of uuid {uuid} fails"),
        ))),
        None => {
            if req.version() != Version::HTTP_2 {
                conn.reset.store(true, Ordering::SeqCst);
            }
            Err(Reset)
        }
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Accepts the upgrade and echoes every text and binary message.
fn websocket(req: &mut Request<Incoming>) -> Answer {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

fn text(status: StatusCode, body: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

/// `:authority` (HTTP/2, absolute-form) or the Host header.
fn host<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default()
}

/// Go's spelling of the protocol (`r.Proto`).
fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Go's canonical header casing (`X-Header-Add`): upper case at the start
/// and after each `-`, lower case elsewhere.
pub fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Query parameters, percent-decoded; the first of repeated keys wins.
fn query<B>(req: &Request<B>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A Go duration (`1.5s`, `300ms`, `1m30s`; units ns, us, µs, ms, s, m, h).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_casing() {
        assert_eq!(canonical("x-header-add"), "X-Header-Add");
        assert_eq!(canonical("USER-AGENT"), "User-Agent");
        assert_eq!(canonical("x_foo"), "X_foo");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "1x", "ms", "1..2s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
