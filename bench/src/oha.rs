//! Load generation with `oha` (crates.io): fixed-rate or unbounded runs,
//! latency percentiles from its JSON report.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::{path::Path, process::Command, time::Duration};

/// What one run sends.
#[derive(Clone, Debug)]
pub struct Load {
    pub url: String,
    /// Requests per second; `None` for as fast as possible.
    pub rate: Option<u32>,
    pub connections: u32,
    pub duration: Duration,
    /// gRPC unary calls over HTTP/2 instead of HTTP/1.1 GETs.
    pub grpc_body: Option<std::path::PathBuf>,
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

pub fn run(oha: &Path, core: Option<usize>, load: &Load) -> Result<Outcome> {
    let mut cmd = match core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(oha);
            cmd
        }
        None => Command::new(oha),
    };
    // `-w`: requests in flight at the deadline finish and count, rather
    // than being reported as errors.
    cmd.args(["--no-tui", "--output-format", "json", "-w", "-z"])
        .arg(format!("{}s", load.duration.as_secs()))
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
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "oha failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
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
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oha_reports() {
        let json = r#"{"summary":{"requestsPerSec":999.5},
            "latencyPercentiles":{"p50":0.0001,"p99":0.0002,"p99.9":0.0004},
            "statusCodeDistribution":{"200":9990,"502":5},
            "errorDistribution":{"connection closed":5}}"#;
        let o = parse(json).unwrap();
        assert_eq!(o.rps, 999.5);
        assert!((o.p99_ms - 0.2).abs() < 1e-9);
        assert_eq!((o.requests, o.failed), (10_000, 10));
    }
}
