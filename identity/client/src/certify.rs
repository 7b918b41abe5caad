//! Asking for a certificate: the [`Certifier`] trait and its real
//! implementation, [`GrpcCertifier`], which calls `Identity.Certify` over
//! TLS (verifying the identity service against the current trust bundle)
//! with the workload's projected service-account token.

use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trellis_api::proto::identity::{CertifyRequest, identity_client::IdentityClient};

use crate::TrustBundle;

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("reading the identity token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("invalid identity service address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("connecting to the identity service at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the identity service refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the identity service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("building the TLS client: {0}")]
    Tls(rustls::Error),
}

/// The future a [`Certifier`] returns.
pub type CertifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<CertificateDer<'static>>, CertifyError>> + Send + 'a>>;

/// Exchanges a CSR for a certificate chain (leaf first).
pub trait Certifier: Send + Sync + 'static {
    fn certify<'a>(&'a self, csr_der: Vec<u8>, bundle: &'a TrustBundle) -> CertifyFuture<'a>;
}

/// `Identity.Certify` over TLS; one short-lived connection per request
/// (renewals are hours apart) so each one uses the bundle of the moment.
#[derive(Clone, Debug)]
pub struct GrpcCertifier {
    /// `host:port` of the identity service.
    pub addr: String,
    /// The DNS name or IP address its certificate carries.
    pub server_name: String,
    /// The projected service-account token, re-read for every request
    /// (the kubelet rotates it).
    pub token: PathBuf,
    /// Bound on connecting plus the call.
    pub timeout: Duration,
}

impl GrpcCertifier {
    async fn call(
        &self,
        csr_der: Vec<u8>,
        bundle: &TrustBundle,
    ) -> Result<Vec<CertificateDer<'static>>, CertifyError> {
        let token = std::fs::read_to_string(&self.token).map_err(|source| CertifyError::Token {
            path: self.token.clone(),
            source,
        })?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CertifyError::EmptyToken {
                path: self.token.clone(),
            });
        }
        let server_name =
            ServerName::try_from(self.server_name.clone()).map_err(|e| CertifyError::Address {
                addr: self.server_name.clone(),
                reason: e.to_string(),
            })?;
        let connector = TlsConnector::from(Arc::new(
            crate::tls::identity_service_config(bundle).map_err(CertifyError::Tls)?,
        ));
        let addr = self.addr.clone();
        let connect = tower::service_fn(move |_: http::Uri| {
            let (connector, server_name, addr) =
                (connector.clone(), server_name.clone(), addr.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // The scheme only names the request; TLS is done by the connector
        // above, so no tonic TLS feature is involved.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| CertifyError::Address {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let channel = endpoint
            .connect_with_connector(connect)
            .await
            .map_err(|e| CertifyError::Connect {
                addr: self.addr.clone(),
                reason: error_chain(&e),
            })?;
        let response = IdentityClient::new(channel)
            .certify(CertifyRequest { csr_der, token })
            .await
            .map_err(|s| CertifyError::Refused {
                code: s.code(),
                message: s.message().to_string(),
            })?;
        Ok(response
            .into_inner()
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect())
    }
}

impl Certifier for GrpcCertifier {
    fn certify<'a>(&'a self, csr_der: Vec<u8>, bundle: &'a TrustBundle) -> CertifyFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.call(csr_der, bundle))
                .await
                .map_err(|_| CertifyError::Timeout(self.timeout))?
        })
    }
}

/// An error and its sources on one line (tonic's transport errors say
/// little at the top level).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
