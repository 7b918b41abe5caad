//! Tier 2: the upstream mesh manifests in a meshed sandbox, driven through
//! `trellisctl` exactly as the sandbox contract says: `up` prints pods with
//! IPs and netns names; curl from an echo-v1 pod to `http://echo/` gets the
//! echo's JSON through both sidecars; the capture rules are visible with
//! `iptables-save`; `down` leaves no namespace, interface, process or file.

mod common;

use common::*;
use trellis_sandbox::{Sandbox, metrics, netns, probe};

const NAME: &str = "it-mesh";

#[test]
fn a_meshed_sandbox_serves_echo_through_the_sidecars_and_leaves_nothing_behind() {
    require_root();
    fresh(NAME);
    let links_before = host_links();
    let manifests = mesh_manifests();
    let (code, out, err) = ctl(&[
        "sandbox",
        "up",
        "--name",
        NAME,
        "--mesh-all",
        "-f",
        manifests.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "sandbox up failed:\n{out}\n{err}");
    assert!(out.contains("NETNS"), "{out}");

    let st = Sandbox::open(NAME).unwrap().state().unwrap();
    let client = Sandbox::find_pod(&st, "gateway-conformance-mesh/echo-v1").unwrap();
    assert!(
        out.contains(&client.netns),
        "up prints the netns names:\n{out}"
    );
    assert!(
        out.contains(&client.ip.unwrap().to_string()),
        "up prints the pod IPs:\n{out}"
    );
    assert_eq!(st.pods.len(), 3);
    assert!(st.pods.values().all(|p| p.meshed && p.ready));

    // Plain `ip netns exec` with the contract's namespace name.
    let curl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &client.netns,
            "curl",
            "-s",
            "-m",
            "10",
            "http://echo/",
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&curl.stdout);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| {
        panic!(
            "not echo JSON ({e}): {body:?} {}",
            String::from_utf8_lossy(&curl.stderr)
        )
    });
    assert!(
        echo["pod"].as_str().unwrap().starts_with("echo-v"),
        "{echo}"
    );
    assert_eq!(echo["namespace"], "gateway-conformance-mesh");

    // `sandbox exec` with a Deployment name picks its first replica.
    let (code, out, err) = ctl(&[
        "sandbox",
        "exec",
        "--name",
        NAME,
        "gateway-conformance-mesh/echo-v1",
        "--",
        "curl",
        "-s",
        "-m",
        "10",
        "http://echo-v2.gateway-conformance-mesh.svc.cluster.local/",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("echo-v2"), "{out}");

    // Capture rules are there, as an operator would look at them.
    let rules = netns::run(
        "ip",
        &["netns", "exec", &client.netns, "iptables-save", "-t", "nat"],
    )
    .unwrap();
    assert!(
        rules.contains("TRELLIS_OUTPUT") && rules.contains("--to-ports 15101"),
        "{rules}"
    );
    assert!(
        rules.contains("TRELLIS_INBOUND") && rules.contains("--to-ports 15106"),
        "{rules}"
    );

    // The request went through the client's sidecar: it counted it.
    let admin =
        std::net::SocketAddr::from((client.ip.unwrap(), trellis_api::contract::port::PROXY_ADMIN));
    let (status, text) = probe::http_get(&st.netns[0], admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let outbound: f64 = metrics::parse(&text)
        .iter()
        .filter(|s| {
            s.name == "trellis_requests_total"
                && s.labels.get("direction").map(String::as_str) == Some("outbound")
        })
        .map(|s| s.value)
        .sum();
    assert!(
        outbound >= 2.0,
        "the client sidecar saw {outbound} outbound requests:\n{text}"
    );

    // status works from another process.
    let (code, out, _) = ctl(&["sandbox", "status", "--name", NAME]);
    assert_eq!(code, 0);
    assert!(out.contains(&client.plan.name), "{out}");

    let pids: Vec<i32> = st
        .pods
        .values()
        .flat_map(|p| p.procs.iter().map(|p| p.pid))
        .chain(st.controller.iter().map(|c| c.pid))
        .collect();
    let (code, out, err) = ctl(&["sandbox", "down", "--name", NAME]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(namespaces(&format!("trl-{NAME}-")), Vec::<String>::new());
    assert_eq!(
        host_links(),
        links_before,
        "no interface left in the host namespace"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "process {pid} survived down"
        );
    }
    assert!(
        !std::path::Path::new("/run/trellis-sandbox")
            .join(NAME)
            .exists()
    );
    assert!(
        !std::path::Path::new("/etc/netns")
            .join(&client.netns)
            .exists()
    );
}
