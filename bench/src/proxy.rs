//! `trellis-bench proxy`: direct, one proxy, two proxies (client sidecar →
//! server sidecar over the mesh transport, plaintext and mTLS) and nginx as
//! a reverse proxy, side by side in one run on this machine.
//!
//! ```text
//!  core 1: load generator + upstream ──► core 0: [proxy | client ─► server sidecars | nginx] ──► upstream
//! ```
//!
//! Everything measured starts once and stays up; the proxies run one
//! worker thread each, pinned to core 0 with `taskset`, and the load
//! generator and the upstream share core 1 (`fleet`). Fixed-rate latency
//! runs in interleaved rounds (every mode once per round, the order
//! rotating), so drift in the machine's other load falls on every mode
//! alike; "added" latency is the median over rounds of (mode − direct) of
//! the same round. CPU and memory are read from `/proc` over the steady
//! window only: from one second after the load started to one second before
//! it stops, while connections are up.

use crate::{
    fleet::{self, LOAD_CORE, Mode, Started, Wrap},
    oha::{self, Load, Outcome},
    procs::{self, Proc},
    report::{self, Measured, Report},
    setup::Tools,
    upstream::BODY_SIZE,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    /// Rounds of the fixed-rate latency scenarios.
    pub rounds: u32,
    pub nginx: bool,
    pub json: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub rate: Option<u32>,
    pub connections: u32,
    pub grpc: bool,
    /// Run in interleaved rounds (latency figures).
    pub rounds: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "http1 1000 rps",
        rate: Some(1000),
        connections: 8,
        grpc: false,
        rounds: true,
    },
    Scenario {
        name: "http1 2000 rps",
        rate: Some(2000),
        connections: 8,
        grpc: false,
        rounds: false,
    },
    Scenario {
        name: "http1 5000 rps",
        rate: Some(5000),
        connections: 16,
        grpc: false,
        rounds: false,
    },
    Scenario {
        name: "http1 max",
        rate: None,
        connections: 32,
        grpc: false,
        rounds: false,
    },
    Scenario {
        name: "grpc 1000 rps",
        rate: Some(1000),
        connections: 2,
        grpc: true,
        rounds: true,
    },
];

pub fn run(tools: &Tools, opts: &Options) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let grpc_body = dir.path().join("grpc.bin");
    let mut msg = vec![0u8, 0, 0, 4, 0];
    msg.extend(std::iter::repeat_n(b'q', BODY_SIZE));
    std::fs::write(&grpc_body, msg)?;

    let upstream = fleet::upstream()?;

    let mut modes = vec![
        Mode::Direct,
        Mode::OneProxy,
        Mode::TwoProxies,
        Mode::TwoProxiesMtls,
    ];
    if opts.nginx {
        modes.push(Mode::Nginx);
    }
    let identity = fleet::identity(tools, dir.path())?;
    let mut fleet = Vec::new();
    for &mode in &modes {
        fleet.push(fleet::start(
            mode,
            tools,
            dir.path(),
            Some(&identity),
            &Wrap::default(),
        )?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut report = Report {
        duration_s: opts.duration.as_secs(),
        rounds: opts.rounds,
        body_bytes: BODY_SIZE,
        idle_rss_kib: Vec::new(),
        runs: Vec::new(),
    };
    for s in &fleet {
        let procs = watched(s, &upstream);
        let idle = procs
            .iter()
            .map(|p| p.rss_kib())
            .collect::<Result<Vec<_>>>()?;
        report
            .idle_rss_kib
            .push((s.mode, idle.into_iter().max().unwrap_or_default()));
    }
    for scenario in SCENARIOS {
        let rounds = if scenario.rounds {
            opts.rounds.max(1)
        } else {
            1
        };
        for round in 0..rounds {
            for i in 0..fleet.len() {
                // Rotate the order so no mode always follows the same one.
                let started = &fleet[(i + round as usize) % fleet.len()];
                if scenario.grpc && started.mode == Mode::Nginx {
                    continue;
                }
                let m = measure(tools, opts, scenario, round, started, &upstream, &grpc_body)?;
                eprintln!(
                    "bench: {:<12} {:<15} round {round}: {:>9.0} rps  p99 {:>7.3} ms  {:.3} cores  failed {}",
                    started.mode.name(),
                    scenario.name,
                    m.outcome.rps,
                    m.outcome.p99_ms,
                    m.cores_per_process,
                    m.outcome.failed
                );
                report.runs.push(m);
            }
        }
    }
    drop(fleet);
    drop(identity);
    drop(upstream);
    report::print(&report);
    if let Some(parent) = opts.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({"report": &report, "summary": report::summary(&report)});
    std::fs::write(&opts.json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", opts.json.display()))?;
    println!("\nJSON: {}", opts.json.display());
    Ok(())
}

/// The processes whose CPU and memory a mode's figures report: the proxies
/// or nginx; for direct, the upstream.
fn watched<'a>(s: &'a Started, upstream: &'a Proc) -> Vec<&'a Proc> {
    if s.measured.is_empty() {
        vec![upstream]
    } else {
        s.measured.iter().collect()
    }
}

fn measure(
    tools: &Tools,
    opts: &Options,
    scenario: &Scenario,
    round: u32,
    started: &Started,
    upstream: &Proc,
    grpc_body: &std::path::Path,
) -> Result<Measured> {
    let load = Load {
        url: format!("http://{}/", started.mode.entry()),
        rate: scenario.rate,
        connections: scenario.connections,
        duration: opts.duration.max(Duration::from_secs(3)),
        grpc_body: scenario.grpc.then(|| grpc_body.to_path_buf()),
    };
    let begin = |load: &Load| match load.rate {
        Some(_) => oha::start(&tools.oha, Some(LOAD_CORE), load),
        None => oha::start_wrk(&tools.wrk, Some(LOAD_CORE), load),
    };
    if round == 0 {
        // Warm connections and pools before measuring.
        begin(&Load {
            duration: Duration::from_secs(1),
            ..load.clone()
        })?
        .finish()?;
    }
    let procs = watched(started, upstream);
    let started_at = Instant::now();
    let running = begin(&load)?;
    let edge = Duration::from_secs(1);
    std::thread::sleep(edge);
    let (cpu0, t0) = (procs::cpu_of(&procs)?, Instant::now());
    std::thread::sleep(
        (started_at + load.duration - edge).saturating_duration_since(Instant::now()),
    );
    let (cpu1, t1) = (procs::cpu_of(&procs)?, Instant::now());
    let rss = procs
        .iter()
        .map(|p| p.rss_kib())
        .collect::<Result<Vec<_>>>()?;
    let outcome: Outcome = running.finish()?;
    let window = (t1 - t0).as_secs_f64();
    let cores = (cpu1 - cpu0) / window / procs.len() as f64;
    Ok(Measured {
        mode: started.mode,
        scenario: scenario.name,
        round,
        outcome,
        cores_per_process: cores,
        cpu_per_1000_rps: if outcome.rps > 0.0 {
            cores / (outcome.rps / 1000.0)
        } else {
            f64::NAN
        },
        rss_kib: rss.into_iter().max().unwrap_or_default(),
    })
}
