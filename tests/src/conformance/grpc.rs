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

pub const ECHO_METHOD: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";
/// Field numbers from `EchoResponse` to the pod name.
const POD_FIELDS: &[u64] = &[1, 4, 4];

/// The answer of one call.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    pub status: u32,
    /// The answering pod's name (empty when the reply carried none).
    pub pod: String,
}

impl GrpcReply {
    /// The pod that answered.
    pub fn pod(&self) -> Option<&str> {
        (!self.pod.is_empty()).then_some(self.pod.as_str())
    }
}

/// Frames a protobuf message for gRPC (uncompressed, length-prefixed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The first framed message of a gRPC body.
pub fn unframe(body: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    body.get(5..5 + len)
}

/// Follows length-delimited fields by number (`[1, 4, 4]`: field 4 of field
/// 4 of field 1) and returns the last one as text.
pub fn field_path(mut msg: &[u8], path: &[u64]) -> Option<String> {
    for (depth, want) in path.iter().enumerate() {
        let mut found = None;
        while !msg.is_empty() {
            let (key, used) = varint(msg)?;
            msg = &msg[used..];
            match key & 7 {
                0 => msg = &msg[varint(msg)?.1..],
                1 => msg = msg.get(8..)?,
                5 => msg = msg.get(4..)?,
                2 => {
                    let (n, used) = varint(msg)?;
                    let field = msg.get(used..used + n as usize)?;
                    msg = &msg[used + n as usize..];
                    if key >> 3 == *want {
                        found = Some(field);
                        break;
                    }
                }
                _ => return None,
            }
        }
        msg = found?;
        if depth + 1 == path.len() {
            return Some(String::from_utf8_lossy(msg).to_string());
        }
    }
    None
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
            .body(Full::new(frame(&[])))
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
            pod: unframe(&body)
                .and_then(|m| field_path(m, POD_FIELDS))
                .unwrap_or_default(),
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
    fn the_pod_is_found_inside_the_echo_response() {
        // EchoResponse{assertions: Assertions{fully_qualified_method: "/m", context: Context{namespace: "ns", pod: "echo-v1-x"}}}
        let context = [&[0x0a, 2][..], b"ns", &[0x22, 9], b"echo-v1-x"].concat();
        let assertions = [
            &[0x0a, 2][..],
            b"/m",
            &[0x22, context.len() as u8],
            &context,
        ]
        .concat();
        let response = [&[0x0a, assertions.len() as u8][..], &assertions, &[0x12, 0]].concat();
        let body = frame(&response);
        assert_eq!(unframe(&body), Some(&response[..]));
        assert_eq!(
            field_path(unframe(&body).unwrap(), POD_FIELDS).as_deref(),
            Some("echo-v1-x")
        );
        assert_eq!(field_path(&response, &[1, 4, 1]).as_deref(), Some("ns"));
        assert_eq!(field_path(&response, &[3]), None);
        assert_eq!(unframe(&[0, 0, 0]), None, "a truncated frame");
    }
}
