//! `trellis-bench profile`: what a request costs the proxy in counts rather
//! than time, so a change can be judged on a machine busy with other work.
//!
//! - Instructions per request, from valgrind's callgrind (deterministic
//!   for a given sequence of events): the proxies of each mode run under
//!   callgrind, counters are zeroed after a warm-up, `oha -n N` sends a fixed
//!   number of requests, one connection at a time ("serial": every request
//!   wakes the proxy on its own, as at a low fixed rate) or over 32
//!   connections ("32 conns": requests batch per wake-up, as at maximum
//!   throughput), and the counters are dumped.
//! - System calls and context switches per request, from `perf stat`
//!   tracepoints on the real binaries at 1,000 rps (when perf is present).
//!
//! The callgrind profiles stay in the scratch directory given by `--keep`
//! for `callgrind_annotate`.

use crate::{
    fleet::{self, LOAD_CORE, Mode, Wrap},
    oha::{self, Load},
    setup::{self, Tools},
};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

#[derive(Clone, Debug)]
pub struct Options {
    pub requests: u32,
    /// Keep the callgrind profiles in this directory.
    pub keep: Option<PathBuf>,
    pub json: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
struct Counted {
    mode: Mode,
    workload: &'static str,
    /// Per process (client first), instructions per request.
    instructions_per_request: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Serialize)]
struct Syscalls {
    mode: Mode,
    /// Per request, all proxies of the mode together.
    syscalls_per_request: f64,
    context_switches_per_request: f64,
}

const MODES: &[Mode] = &[Mode::OneProxy, Mode::TwoProxies, Mode::TwoProxiesMtls];
const WORKLOADS: &[(&str, u32)] = &[("serial", 1), ("32 conns", 32)];

fn callgrind(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--quiet".into(),
        format!(
            "--callgrind-out-file={}",
            dir.join(format!("callgrind.{name}")).display()
        ),
    ]
}

pub fn run(tools: &Tools, opts: &Options) -> Result<()> {
    setup::debian("valgrind", "valgrind")?;
    let scratch = tempfile::tempdir()?;
    let dir = opts.keep.clone().unwrap_or_else(|| scratch.path().into());
    std::fs::create_dir_all(&dir)?;
    let _upstream = fleet::upstream()?;
    let identity = fleet::identity(tools, &dir)?;
    let perf = which_perf();
    let mut counted = Vec::new();
    let mut syscalls = Vec::new();
    for &mode in MODES {
        if let Some(perf) = &perf {
            let started = fleet::start(mode, tools, &dir, Some(&identity), &Wrap::default())?;
            syscalls.push(count_syscalls(perf, tools, &started)?);
        }
        let wrap = Wrap {
            wrapper: Some(callgrind),
        };
        let started = fleet::start(mode, tools, &dir, Some(&identity), &wrap)?;
        for &(workload, connections) in WORKLOADS {
            let load = |n: u32| {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &LOAD_CORE.to_string()])
                    .arg(&tools.oha)
                    .args(["--no-tui", "--worker-threads", "1", "-n", &n.to_string()])
                    .args(["-c", &connections.to_string()])
                    .arg(format!("http://{}/", mode.entry()));
                cmd
            };
            check(load(500).output()?)?;
            for p in &started.measured {
                callgrind_control(&["-z", &p.pid().to_string()])?;
            }
            check(load(opts.requests).output()?)?;
            let mut per = Vec::new();
            for p in &started.measured {
                let before = dumps(&dir, p.pid())?;
                callgrind_control(&["-d", &p.pid().to_string()])?;
                let file = dumps(&dir, p.pid())?
                    .into_iter()
                    .find(|f| !before.contains(f))
                    .context("callgrind wrote no dump")?;
                let ir = total_ir(&std::fs::read_to_string(&file)?)
                    .with_context(|| format!("no totals in {}", file.display()))?;
                per.push((p.name.clone(), ir as f64 / f64::from(opts.requests)));
            }
            eprintln!("bench: {:<12} {workload:<9} {per:?}", mode.name());
            counted.push(Counted {
                mode,
                workload,
                instructions_per_request: per,
            });
        }
    }
    drop(identity);
    println!(
        "\nInstructions per request (callgrind, {} requests after a warm-up; 1 KiB responses):",
        opts.requests
    );
    println!(
        "{:<12} {:<9} {:>12}  per process",
        "mode", "workload", "total"
    );
    for c in &counted {
        let total: f64 = c.instructions_per_request.iter().map(|(_, n)| n).sum();
        let per: Vec<String> = c
            .instructions_per_request
            .iter()
            .map(|(name, n)| format!("{name} {n:.0}"))
            .collect();
        println!(
            "{:<12} {:<9} {:>12.0}  {}",
            c.mode.name(),
            c.workload,
            total,
            per.join(", ")
        );
    }
    if !syscalls.is_empty() {
        println!(
            "\nPer request at 1,000 rps over 8 connections (perf stat, all proxies of the mode):"
        );
        for s in &syscalls {
            println!(
                "{:<12} {:>6.2} system calls {:>6.2} context switches",
                s.mode.name(),
                s.syscalls_per_request,
                s.context_switches_per_request
            );
        }
    }
    if let Some(parent) = opts.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({"requests": opts.requests, "instructions": counted, "syscalls": syscalls});
    std::fs::write(&opts.json, serde_json::to_string_pretty(&json)?)?;
    println!("\nJSON: {}", opts.json.display());
    Ok(())
}

fn check(out: std::process::Output) -> Result<()> {
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn callgrind_control(args: &[&str]) -> Result<()> {
    let out = Command::new("callgrind_control").args(args).output()?;
    check(out).context("callgrind_control")
}

/// The dump files callgrind wrote so far for `pid` (named in their header).
fn dumps(dir: &Path, pid: u32) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let want = format!("\npid: {pid}\n");
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("callgrind."))
        {
            continue;
        }
        let mut head = [0u8; 512];
        let n = std::fs::File::open(&p)?.read(&mut head)?;
        if String::from_utf8_lossy(&head[..n]).contains(&want) {
            v.push(p);
        }
    }
    Ok(v)
}

/// The instruction count of a callgrind dump (`totals:` or `summary:`).
fn total_ir(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l
            .strip_prefix("totals:")
            .or_else(|| l.strip_prefix("summary:"))?;
        v.split_whitespace().next()?.parse().ok()
    })
}

fn which_perf() -> Option<PathBuf> {
    let out = Command::new("perf")
        .args(["stat", "-e", "raw_syscalls:sys_enter", "true"])
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from("perf"))
}

/// System calls and context switches of a mode's proxies per request at a
/// fixed 1,000 rps.
fn count_syscalls(perf: &Path, tools: &Tools, started: &fleet::Started) -> Result<Syscalls> {
    let load = Load {
        url: format!("http://{}/", started.mode.entry()),
        rate: Some(1000),
        connections: 8,
        duration: Duration::from_secs(6),
        grpc_body: None,
    };
    oha::run(
        &tools.oha,
        Some(LOAD_CORE),
        &Load {
            duration: Duration::from_secs(1),
            ..load.clone()
        },
    )?;
    let running = oha::start(&tools.oha, Some(LOAD_CORE), &load)?;
    std::thread::sleep(Duration::from_secs(1));
    let pids: Vec<String> = started
        .measured
        .iter()
        .map(|p| p.pid().to_string())
        .collect();
    let window = 4;
    let out = Command::new(perf)
        .args([
            "stat",
            "-x,",
            "-e",
            "raw_syscalls:sys_enter,context-switches",
            "-p",
        ])
        .arg(pids.join(","))
        .args(["--", "sleep", &window.to_string()])
        .output()?;
    let outcome = running.finish()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let count = |event: &str| -> f64 {
        text.lines()
            .find(|l| l.contains(event))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let requests = outcome.rps * f64::from(window);
    Ok(Syscalls {
        mode: started.mode,
        syscalls_per_request: count("raw_syscalls:sys_enter") / requests,
        context_switches_per_request: count("context-switches") / requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_totals() {
        let dump = "# callgrind format\nversion: 1\npid: 42\nevents: Ir\nsummary: 123456\n\nfn=main\n1 5\ntotals: 123456\n";
        assert_eq!(total_ir(dump), Some(123_456));
        assert_eq!(total_ir("events: Ir\n"), None);
    }
}
