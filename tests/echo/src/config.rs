//! Flags and environment. The flags are those of the upstream mesh
//! conformance backend (`echo-advanced`, Istio's echo app), so the sandbox
//! runs the conformance Deployments' `args` unchanged:
//! `--port` (HTTP, default 8080), `--grpc` (default 7070), `--tcp` (default
//! 9090), each repeatable or comma-separated; `--tls` marks some of those
//! ports as TLS; `--crt`/`--key` give its certificate; `--bind-ip` and
//! `--bind-localhost` bind ports to `INSTANCE_IP` or 127.0.0.1 instead of
//! every address; `--version` and `--cluster` are echoed back.
//!
//! `--echo-basic` instead takes the ports from the environment the way the
//! Gateway API base conformance backend (`echo-basic`) does, so its
//! Deployments (configured by `env`, without `args`) run unchanged too.

use clap::Parser;
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

#[derive(Debug, Parser)]
#[command(
    name = "trellis-echo",
    about = "The Trellis test backend: HTTP/1.1 and h2c, gRPC and TCP echo",
    disable_version_flag = true
)]
pub struct Args {
    /// HTTP ports (HTTP/1.1 and HTTP/2 with prior knowledge, WebSocket).
    #[arg(long = "port", value_delimiter = ',', value_name = "PORT")]
    pub port: Vec<u16>,
    /// gRPC ports (the GrpcEcho service).
    #[arg(long, value_delimiter = ',', value_name = "PORT")]
    pub grpc: Vec<u16>,
    /// TCP echo ports.
    #[arg(long, value_delimiter = ',', value_name = "PORT")]
    pub tcp: Vec<u16>,
    /// Ports among the above that are served over TLS.
    #[arg(long, value_delimiter = ',', value_name = "PORT")]
    pub tls: Vec<u16>,
    /// Ports bound to the address in INSTANCE_IP rather than every address.
    #[arg(long = "bind-ip", value_delimiter = ',', value_name = "PORT")]
    pub bind_ip: Vec<u16>,
    /// Ports bound to 127.0.0.1 rather than every address.
    #[arg(long = "bind-localhost", value_delimiter = ',', value_name = "PORT")]
    pub bind_localhost: Vec<u16>,
    /// TLS certificate (PEM). Without it, or when the file does not exist,
    /// a self-signed certificate is generated at start.
    #[arg(long)]
    pub crt: Option<PathBuf>,
    /// TLS private key (PEM) for --crt.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// A version string, echoed back (`version`).
    #[arg(long)]
    pub version: Option<String>,
    /// A cluster name, echoed back (`cluster`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Take ports and certificate from echo-basic's environment: HTTP on
    /// HTTP_PORT (3000) and H2C_PORT (3001), HTTPS on HTTPS_PORT (8443) with
    /// TLS_SERVER_CERT and TLS_SERVER_PRIVKEY; with GRPC_ECHO_SERVER or
    /// TCP_ECHO_SERVER set, gRPC or TCP echo on HTTP_PORT and HTTPS_PORT.
    #[arg(long = "echo-basic", conflicts_with_all = ["port", "grpc", "tcp", "tls", "crt", "key"])]
    pub echo_basic: bool,
}

/// What a port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

/// One port to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    /// The address to bind; an unspecified IP means every address (both
    /// families where the host has IPv6).
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Who the server is, echoed in every answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
    pub service: String,
    pub version: String,
    pub cluster: String,
}

/// Where the certificate for TLS ports comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    Files {
        crt: PathBuf,
        key: PathBuf,
    },
    /// Generated at start, for these names.
    SelfSigned(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub identity: Identity,
    pub cert: CertSource,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("port {0} is given to more than one of --port, --grpc and --tcp")]
    Duplicate(u16),
    #[error("--{flag} {port}: not one of the --port, --grpc or --tcp ports")]
    Unknown { flag: &'static str, port: u16 },
    #[error(
        "--bind-ip needs the INSTANCE_IP environment variable to hold an IP address, not {0:?}"
    )]
    InstanceIp(String),
    #[error("--crt and --key go together")]
    HalfCert,
    #[error("{name}={value:?} is not a port number")]
    EnvPort { name: &'static str, value: String },
}

impl Config {
    /// Builds the configuration from flags and the environment (`NAMESPACE`,
    /// `POD_NAME`, `SERVICE_NAME`, `INSTANCE_IP`), read through `env`.
    pub fn from_args(
        args: Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (ports, tls, crt, key) = if args.echo_basic {
            echo_basic(env)?
        } else {
            let or = |ports: Vec<u16>, default: u16| {
                if ports.is_empty() {
                    vec![default]
                } else {
                    ports
                }
            };
            let ports: Vec<(Protocol, u16)> = [
                (Protocol::Http, or(args.port, 8080)),
                (Protocol::Grpc, or(args.grpc, 7070)),
                (Protocol::Tcp, or(args.tcp, 9090)),
            ]
            .into_iter()
            .flat_map(|(p, ports)| ports.into_iter().map(move |port| (p, port)))
            .collect();
            (ports, args.tls, args.crt, args.key)
        };
        let mut seen = BTreeSet::new();
        for (_, port) in &ports {
            if !seen.insert(*port) {
                return Err(ConfigError::Duplicate(*port));
            }
        }
        for (flag, list) in [
            ("tls", &tls),
            ("bind-ip", &args.bind_ip),
            ("bind-localhost", &args.bind_localhost),
        ] {
            if let Some(port) = list.iter().find(|p| !seen.contains(p)) {
                return Err(ConfigError::Unknown { flag, port: *port });
            }
        }
        let instance_ip = if args.bind_ip.is_empty() {
            None
        } else {
            let text = env("INSTANCE_IP").unwrap_or_default();
            Some(
                text.parse::<IpAddr>()
                    .map_err(|_| ConfigError::InstanceIp(text))?,
            )
        };
        let listeners = ports
            .into_iter()
            .map(|(protocol, port)| {
                let ip = match instance_ip {
                    Some(ip) if args.bind_ip.contains(&port) => ip,
                    _ if args.bind_localhost.contains(&port) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                Listener {
                    protocol,
                    addr: SocketAddr::new(ip, port),
                    tls: tls.contains(&port),
                }
            })
            .collect();
        let get = |name: &str| env(name).unwrap_or_default();
        let identity = Identity {
            namespace: get("NAMESPACE"),
            pod: get("POD_NAME"),
            service: get("SERVICE_NAME"),
            version: args.version.unwrap_or_default(),
            cluster: args.cluster.unwrap_or_default(),
        };
        let cert = match (crt, key) {
            (Some(crt), Some(key)) if crt.exists() && key.exists() => {
                CertSource::Files { crt, key }
            }
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::HalfCert),
            _ => CertSource::SelfSigned(self_signed_names(&identity)),
        };
        Ok(Config {
            listeners,
            identity,
            cert,
        })
    }
}

/// Ports, TLS ports and certificate files from echo-basic's environment.
type Ports = (
    Vec<(Protocol, u16)>,
    Vec<u16>,
    Option<PathBuf>,
    Option<PathBuf>,
);

fn echo_basic(env: &dyn Fn(&str) -> Option<String>) -> Result<Ports, ConfigError> {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    let port = |name: &'static str, default: u16| match env(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(value) => value
            .parse()
            .map_err(|_| ConfigError::EnvPort { name, value }),
    };
    let crt = env("TLS_SERVER_CERT").filter(|v| !v.is_empty());
    // The HTTP server spells it PRIVKEY, the gRPC and TCP servers PRIV_KEY.
    let key = env("TLS_SERVER_PRIV_KEY")
        .or_else(|| env("TLS_SERVER_PRIVKEY"))
        .filter(|v| !v.is_empty());
    let https = crt.is_some() && key.is_some();
    let (http, secure) = (port("HTTP_PORT", 3000)?, port("HTTPS_PORT", 8443)?);
    let mut ports = Vec::new();
    let protocol = if set("GRPC_ECHO_SERVER") {
        Protocol::Grpc
    } else if set("TCP_ECHO_SERVER") {
        Protocol::Tcp
    } else {
        ports.push((Protocol::Http, port("H2C_PORT", 3001)?));
        Protocol::Http
    };
    ports.insert(0, (protocol, http));
    let mut tls = Vec::new();
    if https {
        ports.push((protocol, secure));
        tls.push(secure);
    }
    Ok((ports, tls, crt.map(PathBuf::from), key.map(PathBuf::from)))
}

/// The names a generated certificate carries: localhost, and the pod's and
/// service's names as clients in the mesh would spell them.
fn self_signed_names(id: &Identity) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    for name in [&id.pod, &id.service].into_iter().filter(|n| !n.is_empty()) {
        names.push(name.clone());
        if !id.namespace.is_empty() {
            names.push(format!("{name}.{}", id.namespace));
            names.push(format!("{name}.{}.svc.cluster.local", id.namespace));
        }
    }
    names
}

#[cfg(test)]
mod tests;
