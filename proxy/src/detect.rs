//! Protocol detection: is a new connection HTTP/1, HTTP/2 with prior
//! knowledge, or something else?
//!
//! The proxy reads the first bytes and decides as soon as they allow:
//! the HTTP/2 connection preface, or an HTTP/1 method followed by a space.
//! Anything else is opaque. A client that sends nothing at all — a
//! server-speaks-first protocol such as MySQL or SMTP — is treated as opaque
//! after a short bound ([`DEFAULT_TIMEOUT`]) so its server can greet it.

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long the proxy waits for a client's first bytes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(300);

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Methods of RFC 9110 and the WebDAV/PATCH extensions; a request with
/// another method is carried as opaque TCP, which is still correct.
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"HEAD",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
];

/// The decision for the bytes read so far, or `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    match buf.iter().position(|&b| b == b' ') {
        Some(sp) if METHODS.contains(&&buf[..sp]) && sp > 0 => Some(Detected::Http1),
        Some(_) => Some(Detected::Opaque),
        // Still inside the first token: wait while it can be a method.
        None if METHODS.iter().any(|m| m.starts_with(buf)) => None,
        None => Some(Detected::Opaque),
    }
}

/// Reads from `io` until [`classify`] decides, the client stops sending for
/// `timeout`, or it closes. Returns the decision and the bytes read, which
/// the caller replays.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> std::io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(0)) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(_)) => {
                if let Some(d) = classify(&buf) {
                    return Ok((d, buf.freeze()));
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        let cases: &[(&[u8], Option<Detected>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Detected::Http1)),
            (b"POST /x HTTP/1.0", Some(Detected::Http1)),
            (b"CONNECT a:443 HTTP/1.1", Some(Detected::Http1)),
            (b"GE", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Detected::Http2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"PRI * HTTP/1.1", Some(Detected::Opaque)),
            (b"\x16\x03\x01\x02\x00", Some(Detected::Opaque)),
            (b"EHLO example.com", Some(Detected::Opaque)),
            (b"get / HTTP/1.1", Some(Detected::Opaque)),
            (b" GET", Some(Detected::Opaque)),
            (b"", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                classify(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (d, bytes) = detect(&mut client, DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(d, Detected::Opaque);
        assert!(bytes.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_split_over_writes_is_http1() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(b"GE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            client
        });
        let (d, bytes) = detect(&mut server, DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(d, Detected::Http1);
        assert!(bytes.starts_with(b"GET "));
        drop(writer.await.unwrap());
    }
}
