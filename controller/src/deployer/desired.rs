//! The pure part of the gateway deployer: a Gateway of class `trellis` and
//! the mesh settings in, the ServiceAccount, Service and Deployment that run
//! `trellis-proxy gateway` for it out.
//!
//! The proxy's pod mirrors the injector's sidecar (same environment names,
//! same `trellis-identity` projected volume carrying the token and the trust
//! bundle from the `trellis-trust-bundle` ConfigMap of its namespace, same
//! security context) so a gateway proxy joins the mesh like any meshed pod
//! and follows trust-anchor rotations and token refreshes like one. Listener ports below 1024 are served as uid 2102 through the
//! namespaced sysctl `net.ipv4.ip_unprivileged_port_start`.

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use trellis_api::contract::{self, env, key, port};
use trellis_policy::SpiffeId;

/// The field manager of everything the deployer writes.
pub const FIELD_MANAGER: &str = "trellis.io/gateway-deployer";
/// The standard label naming a generated object's Gateway (GEP-1762).
pub const GATEWAY_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Marks objects the deployer owns, so it can find and remove stale ones.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "trellis-gateway-deployer");
const IDENTITY_VOLUME: &str = "trellis-identity";
const IDENTITY_DIR: &str = "/var/run/trellis";

/// What every gateway proxy needs: read from the injector's configuration
/// (`injector.yaml` of the `trellis-injector` ConfigMap, the same values the
/// sidecars get).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub proxy_image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    pub controller_addr: String,
    /// The controller's SPIFFE id: gateway proxies then reach it over mTLS,
    /// as sidecars do; absent when the controller serves in plaintext.
    #[serde(default)]
    pub controller_identity: Option<SpiffeId>,
    pub identity_addr: String,
    pub identity_name: String,
    #[serde(default = "default_domain")]
    pub trust_domain: String,
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    #[serde(default = "default_log")]
    pub log_level: String,
    #[serde(default)]
    pub log_format: Option<String>,
    #[serde(default)]
    pub proxy_resources: Value,
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_domain() -> String {
    contract::DEFAULT_TRUST_DOMAIN.into()
}
fn default_log() -> String {
    "info".into()
}

/// A Gateway the deployer cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("gateway {0} has no {1}")]
    Missing(String, &'static str),
    #[error("gateway {gateway}: listener {listener} has no valid port")]
    BadPort { gateway: String, listener: String },
}

/// The objects of one Gateway, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    pub service_account: Value,
    pub service: Value,
    pub deployment: Value,
}

impl Desired {
    pub fn objects(&self) -> [&Value; 3] {
        [&self.service_account, &self.service, &self.deployment]
    }
}

/// The name of a Gateway's objects: `<gateway>-trellis`, shortened with a
/// hash to stay a DNS label (63 characters) as Service names must.
pub fn object_name(gateway: &str) -> String {
    let name = format!("{gateway}-trellis");
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(gateway.as_bytes())[..5]);
    let stem: String = gateway.chars().take(63 - 1 - hash.len()).collect();
    format!("{}-{hash}", stem.trim_end_matches(['-', '.']))
}

/// A label value naming the Gateway: its name, hashed like [`object_name`]
/// when longer than a label value may be (63 characters).
pub fn label_value(gateway: &str) -> String {
    if gateway.len() <= 63 {
        return gateway.to_string();
    }
    let hash = hex::encode(&Sha256::digest(gateway.as_bytes())[..5]);
    let stem: String = gateway.chars().take(63 - 1 - hash.len()).collect();
    format!("{}-{hash}", stem.trim_end_matches(['-', '.']))
}

/// The ports the Gateway's listeners need: (port, protocol), deduplicated.
fn ports(gw: &Value, gw_name: &str) -> Result<BTreeSet<(u16, &'static str)>, DesiredError> {
    let mut out = BTreeSet::new();
    for l in gw
        .pointer("/spec/listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = l["name"].as_str().unwrap_or("?").to_string();
        let port = l["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| DesiredError::BadPort {
                gateway: gw_name.into(),
                listener: name,
            })?;
        let proto = if l["protocol"] == "UDP" { "UDP" } else { "TCP" };
        out.insert((port, proto));
    }
    Ok(out)
}

fn string_map(v: Option<&Value>) -> serde_json::Map<String, Value> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_string())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The objects that run `gw` (a Gateway as JSON).
pub fn desired(gw: &Value, s: &Settings) -> Result<Desired, DesiredError> {
    let ns = gw
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let gw_name = gw
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| DesiredError::Missing(format!("{ns}/?"), "name"))?;
    let who = format!("{ns}/{gw_name}");
    let uid = gw
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .ok_or_else(|| DesiredError::Missing(who.clone(), "uid"))?;
    let class = gw
        .pointer("/spec/gatewayClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ports = ports(gw, gw_name)?;
    let name = object_name(gw_name);

    // spec.infrastructure labels and annotations go on every generated object.
    let mut labels = string_map(gw.pointer("/spec/infrastructure/labels"));
    let selector =
        json!({ GATEWAY_LABEL: label_value(gw_name), "app.kubernetes.io/name": "trellis-gateway" });
    labels.extend(selector.as_object().cloned().unwrap_or_default());
    labels.insert(
        "gateway.networking.k8s.io/gateway-class-name".into(),
        json!(class),
    );
    labels.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
    let annotations = string_map(gw.pointer("/spec/infrastructure/annotations"));
    let meta = json!({
        "name": name, "namespace": ns, "labels": labels, "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "name": gw_name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
        }],
    });

    let service_account = json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
        // The proxy presents a projected token with its own audience instead.
        "automountServiceAccountToken": false,
    });
    let service_ports: Vec<Value> = ports
        .iter()
        .map(|(p, proto)| json!({"name": format!("{}-{p}", proto.to_lowercase()), "port": p, "targetPort": p, "protocol": proto}))
        .collect();
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "LoadBalancer", "selector": selector, "ports": service_ports},
    });

    let mut pod_annotations = annotations.clone();
    // A gateway pod is never given a sidecar: it is the proxy.
    pod_annotations.insert(key::INJECT.into(), json!(contract::INJECT_DISABLED));
    let field =
        |n: &str, path: &str| json!({"name": n, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let plain = |n: &str, v: &str| json!({"name": n, "value": v});
    let mut env_vars = vec![
        plain(env::CONTROLLER_ADDR, &s.controller_addr),
        plain(env::IDENTITY_ADDR, &s.identity_addr),
        plain(env::IDENTITY_NAME, &s.identity_name),
        plain(env::TRUST_DOMAIN, &s.trust_domain),
        plain(env::CLUSTER_DOMAIN, &s.cluster_domain),
        plain(
            env::TRUST_BUNDLE,
            &format!("{IDENTITY_DIR}/trust-bundle.pem"),
        ),
        plain(
            env::IDENTITY_TOKEN,
            &format!("{IDENTITY_DIR}/identity-token"),
        ),
        field(env::POD_NAMESPACE, "metadata.namespace"),
        field(env::POD_NAME, "metadata.name"),
        field(env::POD_IP, "status.podIP"),
        field(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
        plain(env::LOG, &s.log_level),
    ];
    if let Some(f) = &s.log_format {
        env_vars.push(plain(env::LOG_FORMAT, f));
    }
    if let Some(id) = &s.controller_identity {
        env_vars.push(plain(env::CONTROLLER_IDENTITY, id.as_str()));
    }
    env_vars.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut container_ports: Vec<Value> = ports
        .iter()
        .map(|(p, proto)| json!({"containerPort": p, "protocol": proto}))
        .collect();
    container_ports.push(
        json!({"name": "trellis-admin", "containerPort": port::PROXY_ADMIN, "protocol": "TCP"}),
    );
    let probe = |path: &str, period: u32| json!({"httpGet": {"path": path, "port": port::PROXY_ADMIN}, "periodSeconds": period});
    let lowest = ports.iter().map(|(p, _)| *p).min().unwrap_or(1024);
    let mut pod_security = json!({
        "runAsNonRoot": true, "runAsUser": contract::PROXY_UID, "runAsGroup": contract::PROXY_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if lowest < 1024 {
        pod_security["sysctls"] =
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": lowest.to_string()}]);
    }
    let mut container = json!({
        "name": contract::PROXY_CONTAINER_NAME,
        "image": s.proxy_image,
        "imagePullPolicy": s.image_pull_policy,
        "args": ["gateway", format!("--gateway={ns}/{gw_name}")],
        "env": env_vars,
        "ports": container_ports,
        "readinessProbe": probe("/ready", 5),
        "livenessProbe": probe("/live", 10),
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR, "readOnly": true}],
    });
    if s.proxy_resources.is_object() {
        container["resources"] = s.proxy_resources.clone();
    }
    let volume = json!({
        "name": IDENTITY_VOLUME,
        "projected": {"defaultMode": 0o444, "sources": [
            {"serviceAccountToken": {"audience": contract::IDENTITY_TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "identity-token"}},
            {"configMap": {"name": contract::TRUST_BUNDLE_CONFIGMAP, "optional": false,
                "items": [{"key": contract::TRUST_BUNDLE_KEY, "path": "trust-bundle.pem"}]}},
        ]},
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": pod_annotations},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": [volume],
                },
            },
        },
    });
    Ok(Desired {
        name,
        service_account,
        service,
        deployment,
    })
}

/// `status.addresses` of a Gateway from its Service: the load balancer's
/// addresses once assigned, else the cluster IPs.
pub fn addresses(service: &Value) -> Vec<Value> {
    let ingress = service
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array);
    let mut out: Vec<Value> = ingress
        .into_iter()
        .flatten()
        .filter_map(|i| match (i["ip"].as_str(), i["hostname"].as_str()) {
            (Some(ip), _) => Some(json!({"type": "IPAddress", "value": ip})),
            (None, Some(h)) => Some(json!({"type": "Hostname", "value": h})),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        let ips = service
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array);
        let single = service
            .pointer("/spec/clusterIP")
            .cloned()
            .into_iter()
            .collect::<Vec<_>>();
        out = ips
            .cloned()
            .unwrap_or(single)
            .iter()
            .filter_map(Value::as_str)
            .filter(|ip| *ip != "None")
            .map(|ip| json!({"type": "IPAddress", "value": ip}))
            .collect();
    }
    out
}

/// Whether a Deployment has a ready replica of its current generation.
pub fn deployment_ready(d: &Value) -> bool {
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    int("/status/readyReplicas") >= 1
        && int("/status/observedGeneration") >= int("/metadata/generation")
}
