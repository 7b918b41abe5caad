//! Gateways in the sandbox: one `trellis-proxy gateway` per Gateway of a
//! Trellis class, in the node namespace, where the gateway deployer runs a
//! Deployment and a LoadBalancer Service per Gateway on a cluster.
//!
//! ```text
//! Gateway (class whose controllerName is trellis.io/controller, or class
//!          `trellis` when the manifests bring no GatewayClass of that name)
//!   ─► an address from the Service range (198.19.0.0/16) on the node bridge:
//!      pods reach it through their route to 198.19.0.0/16, the host through
//!      `ip netns exec trl-<sandbox>-node`
//!   ─► a token for the service account `<gateway>-trellis` (the deployer's
//!      name), listed in identity's tokens file
//!   ─► trellis-proxy gateway --gateway NS/NAME --listen-ip ADDR, as uid 2102
//!      (ports below 1024 through `net.ipv4.ip_unprivileged_port_start`)
//!   ─► ready: `/ready` answers 200 and every listener port is bound
//!   ─► the controller's directory: the Gateway with `status.addresses`, as the
//!      deployer writes it; names `<gateway>-trellis.<ns>.svc…` in every pod's hosts
//! ```

use crate::cluster::allocate_cluster_ip;
use crate::manifest::Object;
use crate::names::BRIDGE;
use crate::netns::{self, Spawn};
use crate::probe;
use crate::spawn::{self, Bins};
use crate::state::{Dir, GatewayState, State};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use trellis_api::contract::{self, env, port};

/// A Gateway the sandbox runs a proxy for: `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The name of the objects the deployer makes for a Gateway, which is also
/// the gateway proxy's service account.
pub fn object_name(gateway: &str) -> String {
    trellis_controller::deployer::desired::object_name(gateway)
}

/// Whether a GatewayClass of this name is Trellis': a GatewayClass of the
/// manifests naming `trellis.io/controller`, or the `trellis` class the
/// chart installs when the manifests bring none of that name.
pub fn class_is_ours(st: &State, class: &str) -> bool {
    match st
        .objects
        .iter()
        .find(|o| o.kind() == "GatewayClass" && o.name() == class)
    {
        Some(c) => c.0["spec"]["controllerName"] == contract::CONTROLLER_NAME,
        None => class == contract::GATEWAY_CLASS_NAME,
    }
}

/// The Gateways of a Trellis class.
pub fn wanted(st: &State) -> Vec<&Object> {
    st.objects
        .iter()
        .filter(|o| o.kind() == "Gateway")
        .filter(|o| {
            o.0["spec"]["gatewayClassName"]
                .as_str()
                .is_some_and(|c| class_is_ours(st, c))
        })
        .collect()
}

/// The `trellis` GatewayClass the chart installs, when a Gateway uses it
/// and the manifests do not bring it.
pub fn implied_class(st: &State) -> Option<Value> {
    let used = wanted(st)
        .iter()
        .any(|g| g.0["spec"]["gatewayClassName"] == contract::GATEWAY_CLASS_NAME);
    let given = st
        .objects
        .iter()
        .any(|o| o.kind() == "GatewayClass" && o.name() == contract::GATEWAY_CLASS_NAME);
    (used && !given).then(|| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": contract::GATEWAY_CLASS_NAME},
            "spec": {"controllerName": contract::CONTROLLER_NAME},
        })
    })
}

/// A Gateway as the controller reads it: with `status.addresses` once its
/// proxy is ready (the deployer writes them then, and only then).
pub fn with_status(st: &State, gw: &Object) -> Value {
    let mut v = gw.0.clone();
    if let Some(g) = st.gateways.get(&key(gw.namespace(), gw.name()))
        && g.ready
    {
        v["status"]["addresses"] = json!([{"type": "IPAddress", "value": g.address.to_string()}]);
    }
    v
}

/// `/etc/hosts` lines naming each gateway as the deployer's Service would
/// be named (the short name only in its own namespace).
pub fn hosts_lines(st: &State, pod_namespace: &str) -> String {
    let mut out = String::new();
    for g in st.gateways.values() {
        let svc = object_name(&g.name);
        let ns = &g.namespace;
        out.push_str(&format!(
            "{}\t{svc}.{ns}.svc.{} {svc}.{ns}.svc {svc}.{ns}",
            g.address,
            contract::DEFAULT_CLUSTER_DOMAIN
        ));
        if ns == pod_namespace {
            out.push(' ');
            out.push_str(&svc);
        }
        out.push('\n');
    }
    out
}

/// Addresses already given to Services and gateways.
pub fn taken(st: &State) -> BTreeSet<Ipv4Addr> {
    st.cluster_ips
        .values()
        .copied()
        .chain(st.gateways.values().map(|g| g.address))
        .collect()
}

/// The listener ports of a Gateway whose protocol Trellis serves.
pub fn listener_ports(gw: &Object) -> BTreeSet<u16> {
    gw.0["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            matches!(
                l["protocol"].as_str(),
                Some("HTTP" | "HTTPS" | "TLS" | "TCP")
            )
        })
        .filter_map(|l| l["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect()
}

/// The admin address of a gateway proxy.
pub fn admin_addr(g: &GatewayState) -> SocketAddr {
    SocketAddr::from((g.address, port::PROXY_ADMIN))
}

/// The token file of a gateway proxy (`tokens/_gateways/<ns>/<name>`: no
/// namespace starts with `_`, so it never meets a pod's).
pub fn token_path(dir: &Dir, g: &GatewayState) -> PathBuf {
    dir.tokens()
        .join("_gateways")
        .join(&g.namespace)
        .join(&g.name)
}

/// Gateways that are no longer wanted: their proxies stop, their addresses
/// and tokens go. Returns whether anything changed.
pub fn remove_unwanted(st: &mut State, node: &str, dir: &Dir) -> bool {
    let wanted: BTreeSet<String> = wanted(st)
        .iter()
        .map(|g| key(g.namespace(), g.name()))
        .collect();
    let gone: Vec<String> = st
        .gateways
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for k in &gone {
        if let Some(g) = st.gateways.remove(k) {
            stop(&g, node, dir);
        }
    }
    !gone.is_empty()
}

/// Stops a gateway proxy and takes its address and token away.
pub fn stop(g: &GatewayState, node: &str, dir: &Dir) {
    if let Some(p) = &g.proc {
        netns::kill(p, std::time::Duration::from_secs(3));
    }
    let _ = netns::addr(node, "del", &format!("{}/32", g.address), BRIDGE);
    let _ = std::fs::remove_file(token_path(dir, g));
}

/// Records the new wanted Gateways with their addresses (before anything is
/// made, as every sandbox step is recorded first); their keys.
pub fn plan_new(st: &mut State) -> Vec<String> {
    let new: Vec<(String, String)> = wanted(st)
        .iter()
        .filter(|g| !st.gateways.contains_key(&key(g.namespace(), g.name())))
        .map(|g| (g.namespace().to_string(), g.name().to_string()))
        .collect();
    let mut keys = Vec::new();
    for (namespace, name) in new {
        let k = key(&namespace, &name);
        let address = allocate_cluster_ip(&format!("gateway/{k}"), None, &taken(st));
        st.gateways.insert(
            k.clone(),
            GatewayState {
                service_account: object_name(&name),
                namespace,
                name,
                address,
                proc: None,
                ready: false,
            },
        );
        keys.push(k);
    }
    keys
}

/// The address on the node bridge and its token, for a gateway about to
/// start.
pub fn prepare(g: &GatewayState, node: &str, dir: &Dir) -> Result<(), crate::sandbox::Error> {
    let have = netns::run("ip", &["-n", node, "-4", "addr", "show", "dev", BRIDGE])?;
    if !have.contains(&format!("inet {}/32", g.address)) {
        netns::addr(node, "add", &format!("{}/32", g.address), BRIDGE)?;
    }
    // Listeners below 1024 are served as the proxy's uid, as the deployer
    // does with the same (namespaced) sysctl.
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            node,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_unprivileged_port_start=0",
        ],
    )?;
    crate::identity::issue_file(&token_path(dir, g))?;
    Ok(())
}

/// Starts a gateway's proxy in the node namespace, configured as the
/// deployer's Deployment configures it.
pub fn start(
    bins: &Bins,
    g: &GatewayState,
    node: &str,
    dir: &Dir,
) -> Result<crate::state::Proc, spawn::Error> {
    let program = bins.path(spawn::PROXY);
    let args = vec![
        "gateway".to_string(),
        format!("--gateway={}", key(&g.namespace, &g.name)),
        format!("--listen-ip={}", g.address),
        format!("--admin-addr={}", admin_addr(g)),
        "--worker-threads=1".to_string(),
    ];
    let envs = proxy_env(g, dir);
    Ok(netns::spawn(&Spawn {
        netns: node,
        role: "trellis-gateway",
        program: &program,
        args: &args,
        env: &envs,
        uid: Some(contract::PROXY_UID),
        log: &dir
            .logs()
            .join(format!("{}_{}_gateway.log", g.namespace, g.name)),
    })?)
}

/// The gateway proxy's environment, as the deployer's pod template sets it.
fn proxy_env(g: &GatewayState, dir: &Dir) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        out.insert(k.to_string(), v);
    };
    set(env::CONTROLLER_ADDR, spawn::controller_grpc().to_string());
    set(
        env::CONTROLLER_IDENTITY,
        spawn::controller_identity().to_string(),
    );
    set(env::IDENTITY_ADDR, spawn::identity_grpc().to_string());
    set(
        env::IDENTITY_TOKEN,
        token_path(dir, g).display().to_string(),
    );
    set(env::TRUST_BUNDLE, dir.trust_bundle().display().to_string());
    set(env::POD_NAMESPACE, g.namespace.clone());
    set(env::POD_NAME, format!("{}-0", g.service_account));
    set(env::POD_IP, g.address.to_string());
    set(env::SERVICE_ACCOUNT, g.service_account.clone());
    set(env::TRUST_DOMAIN, contract::DEFAULT_TRUST_DOMAIN.into());
    set(env::CLUSTER_DOMAIN, contract::DEFAULT_CLUSTER_DOMAIN.into());
    set(env::LOG, "info".into());
    out
}

/// Why a gateway proxy is not ready (None when it is): its process runs,
/// `/ready` answers 200 and every listener port of its Gateway is bound.
pub fn not_ready_reason(st: &State, g: &GatewayState, node: &str) -> Option<String> {
    let Some(p) = &g.proc else {
        return Some("not started".into());
    };
    if !netns::alive(p) {
        return Some(format!("exited (see {})", p.log.display()));
    }
    match probe::http_get(node, admin_addr(g), "/ready") {
        Ok((200, _)) => {}
        Ok((s, body)) => return Some(format!("/ready answered {s}: {}", body.trim())),
        Err(e) => return Some(format!("/ready: {e}")),
    }
    let gw = st
        .objects
        .iter()
        .find(|o| o.kind() == "Gateway" && o.namespace() == g.namespace && o.name() == g.name)?;
    let want = listener_ports(gw);
    let bound: BTreeSet<u16> = match probe::http_get(node, admin_addr(g), "/config") {
        Ok((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["ports"].as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()))
            .collect(),
        Ok((s, _)) => return Some(format!("/config answered {s}")),
        Err(e) => return Some(format!("/config: {e}")),
    };
    let missing: Vec<String> = want.difference(&bound).map(u16::to_string).collect();
    (!missing.is_empty()).then(|| format!("not listening on port {}", missing.join(", ")))
}

/// Where a gateway answers from inside the sandbox: `http://ADDRESS[:port]`
/// per listener port.
pub fn urls(st: &State, g: &GatewayState) -> Vec<String> {
    let Some(gw) = st
        .objects
        .iter()
        .find(|o| o.kind() == "Gateway" && o.namespace() == g.namespace && o.name() == g.name)
    else {
        return Vec::new();
    };
    listener_ports(gw)
        .into_iter()
        .map(|p| match p {
            80 => format!("http://{}", g.address),
            443 => format!("https://{}", g.address),
            p => format!("{}:{p}", g.address),
        })
        .collect()
}

/// A `kubernetes.io/tls` Secret with a new self-signed certificate for
/// `hosts` (what the upstream suite's `MustCreateSelfSignedCertSecret`
/// makes), and the certificate's PEM for clients to trust.
pub fn tls_secret(
    namespace: &str,
    name: &str,
    hosts: &[&str],
) -> Result<(Value, String), rcgen::Error> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        hosts.first().copied().unwrap_or(name),
    );
    let (cert, key) = (params.self_signed(&key)?.pem(), key.serialize_pem());
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"namespace": namespace, "name": name},
        "data": {"tls.crt": b64(&cert), "tls.key": b64(&key)},
    });
    Ok((secret, cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Object;

    fn state(objects: Vec<Value>) -> State {
        let mut st: State = serde_json::from_value(json!({
            "name": "t", "mesh_all": false, "bin_dir": "/x", "objects": [],
            "cluster_ips": {}, "pods": {}, "controller": null, "netns": []
        }))
        .unwrap();
        st.objects = objects.into_iter().map(Object).collect();
        st
    }

    fn gateway(ns: &str, name: &str, class: &str) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"gatewayClassName": class, "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS"},
                {"name": "udp", "port": 53, "protocol": "UDP"}]}})
    }

    fn class(name: &str, controller: &str) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": name}, "spec": {"controllerName": controller}})
    }

    #[test]
    fn gateways_of_trellis_classes_get_a_proxy_and_an_address() {
        let mut st = state(vec![
            gateway("edge", "web", "trellis"),
            gateway("edge", "theirs", "other"),
            gateway("edge", "named", "mine"),
            class("mine", contract::CONTROLLER_NAME),
            class("other", "example.com/other"),
        ]);
        st.cluster_ips
            .insert("edge/svc".into(), Ipv4Addr::new(198, 19, 0, 10));
        let names: Vec<&str> = wanted(&st).iter().map(|g| g.name()).collect();
        assert_eq!(names, ["web", "named"]);
        assert_eq!(
            implied_class(&st).unwrap()["spec"]["controllerName"],
            contract::CONTROLLER_NAME,
            "the chart's class is implied"
        );
        let keys = plan_new(&mut st);
        assert_eq!(keys, ["edge/web", "edge/named"]);
        let g = st.gateways["edge/web"].clone();
        assert_eq!(g.address.octets()[..2], [198, 19]);
        assert_eq!(g.service_account, "web-trellis");
        assert_ne!(g.address, st.gateways["edge/named"].address);
        assert!(!st.cluster_ips.values().any(|ip| *ip == g.address));
        assert!(plan_new(&mut st).is_empty(), "planned once");
        let gw = wanted(&st)[0].clone();
        assert_eq!(listener_ports(&gw), BTreeSet::from([80, 443]));
        assert!(with_status(&st, &gw)["status"].is_null(), "not ready yet");
        st.gateways.get_mut("edge/web").unwrap().ready = true;
        assert_eq!(
            with_status(&st, &gw)["status"]["addresses"][0]["value"],
            g.address.to_string()
        );
        let hosts = hosts_lines(&st, "edge");
        assert!(
            hosts.contains(&format!(
                "{}\tweb-trellis.edge.svc.cluster.local web-trellis.edge.svc web-trellis.edge web-trellis\n",
                g.address
            )),
            "{hosts}"
        );
        assert!(!hosts_lines(&st, "shop").contains(" web-trellis\n"));
    }

    #[test]
    fn tls_secrets_carry_a_certificate_for_their_hosts() {
        let (secret, cert) = tls_secret("infra", "tls", &["*", "*.org"]).unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(
            secret["data"]["tls.key"]
                .as_str()
                .is_some_and(|k| k.len() > 100)
        );
    }

    #[test]
    fn a_class_in_the_manifests_decides() {
        let st = state(vec![
            gateway("edge", "web", "trellis"),
            class("trellis", "example.com/other"),
        ]);
        assert!(wanted(&st).is_empty());
        assert!(implied_class(&st).is_none());
    }
}
