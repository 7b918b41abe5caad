use super::*;
use crate::manifest::{self, pods_of};
use crate::names::SandboxName;
use pretty_assertions::assert_eq;

const MESH: &str = include_str!("../../../third_party/gateway-api/conformance/mesh/manifests.yaml");

/// A state as a sandbox would hold it after wiring: pods with IPs in order.
fn state(text: &str, mesh_all: bool) -> State {
    let name = SandboxName::new("t").unwrap();
    let mut st = State::new(&name, mesh_all, "/bin".into());
    st.objects = manifest::parse(text, "test").unwrap();
    let mut taken = BTreeSet::new();
    for o in st.objects.iter().filter(|o| o.kind() == "Service") {
        let key = format!("{}/{}", o.namespace(), o.name());
        let ip = allocate_cluster_ip(&key, None, &taken);
        taken.insert(ip);
        st.cluster_ips.insert(key, ip);
    }
    let plans: Vec<_> = st
        .objects
        .iter()
        .flat_map(|o| pods_of(o).unwrap())
        .collect();
    for (i, plan) in plans.into_iter().enumerate() {
        let meshed = pod_meshed(&st, &plan);
        let pod = PodState {
            netns: name.pod_netns(&plan.namespace, &plan.name),
            meshed,
            container_id: "c".into(),
            uid: format!("uid-{i}"),
            ip: Some(Ipv4Addr::new(198, 18, 0, 2 + i as u8)),
            cni_result: None,
            procs: Vec::new(),
            ready: true,
            plan,
        };
        st.pods.insert(pod.key(), pod);
    }
    st
}

#[test]
fn cluster_ips_are_stable_in_range_and_unique() {
    let mut taken = BTreeSet::new();
    let a = allocate_cluster_ip("ns/a", None, &taken);
    assert_eq!(a, allocate_cluster_ip("ns/a", None, &taken));
    assert_eq!(a.octets()[..2], [198, 19]);
    taken.insert(a);
    let again = allocate_cluster_ip("ns/a", None, &taken);
    assert_ne!(again, a, "a taken address is skipped");
    assert_eq!(
        allocate_cluster_ip("ns/b", Some("198.19.7.7"), &BTreeSet::new()),
        Ipv4Addr::new(198, 19, 7, 7),
        "a requested address in range is honoured"
    );
    assert_ne!(
        allocate_cluster_ip("ns/b", Some("10.0.0.1"), &BTreeSet::new()).octets()[..2],
        [10, 0],
        "an address outside the Service range is not"
    );
}

#[test]
fn the_controller_sees_what_kubernetes_would_compute() {
    let st = state(MESH, true);
    let files = controller_files(&st);
    let echo = &files["service-gateway-conformance-mesh-echo.yaml"];
    let ip = st.cluster_ips["gateway-conformance-mesh/echo"];
    let echo: serde_json::Value = serde_saphyr::from_str(echo).unwrap();
    assert_eq!(echo["spec"]["clusterIP"], ip.to_string());
    let v1 = st
        .pods
        .values()
        .find(|p| p.plan.owner == "echo-v1" && p.plan.namespace == "gateway-conformance-mesh")
        .unwrap();
    let pod = &files[&format!("pod-gateway-conformance-mesh-{}.yaml", v1.plan.name)];
    let pod: serde_json::Value = serde_saphyr::from_str(pod).unwrap();
    assert_eq!(pod["status"]["podIP"], v1.ip.unwrap().to_string());
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        containers,
        vec!["echo", "trellis-proxy"],
        "meshed pods carry the sidecar container"
    );
    let slices: Vec<serde_json::Value> = files
        .iter()
        .filter(|(k, _)| {
            k.starts_with("endpointslice-gateway-conformance-mesh-echo-") && !k.contains("echo-v")
        })
        .map(|(_, v)| serde_saphyr::from_str(v).unwrap())
        .collect();
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(
        s["metadata"]["labels"]["kubernetes.io/service-name"],
        "echo"
    );
    assert_eq!(
        s["endpoints"].as_array().unwrap().len(),
        2,
        "echo-v1 and echo-v2"
    );
    let http = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap();
    assert_eq!(http["port"], 8080, "the resolved targetPort");
    assert_eq!(http["appProtocol"], "http");
    assert_eq!(s["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(s["endpoints"][0]["targetRef"]["kind"], "Pod");
    assert!(
        !files.keys().any(|k| k.starts_with("deployment-")),
        "Deployments become Pods"
    );
}

#[test]
fn unlabelled_namespaces_are_not_meshed_unless_asked() {
    let st = state(MESH, false);
    assert!(st.pods.values().all(|p| !p.meshed));
    let labelled = format!(
        "{}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: app, labels: {{trellis.io/inject: enabled}}}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: app}}\nspec: {{template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: x, command: [sleep]}}]}}}}}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: out, namespace: app}}\nspec: {{template: {{metadata: {{annotations: {{trellis.io/inject: disabled}}}}, spec: {{containers: [{{name: c, image: x, command: [sleep]}}]}}}}}}\n",
        ""
    );
    let st = state(&labelled, false);
    let meshed: Vec<(&str, bool)> = st
        .pods
        .values()
        .map(|p| (p.plan.owner.as_str(), p.meshed))
        .collect();
    assert_eq!(meshed, vec![("out", false), ("web", true)]);
}

#[test]
fn hosts_files_name_services_like_cluster_dns() {
    let st = state(MESH, true);
    let pod = st
        .pods
        .values()
        .find(|p| p.plan.namespace == "gateway-conformance-mesh")
        .unwrap();
    let hosts = hosts_file(&st, pod);
    let ip = st.cluster_ips["gateway-conformance-mesh/echo"];
    assert!(
        hosts.contains(&format!(
            "{ip}\techo.gateway-conformance-mesh.svc.cluster.local echo.gateway-conformance-mesh.svc echo.gateway-conformance-mesh echo\n"
        )),
        "{hosts}"
    );
    let consumer = st
        .pods
        .values()
        .find(|p| p.plan.namespace == "gateway-conformance-mesh-consumer")
        .unwrap();
    let hosts = hosts_file(&st, consumer);
    let v1 = st.cluster_ips["gateway-conformance-mesh/echo-v1"];
    assert!(
        hosts.contains(&format!("{v1}\techo-v1.gateway-conformance-mesh.svc.cluster.local echo-v1.gateway-conformance-mesh.svc echo-v1.gateway-conformance-mesh\n")),
        "no short name for another namespace's Service: {hosts}"
    );
}

#[test]
fn service_nat_spreads_over_ready_endpoints_and_refuses_empty_services() {
    let mut st = state(MESH, true);
    let ip = st.cluster_ips["gateway-conformance-mesh/echo"];
    let nat = service_nat(&st);
    let line = nat
        .lines()
        .find(|l| l.contains(&format!("ip daddr {ip} tcp dport 80 ")))
        .unwrap();
    assert!(line.contains("numgen random mod 2"), "{line}");
    assert!(line.contains(". 8080"), "{line}");
    for p in st.pods.values_mut() {
        p.ready = false;
    }
    let nat = service_nat(&st);
    assert!(
        nat.contains(&format!("ip daddr {ip} tcp dport 80 reject with tcp reset")),
        "{nat}"
    );
    assert!(
        nat.starts_with("table ip trellis_sandbox {}\ndelete table ip trellis_sandbox\n"),
        "replaced atomically"
    );
}

#[test]
fn the_cni_list_chains_trellis_after_the_reference_plugins() {
    let list = cni_conflist(std::path::Path::new("/run/trellis-sandbox/t"));
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["bridge", "trellis-cni"]);
    assert_eq!(list["plugins"][0]["ipMasq"], false);
    assert_eq!(list["plugins"][0]["isDefaultGateway"], false);
    assert_eq!(
        list["plugins"][0]["ipam"]["dataDir"],
        "/run/trellis-sandbox/t/ipam"
    );
}
