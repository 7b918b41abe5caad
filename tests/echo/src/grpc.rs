//! The gRPC side: `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`,
//! wire-compatible with the Gateway API conformance backend, so GRPCRoute
//! tests route and read it unchanged. `Echo` and `EchoTwo` answer with what
//! the server saw (the gRPC counterpart of the HTTP JSON), `EchoThree` is
//! deliberately unimplemented, `EchoStream` streams `count` answers.

use crate::config::Identity;
use crate::tls::TlsInfo;
use std::{sync::Arc, time::Duration};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The generated messages, service and client.
pub mod pb {
    tonic::include_proto!("gateway_api_conformance.echo_basic.grpcecho");
}

use pb::{
    Assertions, Context, EchoRequest, EchoResponse, EchoStreamRequest, Header, TlsAssertions,
    grpc_echo_server::GrpcEcho,
};

/// The `:path` and `:authority` of a call, which tonic does not keep; put in
/// the request's extensions by the server before tonic sees it.
#[derive(Clone, Debug, Default)]
pub struct CallTarget {
    pub path: String,
    pub authority: String,
}

/// The service for one connection (it knows the port and TLS state).
#[derive(Clone, Debug)]
pub struct EchoService {
    pub identity: Arc<Identity>,
    pub port: u16,
    pub tls: Option<TlsInfo>,
}

impl EchoService {
    fn assertions<T>(&self, req: &Request<T>) -> Assertions {
        let target = req
            .extensions()
            .get::<CallTarget>()
            .cloned()
            .unwrap_or_default();
        // Like grpc-go's incoming metadata, which the upstream backend lists:
        // `:authority` first, then every request header.
        let authority = (!target.authority.is_empty()).then(|| Header {
            key: ":authority".into(),
            value: target.authority.clone(),
        });
        let headers = authority
            .into_iter()
            .chain(
                req.metadata()
                    .clone()
                    .into_headers()
                    .iter()
                    .map(|(k, v)| Header {
                        key: k.as_str().to_string(),
                        value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    }),
            )
            .collect();
        let id = &self.identity;
        Assertions {
            fully_qualified_method: target.path,
            headers,
            authority: target.authority,
            context: Some(Context {
                namespace: id.namespace.clone(),
                ingress: String::new(),
                service_name: id.service.clone(),
                pod: id.pod.clone(),
            }),
            tls_assertions: self.tls.as_ref().map(|t| TlsAssertions {
                version: t.version.clone(),
                negotiated_protocol: t.negotiated_protocol.clone(),
                server_name: t.server_name.clone(),
                cipher_suite: t.cipher_suite.clone(),
                peer_certificates: t.peer_certificates.clone(),
            }),
            port: u32::from(self.port),
            proto: "HTTP/2.0".into(),
            version: id.version.clone(),
        }
    }

    fn answer(&self, req: Request<EchoRequest>) -> Response<EchoResponse> {
        let assertions = self.assertions(&req);
        Response::new(EchoResponse {
            assertions: Some(assertions),
            request: Some(req.into_inner()),
        })
    }
}

#[tonic::async_trait]
impl GrpcEcho for EchoService {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(self.answer(req))
    }

    async fn echo_two(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(self.answer(req))
    }

    async fn echo_three(
        &self,
        _req: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented(
            "EchoThree is deliberately not implemented",
        ))
    }

    type EchoStreamStream = ReceiverStream<Result<EchoResponse, Status>>;

    async fn echo_stream(
        &self,
        req: Request<EchoStreamRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        let assertions = self.assertions(&req);
        let ask = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..ask.count.max(1) {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(ask.interval_ms))).await;
                }
                let answer = EchoResponse {
                    assertions: Some(assertions.clone()),
                    request: Some(EchoRequest {
                        message: ask.message.clone(),
                    }),
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
