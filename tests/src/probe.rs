//! Readiness, as a kubelet would judge it: the pod's processes run, its apps
//! listen on their ports, and its sidecar's `/ready` answers 200. Probes of
//! HTTP endpoints run from the node namespace, over the bridge.

use crate::manifest::{Container, PodPlan};
use crate::netns;
use crate::state::{PodState, Proc};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use trellis_api::contract;

/// Whether a container runs the conformance echo server (an upstream echo
/// image, run as `trellis-echo` with the same flags).
pub fn is_echo_image(image: &str) -> bool {
    image.starts_with("registry.k8s.io/gateway-api/echo-")
        || image.starts_with("gcr.io/k8s-staging-gateway-api/echo-")
}

/// Whether an echo container is the base conformance backend `echo-basic`,
/// which takes its ports from the environment rather than from flags.
pub fn is_echo_basic(image: &str) -> bool {
    is_echo_image(image)
        && image
            .rsplit('/')
            .next()
            .is_some_and(|n| n == "echo-basic" || n.starts_with("echo-basic:"))
}

/// The flags `trellis-echo` runs with for an echo container: its `args`, or
/// `--echo-basic` for an `echo-basic` image given none (it is configured by
/// its environment).
pub fn echo_args(c: &Container) -> Vec<String> {
    if c.args.is_empty() && is_echo_basic(&c.image) {
        vec!["--echo-basic".to_string()]
    } else {
        c.args.clone()
    }
}

/// The plain-text ports an `echo-basic` container serves: `HTTP_PORT`
/// (3000), and `H2C_PORT` (3001) unless it echoes gRPC or TCP instead.
fn echo_basic_ports(c: &Container) -> Vec<u16> {
    let env = |name: &str| {
        c.env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .filter(|v| !v.is_empty())
    };
    let port = |name: &str, default: u16| env(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut ports = vec![port("HTTP_PORT", 3000)];
    if env("GRPC_ECHO_SERVER").is_none() && env("TCP_ECHO_SERVER").is_none() {
        ports.push(port("H2C_PORT", 3001));
    }
    ports
}

/// The HTTP ports an echo container serves (`--port=N`, minus `--tls` ones).
pub fn echo_http_ports(args: &[String]) -> Vec<u16> {
    let flag = |name: &str| -> Vec<u16> {
        args.iter()
            .filter_map(|a| a.strip_prefix(&format!("--{name}=")))
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let tls = flag("tls");
    let mut ports: Vec<u16> = flag("port")
        .into_iter()
        .filter(|p| !tls.contains(p))
        .collect();
    if ports.is_empty() && !args.iter().any(|a| a.starts_with("--port")) {
        ports.push(8080);
    }
    ports
}

/// The ports whose listening sockets make a pod's apps ready: declared
/// container ports, readiness probe ports, and the echo server's HTTP ports.
pub fn readiness_ports(plan: &PodPlan) -> Vec<u16> {
    let mut ports = plan.declared_ports();
    for c in &plan.containers {
        ports.extend(probe_ports(plan, c));
        if is_echo_image(&c.image) && echo_args(c) == ["--echo-basic"] {
            ports.extend(echo_basic_ports(c));
        } else if is_echo_image(&c.image) {
            ports.extend(echo_http_ports(&c.args));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn probe_ports(plan: &PodPlan, c: &Container) -> Vec<u16> {
    let Some(p) = &c.readiness_probe else {
        return Vec::new();
    };
    [&p.tcp_socket, &p.http_get]
        .into_iter()
        .flatten()
        .filter_map(|pp| plan.resolve_port(&pp.port))
        .collect()
}

/// Why a pod is not ready (None when it is).
pub fn not_ready_reason(node_netns: &str, pod: &PodState) -> Option<String> {
    let Some(ip) = pod.ip else {
        return Some("no IP yet".into());
    };
    if pod.procs.is_empty() {
        return Some("not started".into());
    }
    if let Some(dead) = pod.procs.iter().find(|p| !netns::alive(p)) {
        return Some(format!("{} exited (see {})", dead.role, dead.log.display()));
    }
    let listening = pod
        .procs
        .first()
        .map(|p: &Proc| netns::listening_ports(p.pid))
        .unwrap_or_default();
    let missing: Vec<String> = readiness_ports(&pod.plan)
        .into_iter()
        .filter(|p| !listening.contains(p))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        return Some(format!("not listening on port {}", missing.join(", ")));
    }
    if pod.meshed {
        let admin = SocketAddr::from((ip, contract::port::PROXY_ADMIN));
        match http_get(node_netns, admin, "/ready") {
            Ok((200, _)) => {}
            Ok((status, body)) => {
                return Some(format!("sidecar /ready answered {status}: {}", body.trim()));
            }
            Err(e) => return Some(format!("sidecar /ready: {e}")),
        }
    }
    None
}

/// A plain HTTP/1.1 GET from inside a namespace: (status, body).
pub fn http_get(netns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream =
        netns::connect_in(netns, addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr} answered no HTTP status"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_ports_come_from_its_flags() {
        let args: Vec<String> = [
            "--tcp=9090",
            "--port=8080",
            "--grpc=7070",
            "--port=8443",
            "--tls=8443",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(echo_http_ports(&args), vec![8080]);
        assert_eq!(echo_http_ports(&[]), vec![8080], "the echo default");
        assert!(is_echo_image(
            "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"
        ));
        assert!(!is_echo_image("busybox"));
        let basic = |env: &[(&str, &str)]| Container {
            image: "registry.k8s.io/gateway-api/echo-basic:v1.5.1".into(),
            env: env
                .iter()
                .map(|(k, v)| crate::manifest::EnvVar {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                    value_from: None,
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(echo_args(&basic(&[])), ["--echo-basic"]);
        assert_eq!(echo_basic_ports(&basic(&[])), [3000, 3001]);
        assert_eq!(
            echo_basic_ports(&basic(&[("GRPC_ECHO_SERVER", "1"), ("HTTP_PORT", "9000")])),
            [9000]
        );
        let advanced = Container {
            image: "registry.k8s.io/gateway-api/echo-advanced:v1.5.1".into(),
            ..Default::default()
        };
        assert!(echo_args(&advanced).is_empty(), "not echo-basic");
    }
}
