//! Load generation with `oha` (crates.io) at a fixed rate — latency
//! percentiles from its JSON report, measured from each request's scheduled
//! start (`--latency-correction`, so a stalled proxy cannot hide its queue)
//! — and with `wrk` (Debian) for maximum throughput, where a lighter load
//! generator leaves more of its shared core to the upstream.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// What one run sends.
#[derive(Clone, Debug)]
pub struct Load {
    pub url: String,
    /// Requests per second; `None` for as fast as possible.
    pub rate: Option<u32>,
    pub connections: u32,
    pub duration: Duration,
    /// gRPC unary calls over HTTP/2 instead of HTTP/1.1 GETs.
    pub grpc_body: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Outcome {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub requests: u64,
    /// Requests that failed or did not answer 200.
    pub failed: u64,
}

/// A load generator running in the background.
#[derive(Debug)]
pub struct Running {
    child: Child,
    kind: Generator,
}

#[derive(Clone, Copy, Debug)]
enum Generator {
    Oha,
    Wrk,
}

fn pinned(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Starts oha with `load` (one worker thread: it shares its core).
pub fn start(oha: &Path, core: Option<usize>, load: &Load) -> Result<Running> {
    let mut cmd = pinned(oha, core);
    // `-w`: requests in flight at the deadline finish and count, rather
    // than being reported as errors.
    cmd.args(["--no-tui", "--output-format", "json", "-w", "-z"])
        .arg(format!("{}s", load.duration.as_secs()))
        .args(["--worker-threads", "1"])
        .args(["-c", &load.connections.to_string()]);
    if let Some(rate) = load.rate {
        cmd.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    if let Some(body) = &load.grpc_body {
        cmd.args(["--http-version", "2", "-p", "8", "-m", "POST"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-D")
            .arg(body);
    }
    cmd.arg(&load.url);
    spawn(cmd, Generator::Oha)
}

/// Starts wrk: as many requests as `load.connections` keep-alive
/// connections carry, one thread.
pub fn start_wrk(wrk: &Path, core: Option<usize>, load: &Load) -> Result<Running> {
    let mut cmd = pinned(wrk, core);
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs()))
        .arg(&load.url);
    spawn(cmd, Generator::Wrk)
}

fn spawn(mut cmd: Command, kind: Generator) -> Result<Running> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    Ok(Running { child, kind })
}

impl Running {
    /// Waits for the end of the run and reads its report.
    pub fn finish(self) -> Result<Outcome> {
        let out = self.child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                self.kind,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        match self.kind {
            Generator::Oha => parse(&text),
            Generator::Wrk => parse_wrk(&text),
        }
    }
}

/// Runs oha to the end (warm-up runs).
pub fn run(oha: &Path, core: Option<usize>, load: &Load) -> Result<Outcome> {
    start(oha, core, load)?.finish()
}

fn parse(json: &str) -> Result<Outcome> {
    let v: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("oha printed no JSON: {json}"))?;
    let secs = |p: &str| -> f64 { v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) };
    let codes = v["statusCodeDistribution"]
        .as_object()
        .context("no statusCodeDistribution in oha's report")?;
    let ok = codes.get("200").and_then(|n| n.as_u64()).unwrap_or(0);
    let answered: u64 = codes.values().filter_map(|n| n.as_u64()).sum();
    // Over HTTP/2, oha aborts the streams still open at its deadline even
    // with `-w` (direct to the upstream as well): not a failure of the path.
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("aborted due to deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(Outcome {
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: secs("p50") * 1e3,
        p99_ms: secs("p99") * 1e3,
        p999_ms: secs("p99.9") * 1e3,
        requests: answered + errors,
        failed: answered - ok + errors,
    })
}

/// A wrk duration such as `420.00us`, `1.29ms` or `2.00s`, in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(text: &str) -> Result<Outcome> {
    let mut o = Outcome {
        p999_ms: f64::NAN,
        ..Outcome::default()
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => o.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => o.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => o.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => o.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => o.failed += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                o.failed += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if o.rps == 0.0 {
        bail!("wrk printed no Requests/sec: {text}");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oha_reports() {
        let json = r#"{"summary":{"requestsPerSec":999.5},
            "latencyPercentiles":{"p50":0.0001,"p99":0.0002,"p99.9":0.0004},
            "statusCodeDistribution":{"200":9990,"502":5},
            "errorDistribution":{"connection closed":5,"aborted due to deadline":7}}"#;
        let o = parse(json).unwrap();
        assert_eq!(o.rps, 999.5);
        assert!((o.p99_ms - 0.2).abs() < 1e-9);
        assert_eq!((o.requests, o.failed), (10_000, 10));
    }

    #[test]
    fn reads_wrk_reports() {
        let text = "Running 2s test @ http://127.0.0.1:18080/\n  1 threads and 32 connections\n\
            \x20 Latency Distribution\n     50%  420.00us\n     75%  470.00us\n     99%    1.50ms\n\
            \x20 114569 requests in 2.00s, 120.41MB read\n\
            \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
            \x20 Non-2xx or 3xx responses: 4\nRequests/sec:  57260.36\n";
        let o = parse_wrk(text).unwrap();
        assert_eq!(o.rps, 57260.36);
        assert!((o.p50_ms - 0.42).abs() < 1e-9);
        assert!((o.p99_ms - 1.5).abs() < 1e-9);
        assert_eq!((o.requests, o.failed), (114_569, 7));
        assert!(parse_wrk("nothing").is_err());
    }
}
