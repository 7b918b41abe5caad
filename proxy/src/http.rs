//! HTTP plumbing shared by the inbound and outbound sides: serving a
//! detected connection with hyper, graceful shutdown, forwarding upgrades,
//! and the proxy's own error answers.

use crate::{body::Body, client, detect::Detected, mesh::Io};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::{body::Incoming, service::Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::{convert::Infallible, future::Future};
use tokio_util::sync::CancellationToken;

/// The header naming why the proxy itself answered.
pub const PROXY_ERROR: &str = "x-trellis-proxy-error";

/// Serves one client connection as HTTP/1 (with upgrades) or HTTP/2 until
/// it closes; on `shutdown`, stops taking new requests and lets the ones in
/// flight finish.
pub async fn serve<I, S>(io: I, proto: Detected, svc: S, shutdown: CancellationToken)
where
    I: Io,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    let result = match proto {
        Detected::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .max_concurrent_streams(1024)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        _ => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection");
    }
}

/// Whether a request asks to take over its connection (WebSocket and other
/// `Upgrade`s, HTTP/1 `CONNECT`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && (req.method() == Method::CONNECT || req.headers().contains_key(header::UPGRADE))
}

/// Forwards a request that upgrades: `send` carries it on a connection of
/// its own; once the server agrees (101, or 2xx to `CONNECT`), both upgraded
/// connections are spliced together.
pub async fn forward_upgrade<F>(
    mut req: Request<Incoming>,
    send: impl FnOnce(Request<Incoming>) -> F,
) -> Result<Response<Body>, client::Error>
where
    F: Future<Output = Result<Response<Incoming>, client::Error>>,
{
    let connect = req.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut req);
    let mut rsp = send(req).await?;
    let agreed =
        rsp.status() == StatusCode::SWITCHING_PROTOCOLS || (connect && rsp.status().is_success());
    if agreed {
        let upstream = hyper::upgrade::on(&mut rsp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        tracing::debug!(error = %e, "upgraded connection");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    Ok(rsp.map(Body::Incoming))
}

/// An answer of the proxy itself.
pub fn error_response(status: StatusCode, why: &str) -> Response<Body> {
    let mut rsp = Response::new(Body::empty());
    *rsp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(why) {
        rsp.headers_mut().insert(PROXY_ERROR, v);
    }
    rsp
}

/// The answer for a failed upstream exchange: 502 when the endpoint could
/// not be reached or broke the exchange.
pub fn upstream_error(e: &client::Error) -> Response<Body> {
    tracing::debug!(error = %e, "upstream failed");
    error_response(StatusCode::BAD_GATEWAY, &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_recognised() {
        let ws = Request::get("/chat")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&ws));
        let connect = Request::connect("db:5432").body(()).unwrap();
        assert!(is_upgrade(&connect));
        let plain = Request::get("/").body(()).unwrap();
        assert!(!is_upgrade(&plain));
        let h2 = Request::get("/")
            .version(Version::HTTP_2)
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&h2));
    }

    #[test]
    fn proxy_errors_say_why() {
        let rsp = error_response(StatusCode::NOT_FOUND, "no route matches");
        assert_eq!(rsp.status(), 404);
        assert_eq!(rsp.headers()[PROXY_ERROR], "no route matches");
    }
}
