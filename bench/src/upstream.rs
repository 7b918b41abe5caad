//! The benchmark's upstream: a minimal HTTP/1.1 + h2c server answering
//! every request with a 1 KiB body, and gRPC unary calls (content type
//! `application/grpc`) with one 1 KiB message and `grpc-status: 0`
//! trailers. It runs as its own process (`trellis-bench upstream`) so it can
//! be pinned to a core and measured like the proxies.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{convert::Infallible, net::SocketAddr};

pub const BODY_SIZE: usize = 1024;

type Body = BoxBody<Bytes, Infallible>;

pub fn run(addr: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let body = Bytes::from(vec![b'x'; BODY_SIZE]);
        let mut grpc = vec![0u8, 0, 0, 4, 0];
        grpc.extend(std::iter::repeat_n(b'y', BODY_SIZE));
        let grpc = Bytes::from(grpc);
        loop {
            let (tcp, _) = listener.accept().await.context("accepting")?;
            let _ = tcp.set_nodelay(true);
            let (body, grpc) = (body.clone(), grpc.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (body, grpc) = (body.clone(), grpc.clone());
                    async move { Ok::<_, Infallible>(answer(req, body, grpc).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>, body: Bytes, grpc: Bytes) -> Response<Body> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let _ = req.into_body().collect().await;
    if is_grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let unary = Unary {
            data: Some(grpc),
            trailers: Some(trailers),
        };
        let mut rsp = Response::new(unary.boxed());
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        return rsp;
    }
    Response::new(Full::new(body).boxed())
}

/// A gRPC unary answer: one data frame, then the trailers.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => self.trailers.take().map(Frame::trailers),
        };
        std::task::Poll::Ready(next.map(Ok))
    }
}
