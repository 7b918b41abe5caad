//! A unary gRPC call from inside a pod's namespace, for the GRPCRoute
//! tests: HTTP/2 with prior knowledge, one length-prefixed protobuf message
//! each way, `grpc-status` from the trailers. The echo service is the one the
//! upstream echo image serves (`proto.EchoTestService/Echo`, a string
//! `message` field 1 each way); the echo's reply names the pod that answered.

use crate::client::{self, host_port};
use crate::netns;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::Duration;

pub const ECHO_METHOD: &str = "/proto.EchoTestService/Echo";

/// The answer of one call.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    pub status: u32,
    pub message: String,
}

impl GrpcReply {
    /// The pod that answered: a `Hostname=` line or a JSON `pod` field of
    /// the echo's message.
    pub fn pod(&self) -> Option<String> {
        if let Some(line) = self
            .message
            .lines()
            .find_map(|l| l.split_once("Hostname=").map(|(_, v)| v.trim().to_string()))
        {
            return Some(line);
        }
        serde_json::from_str::<serde_json::Value>(&self.message)
            .ok()
            .and_then(|v| v["pod"].as_str().map(String::from))
    }
}

/// Encodes a message with one string field 1 and frames it for gRPC.
pub fn frame(message: &str) -> Bytes {
    let mut pb = BytesMut::new();
    if !message.is_empty() {
        pb.put_u8(0x0a);
        let mut len = message.len();
        while len >= 0x80 {
            pb.put_u8((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        pb.put_u8(len as u8);
        pb.put_slice(message.as_bytes());
    }
    let mut out = BytesMut::with_capacity(pb.len() + 5);
    out.put_u8(0);
    out.put_u32(pb.len() as u32);
    out.put_slice(&pb);
    out.freeze()
}

/// Decodes the string field 1 of the first framed message.
pub fn unframe(body: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let mut pb = body.get(5..5 + len)?;
    while !pb.is_empty() {
        let tag = pb[0];
        pb = &pb[1..];
        let (n, used) = varint(pb)?;
        pb = &pb[used..];
        match tag & 7 {
            2 => {
                let field = pb.get(..n as usize)?;
                if tag >> 3 == 1 {
                    return Some(String::from_utf8_lossy(field).to_string());
                }
                pb = &pb[n as usize..];
            }
            0 => {}
            _ => return None,
        }
    }
    Some(String::new())
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Calls the echo service at `host` (`name:port`) from `netns`.
pub async fn echo(netns: &str, host: &str, timeout: Duration) -> Result<GrpcReply, client::Error> {
    let fail = |message: String| client::Error::Http {
        url: format!("grpc://{host}{ECHO_METHOD}"),
        message,
    };
    let (name, port) = host_port(host);
    let ip = netns::resolve(netns, name).ok_or_else(|| client::Error::Resolve {
        host: name.to_string(),
        netns: netns.to_string(),
    })?;
    let addr = SocketAddr::from((ip, port));
    let ns = netns.to_string();
    let call = async {
        let s = tokio::task::spawn_blocking(move || netns::connect_in(&ns, addr, timeout))
            .await
            .map_err(|e| fail(e.to_string()))??;
        s.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
        let stream = tokio::net::TcpStream::from_std(s).map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::post(format!("http://{host}{ECHO_METHOD}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame("")))
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let head_status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = collected.to_bytes();
        Ok(GrpcReply {
            status: trailer_status.or(head_status).unwrap_or(2),
            message: unframe(&body).unwrap_or_default(),
        })
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| client::Error::Timeout {
            url: format!("grpc://{host}{ECHO_METHOD}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_grpc_framing() {
        let long = "x".repeat(300);
        for m in ["", "hello", long.as_str()] {
            assert_eq!(unframe(&frame(m)).as_deref(), Some(m));
        }
        let r = GrpcReply {
            status: 0,
            message: "ServiceVersion=\nHostname=echo-v1-abc\n".into(),
        };
        assert_eq!(r.pod().as_deref(), Some("echo-v1-abc"));
    }
}
