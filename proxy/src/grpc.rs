//! gRPC details the HTTP path needs: the `grpc-timeout` header (read as a
//! deadline, written with the time left), and the proxy's own answers to
//! gRPC clients as a gRPC status in a trailers-only response, which is what
//! gRPC libraries understand (an HTTP 404 or 504 reads as a broken call).

use crate::{body::Body, http::PROXY_ERROR};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use std::time::Duration;

pub const TIMEOUT: &str = "grpc-timeout";

/// gRPC status codes the proxy answers with.
pub mod code {
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Parses `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`). `None` for anything else, which the spec says to treat as no
/// timeout.
pub fn parse_timeout(v: &HeaderValue) -> Option<Duration> {
    let v = v.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes a duration as `grpc-timeout`, in the finest unit that fits in 8
/// digits, rounded up to that unit: never `0`, which would leave the callee
/// no time at all.
pub fn format_timeout(d: Duration) -> HeaderValue {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let ns = d.as_nanos().max(1);
    for (size, unit) in UNITS {
        let n = ns.div_ceil(size);
        if n < 100_000_000 {
            return HeaderValue::from_str(&format!("{n}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// The gRPC status for an HTTP status the proxy would have answered with
/// (gRPC's own HTTP-to-status mapping, except that a timeout is a deadline).
pub fn code_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        504 => code::DEADLINE_EXCEEDED,
        429 | 502 | 503 => code::UNAVAILABLE,
        _ => code::INTERNAL,
    }
}

/// A trailers-only answer: HTTP 200, `grpc-status` and `grpc-message` in
/// the head, no body. `why` also goes in [`PROXY_ERROR`].
pub fn status_response(code: u32, why: &str) -> Response<Body> {
    let mut rsp = Response::new(Body::empty());
    let h: &mut HeaderMap = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&encode_message(why)) {
        h.insert("grpc-message", v.clone());
        h.insert(PROXY_ERROR, v);
    }
    rsp
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII,
/// and `%` itself.
fn encode_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_spec_writes_them() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("100m", Some(Duration::from_millis(100))),
            ("5u", Some(Duration::from_micros(5))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None),
            ("10", None),
            ("m", None),
            ("1x", None),
            ("-1S", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_timeout(&HeaderValue::from_static(v)), want, "{v}");
        }
    }

    #[test]
    fn timeouts_format_in_the_finest_unit_that_fits() {
        let cases = [
            (Duration::from_millis(99), "99000000n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_millis(150), "150000u"),
            (Duration::from_secs(1000), "1000000m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::ZERO, "1n"),
        ];
        for (d, want) in cases {
            let got = format_timeout(d);
            assert_eq!(got, want, "{d:?}");
            assert!(parse_timeout(&got).unwrap() >= d);
        }
    }

    #[test]
    fn proxy_answers_are_trailers_only() {
        let rsp = status_response(code_for(StatusCode::NOT_FOUND), "no route 100%");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["grpc-status"], "12");
        assert_eq!(rsp.headers()["grpc-message"], "no route 100%25");
        assert!(http_body::Body::is_end_stream(rsp.body()));
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            code::DEADLINE_EXCEEDED
        );
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), code::UNAVAILABLE);
    }
}
