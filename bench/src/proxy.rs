//! `trellis-bench proxy`: direct, one proxy, two proxies (client sidecar →
//! server sidecar over the mesh transport) and nginx as a reverse proxy,
//! side by side in one run on this machine.
//!
//! ```text
//!  core 1: oha ──► [core 0: nothing | proxy | client proxy ─► server proxy | nginx] ──► upstream (core 1)
//! ```
//!
//! The proxies run from `--policy-file` with fixed-target listeners (no
//! iptables needed), one worker thread each, pinned to core 0 with
//! `taskset`; the load generator and the upstream share core 1. CPU comes
//! from `/proc/PID/stat`, memory from `/proc/PID/status`.

use crate::{
    oha::{self, Load, Outcome},
    procs::{self, Proc},
    upstream::BODY_SIZE,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::{net::SocketAddr, path::Path, time::Duration};
use trellis_policy::{
    Backend, Endpoint, OutboundPolicy, Protocol, ResourceRef, ServiceBackend, SpiffeId, Target,
};

const UPSTREAM: &str = "127.0.0.1:18080";
const ONE_PROXY: &str = "127.0.0.2:18101";
const TWO_PROXIES: &str = "127.0.0.3:18102";
const NGINX: &str = "127.0.0.4:18103";
const MESH_PORT: u16 = 25106;
const SERVICE: &str = "198.19.0.1:80";
const PROXY_CORE: usize = 0;
const LOAD_CORE: usize = 1;

#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub nginx: bool,
    pub json: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Direct,
    OneProxy,
    TwoProxies,
    Nginx,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::OneProxy => "one proxy",
            Mode::TwoProxies => "two proxies",
            Mode::Nginx => "nginx",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            Mode::Direct => UPSTREAM,
            Mode::OneProxy => ONE_PROXY,
            Mode::TwoProxies => TWO_PROXIES,
            Mode::Nginx => NGINX,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Scenario {
    name: &'static str,
    rate: Option<u32>,
    connections: u32,
    grpc: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "http1 1000 rps",
        rate: Some(1000),
        connections: 8,
        grpc: false,
    },
    Scenario {
        name: "http1 2000 rps",
        rate: Some(2000),
        connections: 8,
        grpc: false,
    },
    Scenario {
        name: "http1 5000 rps",
        rate: Some(5000),
        connections: 16,
        grpc: false,
    },
    Scenario {
        name: "http1 max",
        rate: None,
        connections: 32,
        grpc: false,
    },
    Scenario {
        name: "grpc 1000 rps",
        rate: Some(1000),
        connections: 2,
        grpc: true,
    },
];

/// One measurement.
#[derive(Clone, Debug, Serialize)]
struct Measured {
    mode: Mode,
    scenario: &'static str,
    #[serde(flatten)]
    outcome: Outcome,
    /// Cores the measured processes (the proxies; the upstream for direct)
    /// used on average, per process.
    cores_per_process: f64,
    /// CPU per 1,000 rps, per process.
    cpu_per_1000_rps: f64,
    /// Resident memory at the end of the run, per process (the largest).
    rss_kib: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    duration_s: u64,
    body_bytes: usize,
    idle_rss_kib: Vec<(Mode, u64)>,
    runs: Vec<Measured>,
}

pub fn run(tools: &crate::setup::Tools, opts: &Options) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let grpc_body = dir.path().join("grpc.bin");
    let mut msg = vec![0u8, 0, 0, 4, 0];
    msg.extend(std::iter::repeat_n(b'q', BODY_SIZE));
    std::fs::write(&grpc_body, msg)?;

    let me = std::env::current_exe().context("locating trellis-bench")?;
    let upstream = Proc::spawn(
        "upstream",
        Some(LOAD_CORE),
        &me.to_string_lossy(),
        &["upstream".into(), "--addr".into(), UPSTREAM.into()],
    )?;
    procs::wait_for(addr(UPSTREAM), "the upstream")?;

    let mut modes = vec![Mode::Direct, Mode::OneProxy, Mode::TwoProxies];
    if opts.nginx {
        modes.push(Mode::Nginx);
    }
    let mut report = Report {
        duration_s: opts.duration.as_secs(),
        body_bytes: BODY_SIZE,
        idle_rss_kib: Vec::new(),
        runs: Vec::new(),
    };
    for mode in modes {
        let measured = start(mode, tools, dir.path())?;
        let watched: Vec<&Proc> = if measured.is_empty() {
            vec![&upstream]
        } else {
            measured.iter().collect()
        };
        std::thread::sleep(Duration::from_millis(300));
        let idle = watched
            .iter()
            .map(|p| p.rss_kib())
            .collect::<Result<Vec<_>>>()?;
        report
            .idle_rss_kib
            .push((mode, idle.into_iter().max().unwrap_or(0)));
        for s in SCENARIOS {
            if s.grpc && mode == Mode::Nginx {
                continue;
            }
            let load = Load {
                url: format!("http://{}/", mode.entry()),
                rate: s.rate,
                connections: s.connections,
                duration: opts.duration,
                grpc_body: s.grpc.then(|| grpc_body.clone()),
            };
            // Warm connections and pools before measuring.
            oha::run(
                &tools.oha,
                Some(LOAD_CORE),
                &Load {
                    duration: Duration::from_secs(1),
                    ..load.clone()
                },
            )?;
            let (cpu, outcome) =
                procs::measure_cpu(&watched, || oha::run(&tools.oha, Some(LOAD_CORE), &load))?;
            let rss = watched
                .iter()
                .map(|p| p.rss_kib())
                .collect::<Result<Vec<_>>>()?;
            let n = watched.len() as f64;
            let cores = cpu / opts.duration.as_secs_f64() / n;
            let m = Measured {
                mode,
                scenario: s.name,
                outcome,
                cores_per_process: cores,
                cpu_per_1000_rps: if outcome.rps > 0.0 {
                    cores / (outcome.rps / 1000.0)
                } else {
                    f64::NAN
                },
                rss_kib: rss.into_iter().max().unwrap_or(0),
            };
            eprintln!(
                "bench: {:<11} {:<15} {:>9.0} rps  p99 {:>7.3} ms  {:.3} cores  failed {}",
                mode.name(),
                s.name,
                m.outcome.rps,
                m.outcome.p99_ms,
                m.cores_per_process,
                m.outcome.failed
            );
            report.runs.push(m);
        }
        drop(measured);
    }
    drop(upstream);
    print(&report);
    if let Some(parent) = opts.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&opts.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", opts.json.display()))?;
    println!("\nJSON: {}", opts.json.display());
    Ok(())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

/// Starts what a mode measures (nothing for direct).
fn start(mode: Mode, tools: &crate::setup::Tools, dir: &Path) -> Result<Vec<Proc>> {
    let proxy = tools.proxy.to_string_lossy().into_owned();
    let common = |pod: &str| -> Vec<String> {
        vec![
            "sidecar".into(),
            "--worker-threads".into(),
            "1".into(),
            "--outbound-addr".into(),
            format!("{pod}:0"),
            "--admin-addr".into(),
            format!("{pod}:0"),
        ]
    };
    match mode {
        Mode::Direct => Ok(Vec::new()),
        Mode::OneProxy => {
            let file = policy_file(dir, "one.yaml", None)?;
            let mut args = common("127.0.0.2");
            args.extend(["--inbound-addr".into(), "127.0.0.2:0".into()]);
            args.extend([
                "--policy-file".into(),
                file,
                "--outbound-fixed".into(),
                format!("{ONE_PROXY}={SERVICE}"),
            ]);
            let p = Proc::spawn("proxy", Some(PROXY_CORE), &proxy, &args)?;
            procs::wait_for(addr(ONE_PROXY), "the proxy")?;
            Ok(vec![p])
        }
        Mode::TwoProxies => {
            let id = SpiffeId::for_service_account("cluster.local", "bench", "upstream");
            let client_file = policy_file(dir, "client.yaml", Some(id))?;
            let server_file = dir.join("server.yaml");
            std::fs::write(&server_file, "outbound: []\n")?;
            let mut server = common("127.0.0.1");
            server.extend([
                "--inbound-addr".into(),
                format!("127.0.0.1:{MESH_PORT}"),
                "--policy-file".into(),
                server_file.to_string_lossy().into_owned(),
            ]);
            let server = Proc::spawn("server proxy", Some(PROXY_CORE), &proxy, &server)?;
            let mut client = common("127.0.0.3");
            client.extend([
                "--inbound-addr".into(),
                "127.0.0.3:0".into(),
                "--mesh-port".into(),
                MESH_PORT.to_string(),
                "--policy-file".into(),
                client_file,
                "--outbound-fixed".into(),
                format!("{TWO_PROXIES}={SERVICE}"),
            ]);
            let client = Proc::spawn("client proxy", Some(PROXY_CORE), &proxy, &client)?;
            procs::wait_for(
                SocketAddr::from(([127, 0, 0, 1], MESH_PORT)),
                "the server proxy",
            )?;
            procs::wait_for(addr(TWO_PROXIES), "the client proxy")?;
            Ok(vec![client, server])
        }
        Mode::Nginx => {
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {pid};\nerror_log {err} warn;\n\
                     events {{ worker_connections 4096; }}\n\
                     http {{\n  access_log off;\n  upstream u {{ server {UPSTREAM}; keepalive 64; }}\n\
                       server {{\n    listen {NGINX};\n    location / {{\n      proxy_pass http://u;\n\
                           proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
                    pid = dir.join("nginx.pid").display(),
                    err = dir.join("nginx.err").display(),
                ),
            )?;
            let p = Proc::spawn(
                "nginx",
                Some(PROXY_CORE),
                &tools.nginx.to_string_lossy(),
                &[
                    "-e".into(),
                    dir.join("nginx.err").to_string_lossy().into_owned(),
                    "-c".into(),
                    conf.to_string_lossy().into_owned(),
                ],
            )?;
            procs::wait_for(addr(NGINX), "nginx")?;
            Ok(vec![p])
        }
    }
}

/// A policy file whose Service has the upstream as its one endpoint,
/// meshed when `identity` is given.
fn policy_file(dir: &Path, name: &str, identity: Option<SpiffeId>) -> Result<String> {
    #[derive(Serialize)]
    struct File {
        outbound: Vec<OutboundPolicy>,
    }
    let service = ResourceRef::new("bench", "upstream");
    let policy = OutboundPolicy {
        target: Target(addr(SERVICE)),
        service: service.clone(),
        port: 80,
        port_name: None,
        protocol: Protocol::Detect,
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        tcp_routes: Vec::new(),
        tls_routes: Vec::new(),
        backend: Backend::Service(ServiceBackend {
            service,
            port: 80,
            authority: "upstream.bench.svc.cluster.local:80".into(),
            protocol: Protocol::Detect,
            endpoints: vec![Endpoint {
                addr: addr(UPSTREAM),
                identity,
                pod: None,
                zone: None,
            }],
            retry_budget: None,
        }),
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_saphyr::to_string(&File {
            outbound: vec![policy],
        })?,
    )?;
    Ok(path.to_string_lossy().into_owned())
}

fn find<'a>(report: &'a Report, mode: Mode, scenario: &str) -> Option<&'a Measured> {
    report
        .runs
        .iter()
        .find(|m| m.mode == mode && m.scenario == scenario)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Prints the table: each figure with its ratio to direct.
fn print(report: &Report) {
    println!(
        "\nTrellis proxy benchmark: {} s per run, {} B bodies, proxies pinned to core {PROXY_CORE}, load and upstream on core {LOAD_CORE}",
        report.duration_s, report.body_bytes
    );
    println!(
        "Latency: added = mode - direct (ms); ratio = mode / direct. CPU and RSS are per proxy process; for direct, the upstream's own."
    );
    for s in SCENARIOS {
        println!("\n== {} ==", s.name);
        println!(
            "{:<12} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>9} {:>7}",
            "mode",
            "rps",
            "ratio",
            "p50",
            "+p50",
            "p99",
            "+p99",
            "p99.9",
            "+p99.9",
            "p99 ratio",
            "core/1k rps",
            "RSS KiB",
            "failed"
        );
        let Some(direct) = find(report, Mode::Direct, s.name) else {
            continue;
        };
        for m in report.runs.iter().filter(|m| m.scenario == s.name) {
            let o = &m.outcome;
            let d = &direct.outcome;
            println!(
                "{:<12} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10} {:>12.4} {:>9} {:>7}",
                m.mode.name(),
                o.rps,
                ratio(o.rps, d.rps),
                o.p50_ms,
                o.p50_ms - d.p50_ms,
                o.p99_ms,
                o.p99_ms - d.p99_ms,
                o.p999_ms,
                o.p999_ms - d.p999_ms,
                ratio(o.p99_ms, d.p99_ms),
                m.cpu_per_1000_rps,
                m.rss_kib,
                o.failed,
            );
        }
        if s.rate.is_none() {
            for m in report
                .runs
                .iter()
                .filter(|m| m.scenario == s.name && m.mode != Mode::Direct)
            {
                let per_core = m.outcome.rps / m.cores_per_process.max(1e-9);
                println!(
                    "  {}: {:.0} rps per proxy core ({:.2} cores used per process; direct upstream ratio {})",
                    m.mode.name(),
                    per_core,
                    m.cores_per_process,
                    ratio(
                        per_core,
                        direct.outcome.rps / direct.cores_per_process.max(1e-9)
                    ),
                );
            }
        }
    }
    let direct_idle = report
        .idle_rss_kib
        .iter()
        .find(|(m, _)| *m == Mode::Direct)
        .map_or(0, |(_, r)| *r);
    println!("\nIdle RSS (KiB, per process; ratio to the direct upstream's):");
    for (mode, rss) in &report.idle_rss_kib {
        println!(
            "  {:<12} {:>8} {:>8}",
            mode.name(),
            rss,
            ratio(*rss as f64, direct_idle as f64)
        );
    }
}
