//! TLS for the ports given to `--tls`: the certificate (from `--crt`/`--key`
//! or generated), the rustls server configuration per protocol, and what a
//! handshake negotiated, echoed back as `tls`.

use crate::config::CertSource;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("reading private key {path}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct Certified {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Certified {
    pub fn load(source: &CertSource) -> Result<Self, TlsError> {
        match source {
            CertSource::Files { crt, key } => {
                let path = crt.display().to_string();
                let chain = CertificateDer::pem_file_iter(crt)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|source| TlsError::Cert { path, source })?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                    path: key.display().to_string(),
                    source,
                })?;
                Ok(Self { chain, key })
            }
            CertSource::SelfSigned(names) => {
                let generated = rcgen::generate_simple_self_signed(names.clone())?;
                let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
                Ok(Self {
                    chain: vec![generated.cert.der().clone()],
                    key,
                })
            }
        }
    }

    /// A server configuration offering these ALPN protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// What the handshake negotiated, named as the upstream echo names it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The SNI the client sent.
    pub server_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub negotiated_protocol: String,
    /// IANA name, like `TLS_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_certificates: Vec<String>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|s| {
                let name = s
                    .suite()
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("{:?}", s.suite()));
                // rustls spells the TLS 1.3 suites TLS13_*; IANA (and Go) TLS_*.
                match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name,
                }
            })
            .unwrap_or_default();
        TlsInfo {
            version,
            server_name: conn.server_name().unwrap_or_default().to_string(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite,
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(pem)
                .collect(),
        }
    }
}

/// PEM: base64 of the DER in 64-character lines.
fn pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
