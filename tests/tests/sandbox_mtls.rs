//! Tier 2: mesh identity in a sandbox, with the real identity service and
//! short-lived certificates (30 s, so renewals happen while the test
//! watches). One sandbox for every check of this file:
//!
//! 1. echo's JSON for a request from echo-v1's pod to echo-v2 carries
//!    `x-trellis-client-id: spiffe://cluster.local/ns/gateway-conformance-mesh/sa/<sa of echo-v1>`,
//!    whatever the app sent;
//! 2. a packet capture on echo-v2's pod link (tcpdump in the node namespace)
//!    shows TLS application-data records between the sidecars and no
//!    plaintext HTTP;
//! 3. under continuous HTTP and TCP load (each TCP connection a new mTLS
//!    handshake), the identity service is restarted and every sidecar renews
//!    its certificate past the expiry of the one it started with: no request
//!    fails.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use trellis_api::contract::{self, header::CLIENT_ID};
use trellis_sandbox::client::{self, Request};
use trellis_sandbox::state::{PodState, State};
use trellis_sandbox::{Options, Sandbox, metrics, netns, probe};

const NAME: &str = "it-mtls";
const NS: &str = "gateway-conformance-mesh";
const LIFETIME_SECS: u64 = 30;

#[test]
fn sidecars_speak_mtls_with_verified_identities_through_identity_restarts_and_renewals() {
    require_root();
    fresh(NAME);
    let mut opts = Options::new(NAME).unwrap();
    opts.mesh_all = true;
    opts.certificate_lifetime = Some(format!("{LIFETIME_SECS}s"));
    let (sb, st) = Sandbox::up(&opts, &[mesh_manifests()]).expect("sandbox up");
    let result = std::panic::catch_unwind(|| {
        let client = Sandbox::find_pod(&st, &format!("{NS}/echo-v1")).unwrap();
        let server = Sandbox::find_pod(&st, &format!("{NS}/echo-v2")).unwrap();
        the_app_learns_the_verified_caller(&client);
        the_pod_link_carries_only_tls(&sb, &client, &server);
        no_request_fails_through_restarts_and_renewals(&sb, &st, &client);
    });
    let problems = Sandbox::down(NAME).expect("sandbox down");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(problems.is_empty(), "{problems:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn get(host: &str, path: &str) -> Request {
    Request {
        host: host.into(),
        path: path.into(),
        method: "GET".into(),
        headers: Vec::new(),
    }
}

fn the_app_learns_the_verified_caller(client: &PodState) {
    let mut req = get("echo-v2", "/who");
    // An app cannot claim to be someone else.
    req.headers.push((
        CLIENT_ID.into(),
        "spiffe://cluster.local/ns/kube-system/sa/admin".into(),
    ));
    let rsp = runtime()
        .block_on(client::send(&client.netns, &req, Duration::from_secs(10)))
        .expect("echo-v1 → echo-v2");
    assert_eq!(rsp.status, 200);
    let echo = rsp.echo().expect("echo JSON");
    assert!(echo.pod.starts_with("echo-v2"), "{echo:?}");
    let want = format!(
        "spiffe://cluster.local/ns/{NS}/sa/{}",
        client.plan.service_account
    );
    assert_eq!(
        echo.header(CLIENT_ID),
        Some(&vec![want]),
        "echo's headers: {:?}",
        echo.headers
    );
}

/// The node-namespace end of a pod's `eth0` (a veth on the bridge).
fn pod_link(node: &str, pod: &PodState) -> String {
    let link = netns::run("ip", &["-n", &pod.netns, "-o", "link", "show", "eth0"]).unwrap();
    let peer = link
        .split_once("@if")
        .and_then(|(_, rest)| rest.split(':').next())
        .unwrap_or_else(|| panic!("no peer index in {link:?}"));
    let links = netns::run("ip", &["-n", node, "-o", "link"]).unwrap();
    links
        .lines()
        .find_map(|l| {
            let (index, rest) = l.split_once(": ")?;
            (index == peer).then(|| rest.split(['@', ':']).next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no link {peer} in {node}:\n{links}"))
}

/// The TCP segments of a pcap file: (source port, destination port, payload).
fn tcp_segments(pcap: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    assert!(pcap.len() >= 24, "not a pcap file");
    let magic = u32::from_le_bytes(pcap[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "unexpected pcap magic {magic:#x}"
    );
    let linktype = u32::from_le_bytes(pcap[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "Ethernet captures only");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if ip[9] != 6 || total < ihl + 20 {
            continue;
        }
        let tcp = &ip[ihl..total];
        let src = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dst = u16::from_be_bytes([tcp[2], tcp[3]]);
        let offset = usize::from(tcp[12] >> 4) * 4;
        if tcp.len() > offset {
            out.push((src, dst, tcp[offset..].to_vec()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn the_pod_link_carries_only_tls(sb: &Sandbox, client: &PodState, server: &PodState) {
    let node = sb.name.node_netns();
    let link = pod_link(&node, server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo-v2.pcap");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns", "exec", &node, "tcpdump", "-i", &link, "-n", "-s", "0",
        ])
        // Every packet handed over and written at once, so stopping the
        // capture right after the traffic loses none.
        .args(["--immediate-mode", "-U", "-Z", "root", "-w"])
        .arg(&file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (Debian package tcpdump) runs");
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "tcpdump exited before listening");
    }

    let marker = "/plaintext-would-show-this-marker";
    let rt = runtime();
    for host in ["echo-v2", "echo-v2:8080"] {
        let rsp = rt
            .block_on(client::send(
                &client.netns,
                &get(host, marker),
                Duration::from_secs(10),
            ))
            .expect("request during the capture");
        assert_eq!(rsp.status, 200);
        assert!(String::from_utf8_lossy(&rsp.body).contains(marker));
    }
    // And opaque TCP, a connection (and handshake) of its own.
    let echo_v2 = netns::resolve(&client.netns, "echo-v2").unwrap();
    let mut tcp = netns::connect_in(
        &client.netns,
        SocketAddr::from((echo_v2, 9090)),
        Duration::from_secs(5),
    )
    .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(marker.as_bytes()).unwrap();
    let mut back = vec![0u8; marker.len()];
    tcp.read_exact(&mut back).unwrap();
    assert_eq!(back, marker.as_bytes());
    drop(tcp);
    std::thread::sleep(Duration::from_millis(500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tcpdump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    tcpdump.wait().unwrap();

    let segments = tcp_segments(&std::fs::read(&file).unwrap());
    let mesh: Vec<&Vec<u8>> = segments
        .iter()
        .filter(|(s, d, _)| {
            *s == contract::port::PROXY_INBOUND || *d == contract::port::PROXY_INBOUND
        })
        .map(|(_, _, p)| p)
        .collect();
    let records = |content_type: u8| {
        mesh.iter()
            .filter(|p| p.len() > 5 && p[0] == content_type && p[1..3] == [3, 3])
            .count()
    };
    assert!(
        records(0x17) >= 2,
        "TLS application data between the sidecars ({} mesh segments)",
        mesh.len()
    );
    assert!(records(0x16) >= 1, "the TCP connection's handshake");
    for (src, dst, payload) in &segments {
        assert!(
            !contains(payload, marker.as_bytes()),
            "{src} → {dst} carries the request in plaintext"
        );
        // The admin port (probes) is plaintext by design and not mesh traffic.
        if *src != contract::port::PROXY_ADMIN && *dst != contract::port::PROXY_ADMIN {
            for http in [&b"HTTP/1.1"[..], b"PRI * HTTP/2.0"] {
                assert!(
                    !contains(payload, http),
                    "{src} → {dst} carries plaintext HTTP: {:?}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }
}

/// Every sidecar's samples of `name` (summed over labels matching `label`).
fn sidecar_value(node: &str, pod: &PodState, name: &str, label: Option<(&str, &str)>) -> f64 {
    let admin = SocketAddr::from((pod.ip.unwrap(), contract::port::PROXY_ADMIN));
    let (status, text) = probe::http_get(node, admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    metrics::parse(&text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Load from echo-v1's pod: HTTP to echo and echo-v2, and TCP echo
/// connections to echo-v2, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tcp_ok: Arc<AtomicUsize>,
    failures: Arc<Failures>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What failed during the load, in words.
#[derive(Default, Debug)]
struct Failures(std::sync::Mutex<Vec<String>>);

impl Failures {
    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Load {
    fn start(client: &PodState) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let tcp_ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Failures::default());
        let mut threads = Vec::new();
        for host in ["echo", "echo-v2"] {
            let (netns, stop, ok, failures) = (
                client.netns.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let rt = runtime();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let req = get(host, &format!("/load/{i}"));
                    match rt.block_on(client::send(&netns, &req, Duration::from_secs(10))) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failures.push(format!(
                            "{host}/load/{i}: status {} {:?}",
                            r.status,
                            r.header("x-trellis-proxy-error")
                        )),
                        Err(e) => failures.push(format!("{host}/load/{i}: {e}")),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        let echo_v2 = netns::resolve(&client.netns, "echo-v2").unwrap();
        let (netns, stop2, tcp_ok2, failures2) = (
            client.netns.clone(),
            stop.clone(),
            tcp_ok.clone(),
            failures.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                i += 1;
                let line = format!("tcp {i}\n");
                let r = (|| -> std::io::Result<()> {
                    let mut tcp = netns::connect_in(
                        &netns,
                        SocketAddr::from((echo_v2, 9090)),
                        Duration::from_secs(5),
                    )
                    .map_err(std::io::Error::other)?;
                    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
                    tcp.write_all(line.as_bytes())?;
                    let mut back = vec![0u8; line.len()];
                    tcp.read_exact(&mut back)?;
                    if back != line.as_bytes() {
                        return Err(std::io::Error::other("echoed something else"));
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => {
                        tcp_ok2.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures2.push(format!("tcp connection {i}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
        Self {
            stop,
            ok,
            tcp_ok,
            failures,
            threads,
        }
    }

    /// Stops the load: (HTTP successes, TCP successes, failures).
    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.tcp_ok.load(Ordering::SeqCst),
            self.failures.take(),
        )
    }
}

fn no_request_fails_through_restarts_and_renewals(sb: &Sandbox, st: &State, client: &PodState) {
    let node = sb.name.node_netns();
    let sidecars: Vec<&PodState> = st.pods.values().filter(|p| p.meshed).collect();
    assert_eq!(sidecars.len(), 3);
    const EXPIRY: &str = "trellis_identity_certificate_expiry_timestamp_seconds";
    const REQUESTS: &str = "trellis_identity_certificate_requests_total";
    // The latest expiry any sidecar started the load with.
    let first_expiry = sidecars
        .iter()
        .map(|p| sidecar_value(&node, p, EXPIRY, None))
        .fold(0.0, f64::max);
    assert!(
        first_expiry > unix_now(),
        "every sidecar holds a certificate"
    );

    let load = Load::start(client);
    std::thread::sleep(Duration::from_secs(2));
    sb.restart_identity(Duration::from_secs(30))
        .expect("identity restarts from its state directory");
    let issued_before: Vec<f64> = sidecars
        .iter()
        .map(|p| sidecar_value(&node, p, REQUESTS, Some(("result", "ok"))))
        .collect();

    // Each sidecar renews from the restarted service, and the load runs
    // past the expiry of every certificate it started with.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * LIFETIME_SECS);
    loop {
        let renewed = sidecars.iter().zip(&issued_before).all(|(p, before)| {
            sidecar_value(&node, p, REQUESTS, Some(("result", "ok"))) > *before
                && sidecar_value(&node, p, EXPIRY, None) > first_expiry
        });
        if renewed && unix_now() > first_expiry + 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sidecars did not renew within {} s",
            3 * LIFETIME_SECS
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, tcp_ok, failures) = load.finish();
    eprintln!(
        "load: {ok} HTTP requests and {tcp_ok} TCP connections through an identity restart and a renewal of every sidecar's certificate; {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(
        ok >= 100 && tcp_ok >= 50,
        "too little load: {ok} HTTP, {tcp_ok} TCP"
    );
    let server = Sandbox::find_pod(st, &format!("{NS}/echo-v2")).unwrap();
    let handshakes = sidecar_value(
        &node,
        &server,
        "trellis_tls_handshakes_total",
        Some(("outcome", "ok")),
    );
    assert!(
        handshakes >= tcp_ok as f64,
        "each TCP connection was a handshake with echo-v2's sidecar: {handshakes} < {tcp_ok}"
    );
}
