//! Tier 2: real network namespaces, real iptables REDIRECT rules (the plan of
//! `trellis-capture`), the real `trellis-proxy` binary running as uid 2102,
//! and an unmodified `curl`:
//!
//! ```text
//!  client ns                                   server ns
//!  curl 198.19.0.10:80 ─► OUTPUT REDIRECT ─► proxy :15101
//!        ─► (meshed endpoint) ─► 198.18.0.1:15106 ─────────► proxy :15106 ─► app 198.18.0.1:8080
//!  curl 198.18.0.1:8080 ─► OUTPUT REDIRECT ─► proxy :15101 ─► (no policy: original destination)
//!        ─► 198.18.0.1:8080 ──────────► PREROUTING REDIRECT ─► proxy :15106 ─► app
//! ```
//!
//! Needs root (CI runs as root); fails loudly otherwise. Namespace names
//! carry the process id so parallel runs never collide, and a guard removes
//! them (and stops the proxies) even when an assertion fails.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};
use trellis_api::contract::PROXY_UID;
use trellis_capture::{Backend, CaptureConfig, Families};
use trellis_policy::{Target, build::service};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

fn require_root() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "this test needs root to create network namespaces and iptables rules (CI runs as root)"
    );
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Pods {
    client: String,
    server: String,
    proxies: Vec<Child>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for p in &mut self.proxies {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const CLIENT_IP: &str = "198.18.0.2";
const SERVER_IP: &str = "198.18.0.1";
const CLUSTER_IP: &str = "198.19.0.10:80";

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/var/run/netns").join(ns)
}

fn pods() -> Pods {
    let id = std::process::id();
    let pods = Pods {
        client: format!("trls-{id}-c"),
        server: format!("trls-{id}-s"),
        proxies: Vec::new(),
    };
    let (vc, vs) = (format!("tc{id:x}"), format!("ts{id:x}"));
    ip(&["netns", "add", &pods.client]);
    ip(&["netns", "add", &pods.server]);
    ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vs]);
    ip(&["link", "set", &vc, "netns", &pods.client]);
    ip(&["link", "set", &vs, "netns", &pods.server]);
    for (ns, dev, addr) in [
        (&pods.client, &vc, CLIENT_IP),
        (&pods.server, &vs, SERVER_IP),
    ] {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // Service ClusterIPs route out of the pod, as kube-proxy would expect.
    ip(&[
        "-n",
        &pods.client,
        "route",
        "add",
        "198.19.0.0/16",
        "dev",
        &vc,
    ]);
    for ns in [&pods.client, &pods.server] {
        let plan = trellis_capture::plan(&CaptureConfig::default().families(Families::IPV4));
        trellis_capture::netns::run_in(&netns_path(ns), || {
            trellis_capture::apply(&plan, Backend::Iptables)
        })
        .unwrap()
        .unwrap();
    }
    pods
}

/// Starts `trellis-proxy sidecar` in `ns` as the proxy's uid.
fn start_proxy(pods: &mut Pods, ns: &str, policy: &Path) {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv"])
        .arg(format!("--reuid={PROXY_UID}"))
        .arg(format!("--regid={PROXY_UID}"))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_trellis-proxy"))
        .args(["sidecar", "--policy-file"])
        .arg(policy)
        .env("TRELLIS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting trellis-proxy");
    pods.proxies.push(child);
}

fn curl(ns: &str, url: &str) -> String {
    run(Command::new("ip").args(["netns", "exec", ns, "curl", "-sS", "--max-time", "10", url]))
}

fn wait_ready(ns: &str) {
    for _ in 0..100 {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-sf",
                "--max-time",
                "1",
                "http://127.0.0.1:15190/ready",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the proxy in {ns} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_a_server_through_outbound_and_inbound_capture() {
    require_root();
    let mut pods = pods();

    // The application of the server pod, listening on its pod IP only.
    let listener = trellis_capture::netns::run_in(&netns_path(&pods.server), || {
        std::net::TcpListener::bind((SERVER_IP, 8080))
    })
    .unwrap()
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    support::serve_http(tokio::net::TcpListener::from_std(listener).unwrap(), "app");

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let target = Target(CLUSTER_IP.parse().unwrap());
    let client_policy = trellis_proxy::discovery::file::PolicyFile {
        outbound: vec![support::outbound(
            target,
            service("shop", "web", 80).meshed_endpoint(&format!("{SERVER_IP}:8080"), "shop", "web"),
        )],
        inbound: vec![],
    };
    let client_file = dir.path().join("client.yaml");
    let server_file = dir.path().join("server.yaml");
    std::fs::write(
        &client_file,
        serde_saphyr::to_string(&client_policy).unwrap(),
    )
    .unwrap();
    std::fs::write(&server_file, "outbound: []\n").unwrap();
    for f in [&client_file, &server_file] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let (client, server) = (pods.client.clone(), pods.server.clone());
    start_proxy(&mut pods, &server, &server_file);
    start_proxy(&mut pods, &client, &client_file);
    tokio::task::spawn_blocking(move || {
        wait_ready(&server);
        wait_ready(&client);
        // Through the Service: captured outbound, carried over the mesh.
        let body = curl(&client, &format!("http://{CLUSTER_IP}/hello"));
        assert_eq!(body, "app GET /hello HTTP/1.1 host=198.19.0.10");
        // Straight to the pod: captured outbound, then captured inbound.
        let body = curl(&client, &format!("http://{SERVER_IP}:8080/direct"));
        assert_eq!(body, format!("app GET /direct HTTP/1.1 host={SERVER_IP}:8080"));
        // The server proxy saw both: one over the mesh, one redirected.
        let metrics = curl(&server, "http://127.0.0.1:15190/metrics");
        assert!(
            metrics.contains(r#"trellis_requests_total{direction="inbound",service="8080",route="",backend="8080",status="200"} 2"#),
            "{metrics}"
        );
    })
    .await
    .unwrap();

    // SIGTERM drains and exits 0.
    for p in &mut pods.proxies {
        run(Command::new("kill").args(["-TERM", &p.id().to_string()]));
        let status = p.wait().unwrap();
        assert!(
            status.success(),
            "the proxy exits 0 after SIGTERM: {status}"
        );
    }
}
