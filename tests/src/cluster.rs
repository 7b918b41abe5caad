//! What a Kubernetes control plane would compute, as pure functions of the
//! sandbox [`State`]: ClusterIPs, the objects the controller reads (Services
//! with `spec.clusterIP`, Pods with `status.podIP` and readiness,
//! EndpointSlices), each pod's `/etc/hosts`, and the Service NAT rules that do
//! kube-proxy's job for traffic the sidecars do not capture.

use crate::manifest::{Object, PodPlan, Service};
use crate::names::{self, BRIDGE};
use crate::state::{PodState, State};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use trellis_api::contract;

/// The pod network (host-local range) and its gateway on the node bridge.
pub const POD_CIDR: &str = "198.18.0.0/16";
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const POD_PREFIX: u8 = 16;
/// Service ClusterIPs.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The nftables table (in every pod namespace) doing kube-proxy's job.
pub const NAT_TABLE: &str = "trellis_sandbox";

/// A ClusterIP for `namespace/name`: the one the manifest asks for when it is
/// in the Service range, else a stable one derived from the name, skipping
/// addresses already taken.
pub fn allocate_cluster_ip(
    key: &str,
    requested: Option<&str>,
    taken: &BTreeSet<Ipv4Addr>,
) -> Ipv4Addr {
    if let Some(ip) = requested.and_then(|r| r.parse::<Ipv4Addr>().ok())
        && ip.octets()[..2] == [198, 19]
        && !taken.contains(&ip)
    {
        return ip;
    }
    let hash = names::short_hash(key, 8);
    let mut n = u32::from_str_radix(&hash, 16).unwrap_or(0) % 65_024 + 256;
    loop {
        let ip = Ipv4Addr::new(198, 19, (n >> 8) as u8, (n & 0xff) as u8);
        let last = ip.octets()[3];
        if last != 0 && last != 255 && !taken.contains(&ip) {
            return ip;
        }
        n = if n >= 65_279 { 256 } else { n + 1 };
    }
}

/// Whether pods of this namespace get a sidecar.
pub fn namespace_meshed(state: &State, namespace: &str) -> bool {
    state.mesh_all
        || state.objects.iter().any(|o| {
            o.kind() == "Namespace"
                && o.name() == namespace
                && o.labels().get(contract::key::INJECT).map(String::as_str)
                    == Some(contract::INJECT_ENABLED)
        })
}

/// Whether this pod gets a sidecar (its namespace is meshed and it did not
/// opt out).
pub fn pod_meshed(state: &State, plan: &PodPlan) -> bool {
    namespace_meshed(state, &plan.namespace)
        && plan
            .annotations
            .get(contract::key::INJECT)
            .map(String::as_str)
            != Some(contract::INJECT_DISABLED)
}

/// Every Service of the state with its ClusterIP.
pub fn services(state: &State) -> Vec<(Service, Option<Ipv4Addr>)> {
    state
        .objects
        .iter()
        .filter(|o| o.kind() == "Service")
        .filter_map(|o| Service::from_object(o).ok())
        .map(|s| {
            let ip = state
                .cluster_ips
                .get(&format!("{}/{}", s.namespace, s.name))
                .copied();
            (s, ip)
        })
        .collect()
}

/// The controller's directory: file name → YAML document.
pub fn controller_files(state: &State) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |obj: &Value| {
        let o = Object(obj.clone());
        let ns = if o.namespace().is_empty() {
            "_"
        } else {
            o.namespace()
        };
        let file = format!("{}-{ns}-{}.yaml", o.kind().to_lowercase(), o.name());
        let text = serde_saphyr::to_string(obj).unwrap_or_else(|_| obj.to_string());
        out.insert(file, text);
    };
    for obj in &state.objects {
        match obj.kind() {
            // Replaced by the pods they own, as the ReplicaSet controller would.
            "Deployment" | "Pod" => {}
            "Gateway" => put(&crate::gateway::with_status(state, obj)),
            "Service" => {
                let mut v = obj.0.clone();
                if let Some(ip) =
                    state
                        .cluster_ips
                        .get(&format!("{}/{}", obj.namespace(), obj.name()))
                {
                    v["spec"]["clusterIP"] = json!(ip.to_string());
                    v["spec"]["clusterIPs"] = json!([ip.to_string()]);
                }
                if v["spec"]["type"].is_null() {
                    v["spec"]["type"] = json!("ClusterIP");
                }
                put(&v);
            }
            _ => put(&obj.0),
        }
    }
    if let Some(class) = crate::gateway::implied_class(state) {
        put(&class);
    }
    for pod in state.pods.values() {
        put(&pod_object(state, pod));
    }
    for (svc, _) in services(state) {
        for slice in endpoint_slices(state, &svc) {
            put(&slice);
        }
    }
    out
}

/// The Pod object a kubelet would report.
pub fn pod_object(state: &State, pod: &PodState) -> Value {
    let plan = &pod.plan;
    let mut spec = plan.template["spec"].clone();
    if spec.is_null() {
        spec = json!({});
    }
    spec["serviceAccountName"] = json!(plan.service_account);
    spec["nodeName"] = json!(
        names::SandboxName::new(&state.name)
            .map(|n| n.node_netns())
            .unwrap_or_default()
    );
    let mut annotations = plan.annotations.clone();
    if pod.meshed {
        let proxy = json!({
            "name": contract::PROXY_CONTAINER_NAME,
            "image": "trellis-proxy",
            "args": ["sidecar"],
            "securityContext": {"runAsUser": contract::PROXY_UID},
        });
        match spec["containers"].as_array_mut() {
            Some(c) => c.push(proxy),
            None => spec["containers"] = json!([proxy]),
        }
        annotations.insert(contract::key::INJECTED.into(), "true".into());
    }
    let ready = if pod.ready { "True" } else { "False" };
    let mut metadata = json!({
        "name": plan.name,
        "namespace": plan.namespace,
        "uid": pod.uid,
        "labels": plan.labels,
        "annotations": annotations,
    });
    if !plan.owner.is_empty() {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": format!("{}-{}", plan.owner, plan.labels.get("pod-template-hash").cloned().unwrap_or_default()),
            "controller": true,
        }]);
    }
    let mut status = json!({
        "phase": if pod.ip.is_some() { "Running" } else { "Pending" },
        "hostIP": POD_GATEWAY.to_string(),
        "conditions": [
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
        ],
    });
    if let Some(ip) = pod.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// A resolved slice port: name, target port, appProtocol.
type SlicePort = (Option<String>, u16, Option<String>);

/// The EndpointSlices of a Service: one per distinct set of resolved target
/// ports (as Kubernetes does when a named port resolves differently).
pub fn endpoint_slices(state: &State, svc: &Service) -> Vec<Value> {
    if svc.selector.is_empty() {
        return Vec::new();
    }
    let mut groups: BTreeMap<Vec<SlicePort>, Vec<&PodState>> = BTreeMap::new();
    for pod in state.pods.values() {
        if pod.ip.is_none() || !svc.selects(&pod.plan) {
            continue;
        }
        let ports: Vec<_> = svc
            .ports
            .iter()
            .filter_map(|p| {
                pod.plan
                    .resolve_port(&p.target())
                    .map(|t| (p.name.clone(), t, p.app_protocol.clone()))
            })
            .collect();
        groups.entry(ports).or_default().push(pod);
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    groups
        .into_iter()
        .map(|(ports, pods)| {
            let seed = format!("{}/{}/{ports:?}", svc.namespace, svc.name);
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(name, port, app)| {
                    let mut p = json!({"port": port, "protocol": "TCP"});
                    if let Some(n) = name {
                        p["name"] = json!(n);
                    }
                    if let Some(a) = app {
                        p["appProtocol"] = json!(a);
                    }
                    p
                })
                .collect();
            let endpoints: Vec<Value> = pods
                .into_iter()
                .map(|pod| {
                    json!({
                        "addresses": [pod.ip.map(|ip| ip.to_string()).unwrap_or_default()],
                        "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": pod.plan.name, "namespace": pod.plan.namespace, "uid": pod.uid},
                    })
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{}", svc.name, names::k8s_suffix(&seed, 5)),
                    "namespace": svc.namespace,
                    "labels": {
                        "kubernetes.io/service-name": svc.name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    },
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc.name}],
                },
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints,
            })
        })
        .collect()
}

/// `/etc/netns/<netns>/hosts` of a pod: `svc`, `svc.ns`, `svc.ns.svc` and
/// `svc.ns.svc.cluster.local` for every Service with a ClusterIP (the short
/// name only for the pod's own namespace), and the same names of each
/// gateway's Service (`<gateway>-trellis`) as the deployer makes it.
pub fn hosts_file(state: &State, pod: &PodState) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(ip) = pod.ip {
        out.push_str(&format!("{ip}\t{}\n", pod.plan.name));
    }
    out.push_str(&format!("{POD_GATEWAY}\t{}\n", "trellis-node"));
    for (svc, ip) in services(state) {
        let Some(ip) = ip else { continue };
        let fqdn = format!(
            "{}.{}.svc.{}",
            svc.name,
            svc.namespace,
            contract::DEFAULT_CLUSTER_DOMAIN
        );
        let mut line = format!(
            "{ip}\t{fqdn} {n}.{ns}.svc {n}.{ns}",
            n = svc.name,
            ns = svc.namespace
        );
        if svc.namespace == pod.plan.namespace {
            line.push(' ');
            line.push_str(&svc.name);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&crate::gateway::hosts_lines(state, &pod.plan.namespace));
    out
}

/// The nftables script (one atomic transaction) that makes ClusterIPs work
/// for traffic the sidecar does not capture: unmeshed pods, and the proxy's
/// own connections. DNAT in the client's own namespace, so replies are
/// un-NATed there and nothing is masqueraded; a Service port with no ready
/// endpoint is refused with a reset, as kube-proxy does.
pub fn service_nat(state: &State) -> String {
    let mut nat = Vec::new();
    let mut reject = Vec::new();
    for (svc, ip) in services(state) {
        let Some(ip) = ip else { continue };
        for port in &svc.ports {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let targets: Vec<(Ipv4Addr, u16)> = state
                .pods
                .values()
                .filter(|p| p.ready && svc.selects(&p.plan))
                .filter_map(|p| Some((p.ip?, p.plan.resolve_port(&port.target())?)))
                .collect();
            let m = format!("ip daddr {ip} tcp dport {}", port.port);
            if targets.is_empty() {
                reject.push(format!("\t\t{m} reject with tcp reset\n"));
                continue;
            }
            let map: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, (ip, p))| format!("{i} : {ip} . {p}"))
                .collect();
            nat.push(format!(
                "\t\t{m} dnat ip addr . port to numgen random mod {} map {{ {} }}\n",
                targets.len(),
                map.join(", ")
            ));
        }
    }
    format!(
        "table ip {NAT_TABLE} {{}}\ndelete table ip {NAT_TABLE}\ntable ip {NAT_TABLE} {{\n\
         \tchain services {{\n\t\ttype nat hook output priority -99; policy accept;\n{}\t}}\n\
         \tchain no_endpoints {{\n\t\ttype filter hook output priority 0; policy accept;\n{}\t}}\n}}\n",
        nat.concat(),
        reject.concat()
    )
}

/// The CNI network configuration list for pods (the bridge is created by
/// the sandbox beforehand; `trellis-cni` is chained last, with the sandbox's
/// pod metadata directory).
pub fn cni_conflist(state_dir: &std::path::Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "trellis-sandbox",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY.to_string()}]],
                    "routes": [{"dst": SERVICE_CIDR, "gw": POD_GATEWAY.to_string()}],
                    "dataDir": state_dir.join("ipam").display().to_string(),
                },
            },
            crate::cni::trellis_plugin_config(state_dir),
        ],
    })
}

#[cfg(test)]
mod tests;
