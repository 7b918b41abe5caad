//! The pure core: a pod and the injector's configuration in, a JSON Patch out.
//!
//! ```text
//! Pod ──► skip? (hostNetwork, opted out, already injected) ──► empty patch
//!     └─► annotations ─► parse (ports, CIDRs, log level) ─► bad value: PatchError
//!                     └─► initContainers = [trellis-init (CNI off)] + [trellis-proxy] + existing
//!                         volumes += trellis-identity (token + trust bundle ConfigMap)
//!                         annotations += trellis.io/injected
//! ```
//!
//! The sidecar is a native sidecar: an init container with
//! `restartPolicy: Always` and a startup probe on `/ready`, so the kubelet
//! starts the app containers (and the pod's own init containers) only once
//! the proxy is ready, and a Job's pod completes when its app does.
//!
//! The trust bundle comes from the `trellis-trust-bundle` ConfigMap that
//! identity publishes in every meshed namespace, projected next to the
//! token: the kubelet keeps the file current, so a trust-anchor rotation
//! reaches running proxies, which follow the file.

use crate::config::InjectConfig;
use ipnet::IpNet;
use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::net::IpAddr;
use trellis_api::contract::{self, env, key, port};

/// The projected volume holding the identity token and the trust bundle.
pub const IDENTITY_VOLUME: &str = "trellis-identity";
/// Where that volume is mounted in the proxy container.
pub const IDENTITY_DIR: &str = "/var/run/trellis";
const TOKEN_FILE: &str = "identity-token";
const BUNDLE_FILE: &str = "trust-bundle.pem";
/// Projected tokens are refreshed by the kubelet at 80 % of this.
const TOKEN_SECONDS: i64 = 3600;
/// The name of the proxy's admin port on the pod.
pub const ADMIN_PORT_NAME: &str = "trellis-admin";

/// Why a pod is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `spec.hostNetwork`: capture rules would rewrite the node's traffic.
    HostNetwork,
    /// The pod's `trellis.io/inject: disabled` annotation.
    OptedOut,
    /// The pod already has the sidecar (a reinvocation, or an applied pod).
    AlreadyInjected,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::HostNetwork => "the pod uses the host network",
            Skip::OptedOut => "the pod opted out with trellis.io/inject: disabled",
            Skip::AlreadyInjected => "the pod already has the trellis-proxy sidecar",
        })
    }
}

/// An annotation the injector cannot honour; the pod is refused rather than
/// meshed differently from what its owner asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("annotation {key}: {value:?} is not {expected}")]
    Annotation {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Skip(Skip),
    Inject(Patch),
}

/// The patch that meshes `pod`: empty when the pod is skipped.
pub fn patch(pod: &Pod, cfg: &InjectConfig) -> Result<Patch, PatchError> {
    Ok(match plan(pod, cfg)? {
        Plan::Skip(_) => Patch(Vec::new()),
        Plan::Inject(p) => p,
    })
}

/// Whether and how to mesh `pod`.
pub fn plan(pod: &Pod, cfg: &InjectConfig) -> Result<Plan, PatchError> {
    if let Some(skip) = skip(pod) {
        return Ok(Plan::Skip(skip));
    }
    let ann = Annotations::parse(pod)?;
    let spec = pod.spec.as_ref();
    let mut ops = Vec::new();

    let mut init = Vec::new();
    if !cfg.cni_enabled {
        init.push(init_container(cfg, &ann));
    }
    init.push(proxy_container(cfg, &ann));
    let has_init = spec.and_then(|s| s.init_containers.as_ref()).is_some();
    if has_init {
        // Inserting at 0, 1, … keeps ours first and in order.
        for (i, c) in init.iter().enumerate() {
            ops.push(add(
                &["spec", "initContainers", &i.to_string()],
                to_value(c),
            ));
        }
    } else {
        ops.push(add(&["spec", "initContainers"], to_value(&init)));
    }

    let volume = identity_volume();
    if spec.and_then(|s| s.volumes.as_ref()).is_some() {
        ops.push(add(&["spec", "volumes", "-"], to_value(&volume)));
    } else {
        ops.push(add(&["spec", "volumes"], to_value(&vec![volume])));
    }

    let ours = [(key::INJECTED, "true".to_string())];
    if pod.metadata.annotations.is_some() {
        for (k, v) in ours {
            ops.push(add(&["metadata", "annotations", k], Value::String(v)));
        }
    } else {
        let map: serde_json::Map<String, Value> = ours
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    }
    Ok(Plan::Inject(Patch(ops)))
}

/// Why `pod` must not be meshed, if it must not.
pub fn skip(pod: &Pod) -> Option<Skip> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Some(Skip::HostNetwork);
    }
    let annotations = pod.metadata.annotations.as_ref();
    if annotations
        .and_then(|a| a.get(key::INJECT))
        .is_some_and(|v| v.trim() == contract::INJECT_DISABLED)
    {
        return Some(Skip::OptedOut);
    }
    let has_proxy = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == contract::PROXY_CONTAINER_NAME));
    if has_proxy || annotations.is_some_and(|a| a.contains_key(key::INJECTED)) {
        return Some(Skip::AlreadyInjected);
    }
    None
}

/// The pod annotations that change what is injected, parsed and normalised.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Annotations {
    skip_inbound_ports: Option<String>,
    skip_outbound_ports: Option<String>,
    skip_outbound_cidrs: Option<String>,
    log_level: Option<String>,
}

impl Annotations {
    fn parse(pod: &Pod) -> Result<Self, PatchError> {
        let Some(a) = pod.metadata.annotations.as_ref() else {
            return Ok(Self::default());
        };
        let get = |k: &str| a.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let ports = |k: &'static str| get(k).map(|v| port_list(k, v)).transpose();
        // Opaque ports are read by the controller from the pod itself; they
        // are checked here so a typo refuses the pod instead of silently
        // sending a database protocol through HTTP detection.
        ports(key::OPAQUE_PORTS)?;
        let log_level = match get(key::PROXY_LOG_LEVEL) {
            Some(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(PatchError::Annotation {
                    key: key::PROXY_LOG_LEVEL,
                    value: v.to_string(),
                    expected: "a log filter without spaces (e.g. info,trellis_proxy=debug)",
                });
            }
            v => v.map(String::from),
        };
        Ok(Self {
            skip_inbound_ports: ports(key::SKIP_INBOUND_PORTS)?,
            skip_outbound_ports: ports(key::SKIP_OUTBOUND_PORTS)?,
            skip_outbound_cidrs: get(key::SKIP_OUTBOUND_CIDRS)
                .map(|v| cidr_list(key::SKIP_OUTBOUND_CIDRS, v))
                .transpose()?,
            log_level,
        })
    }
}

/// `80, 8080-8090` → `80,8080-8090`: ports 1–65535 and inclusive ranges.
fn port_list(key: &'static str, value: &str) -> Result<String, PatchError> {
    let bad = || PatchError::Annotation {
        key,
        value: value.to_string(),
        expected: "a comma-separated list of ports (1-65535) or ranges (8000-8099)",
    };
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((lo, hi)) => match (port(lo), port(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => out.push(format!("{lo}-{hi}")),
                _ => return Err(bad()),
            },
            None => out.push(port(item).ok_or_else(bad)?.to_string()),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out.join(","))
}

/// `10.0.0.0/8, 192.0.2.1` → `10.0.0.0/8,192.0.2.1/32`.
fn cidr_list(key: &'static str, value: &str) -> Result<String, PatchError> {
    let bad = || PatchError::Annotation {
        key,
        value: value.to_string(),
        expected: "a comma-separated list of CIDRs (10.0.0.0/8) or addresses",
    };
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => IpNet::from(item.parse::<IpAddr>().map_err(|_| bad())?),
        };
        out.push(net.to_string());
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out.join(","))
}

fn proxy_container(cfg: &InjectConfig, ann: &Annotations) -> Container {
    let log = ann
        .log_level
        .clone()
        .unwrap_or_else(|| cfg.log_level.clone());
    let mut env_vars = vec![
        plain(env::CONTROLLER_ADDR, &cfg.controller_addr),
        plain(env::IDENTITY_ADDR, &cfg.identity_addr),
        plain(env::IDENTITY_NAME, &cfg.identity_name),
        plain(env::TRUST_DOMAIN, &cfg.trust_domain),
        plain(env::CLUSTER_DOMAIN, &cfg.cluster_domain),
        plain(env::TRUST_BUNDLE, &format!("{IDENTITY_DIR}/{BUNDLE_FILE}")),
        plain(env::IDENTITY_TOKEN, &format!("{IDENTITY_DIR}/{TOKEN_FILE}")),
        field(env::POD_NAMESPACE, "metadata.namespace"),
        field(env::POD_NAME, "metadata.name"),
        field(env::POD_IP, "status.podIP"),
        field(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
        plain(env::LOG, &log),
        plain(env::LOG_FORMAT, &cfg.log_format),
    ];
    if let Some(id) = &cfg.controller_identity {
        env_vars.push(plain(env::CONTROLLER_IDENTITY, id.as_str()));
    }
    env_vars.sort_by(|a, b| a.name.cmp(&b.name));
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port::PROXY_ADMIN.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    Container {
        name: contract::PROXY_CONTAINER_NAME.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        args: Some(vec!["sidecar".into()]),
        restart_policy: Some("Always".into()),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.into()),
            container_port: port::PROXY_ADMIN.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Up to two minutes for the first certificate and policy; then the
        // app starts. Readiness follows /ready, liveness /live.
        startup_probe: Some(probe("/ready", 1, 120)),
        readiness_probe: Some(probe("/ready", 5, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: Some(cfg.proxy_resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(contract::PROXY_UID.into()),
            run_as_group: Some(contract::PROXY_UID.into()),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: IDENTITY_VOLUME.into(),
            mount_path: IDENTITY_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn init_container(cfg: &InjectConfig, ann: &Annotations) -> Container {
    // The kubelet probes the proxy's admin port on the pod IP: never capture it.
    let inbound = match &ann.skip_inbound_ports {
        Some(p) => format!("{},{p}", port::PROXY_ADMIN),
        None => port::PROXY_ADMIN.to_string(),
    };
    let mut env_vars = vec![
        plain(env::SKIP_INBOUND_PORTS, &inbound),
        plain(env::LOG, &cfg.log_level),
        plain(env::LOG_FORMAT, &cfg.log_format),
    ];
    if let Some(p) = &ann.skip_outbound_ports {
        env_vars.push(plain(env::SKIP_OUTBOUND_PORTS, p));
    }
    if let Some(c) = &ann.skip_outbound_cidrs {
        env_vars.push(plain(env::SKIP_OUTBOUND_CIDRS, c));
    }
    env_vars.sort_by(|a, b| a.name.cmp(&b.name));
    Container {
        name: contract::INIT_CONTAINER_NAME.into(),
        image: Some(if cfg.init_image.is_empty() {
            cfg.proxy_image.clone()
        } else {
            cfg.init_image.clone()
        }),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        args: Some(vec!["init".into()]),
        env: Some(env_vars),
        resources: Some(cfg.init_resources.clone()),
        security_context: Some(SecurityContext {
            // iptables needs uid 0 with NET_ADMIN/NET_RAW in the pod's
            // network namespace, and nothing else.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn identity_volume() -> Volume {
    Volume {
        name: IDENTITY_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(contract::IDENTITY_TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: TOKEN_FILE.into(),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: contract::TRUST_BUNDLE_CONFIGMAP.into(),
                        items: Some(vec![KeyToPath {
                            key: contract::TRUST_BUNDLE_KEY.into(),
                            path: BUNDLE_FILE.into(),
                            mode: None,
                        }]),
                        optional: Some(false),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Kubernetes API types always serialise; an error here would be a bug in k8s-openapi.
    serde_json::to_value(v).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_are_normalised_and_checked() {
        assert_eq!(port_list("k", " 80, 8000-8099 ").unwrap(), "80,8000-8099");
        for bad in ["", "0", "80,x", "9-1", "70000", "1-"] {
            let err = port_list("k", bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn cidr_lists_accept_addresses() {
        assert_eq!(
            cidr_list("k", "10.0.0.0/8, 192.0.2.1,2001:db8::/32").unwrap(),
            "10.0.0.0/8,192.0.2.1/32,2001:db8::/32"
        );
        assert!(cidr_list("k", "10.0.0.0/33").is_err());
        assert!(cidr_list("k", "example.com").is_err());
    }
}
