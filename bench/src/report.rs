//! The benchmark's figures: every run as measured, and per scenario and mode
//! the medians over rounds, each with its ratio to direct (and nginx's row
//! beside it), printed as tables and written as JSON.

use crate::{
    fleet::{LOAD_CORE, Mode, PROXY_CORE},
    oha::Outcome,
    procs::Rss,
    proxy::SCENARIOS,
};
use serde::Serialize;

/// One measurement (one mode, one scenario, one round).
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub mode: Mode,
    pub scenario: &'static str,
    pub round: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Cores the measured processes (the proxies; the upstream for direct)
    /// used on average over the steady window, per process.
    pub cores_per_process: f64,
    /// CPU per 1,000 rps, per process.
    pub cpu_per_1000_rps: f64,
    /// Resident memory under load, per process (the largest).
    pub rss_kib: Rss,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub duration_s: u64,
    pub rounds: u32,
    pub body_bytes: usize,
    pub idle_rss_kib: Vec<(Mode, Rss)>,
    pub runs: Vec<Measured>,
}

/// A mode's figures in one scenario: medians over its rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub mode: Mode,
    pub scenario: &'static str,
    pub rounds: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Median over rounds of (this mode − direct of the same round).
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    pub added_p999_ms: f64,
    pub cores_per_process: f64,
    pub cpu_per_1000_rps: f64,
    /// Throughput divided by the cores each process used.
    pub rps_per_core: f64,
    pub rss_kib: Rss,
    pub failed: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Every (scenario, mode) row, in scenario order.
pub fn summary(report: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in SCENARIOS {
        let of = |mode: Mode| -> Vec<&Measured> {
            report
                .runs
                .iter()
                .filter(|m| m.scenario == s.name && m.mode == mode)
                .collect()
        };
        let direct = of(Mode::Direct);
        let mut modes: Vec<Mode> = Vec::new();
        for m in report.runs.iter().filter(|m| m.scenario == s.name) {
            if !modes.contains(&m.mode) {
                modes.push(m.mode);
            }
        }
        modes.sort_by_key(|m| *m as u8);
        for mode in modes {
            let runs = of(mode);
            let med = |f: &dyn Fn(&Measured) -> f64| median(runs.iter().map(|m| f(m)).collect());
            let added = |f: &dyn Fn(&Outcome) -> f64| {
                median(
                    runs.iter()
                        .filter_map(|m| {
                            let d = direct.iter().find(|d| d.round == m.round)?;
                            Some(f(&m.outcome) - f(&d.outcome))
                        })
                        .collect(),
                )
            };
            rows.push(Row {
                mode,
                scenario: s.name,
                rounds: runs.len(),
                rps: med(&|m| m.outcome.rps),
                p50_ms: med(&|m| m.outcome.p50_ms),
                p99_ms: med(&|m| m.outcome.p99_ms),
                p999_ms: med(&|m| m.outcome.p999_ms),
                added_p50_ms: added(&|o| o.p50_ms),
                added_p99_ms: added(&|o| o.p99_ms),
                added_p999_ms: added(&|o| o.p999_ms),
                cores_per_process: med(&|m| m.cores_per_process),
                cpu_per_1000_rps: med(&|m| m.cpu_per_1000_rps),
                rps_per_core: med(&|m| m.outcome.rps / m.cores_per_process.max(1e-9)),
                rss_kib: runs.iter().map(|m| m.rss_kib).max().unwrap_or_default(),
                failed: runs.iter().map(|m| m.outcome.failed).sum(),
            });
        }
    }
    rows
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Prints the tables: each figure with its ratio to direct.
pub fn print(report: &Report) {
    println!(
        "\nTrellis proxy benchmark: {} s per run, {} round(s) of the 1,000 rps scenarios, {} B bodies; \
         proxies and nginx pinned to core {PROXY_CORE}, load generator and upstream on core {LOAD_CORE}",
        report.duration_s, report.rounds, report.body_bytes
    );
    println!(
        "Medians over rounds. +pXX = median over rounds of (mode - direct of the same round), ms; \
         CPU and RSS per proxy process (direct: the upstream's own). Fixed rates: oha; max: wrk."
    );
    let rows = summary(report);
    for s in SCENARIOS {
        println!("\n== {} ==", s.name);
        println!(
            "{:<12} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>12} {:>6}",
            "mode",
            "rps",
            "ratio",
            "p50",
            "+p50",
            "p99",
            "+p99",
            "p99.9",
            "+p99.9",
            "core/1krps",
            "ratio",
            "RSS/anon KiB",
            "failed"
        );
        let in_scenario: Vec<&Row> = rows.iter().filter(|r| r.scenario == s.name).collect();
        let Some(direct) = in_scenario.iter().find(|r| r.mode == Mode::Direct) else {
            continue;
        };
        for r in &in_scenario {
            println!(
                "{:<12} {:>9.0} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10.4} {:>7} {:>12} {:>6}",
                r.mode.name(),
                r.rps,
                ratio(r.rps, direct.rps),
                r.p50_ms,
                r.added_p50_ms,
                r.p99_ms,
                r.added_p99_ms,
                r.p999_ms,
                r.added_p999_ms,
                r.cpu_per_1000_rps,
                ratio(r.cpu_per_1000_rps, direct.cpu_per_1000_rps),
                format!("{}/{}", r.rss_kib.total, r.rss_kib.anon),
                r.failed,
            );
        }
        if s.rate.is_none() {
            let nginx = in_scenario.iter().find(|r| r.mode == Mode::Nginx);
            for r in in_scenario.iter().filter(|r| r.mode != Mode::Direct) {
                println!(
                    "  {:<12} {:>7.0} rps per core ({:.2} cores used per process; ratio to direct's upstream {}, to nginx {})",
                    r.mode.name(),
                    r.rps_per_core,
                    r.cores_per_process,
                    ratio(r.rps_per_core, direct.rps_per_core),
                    nginx.map_or("-".into(), |n| ratio(r.rps_per_core, n.rps_per_core)),
                );
            }
        }
    }
    let direct_idle = report
        .idle_rss_kib
        .iter()
        .find(|(m, _)| *m == Mode::Direct)
        .map_or(0, |(_, r)| r.total);
    println!(
        "\nIdle RSS (KiB, per process, the largest of a mode's; anonymous part; ratio to the direct upstream's):"
    );
    for (mode, rss) in &report.idle_rss_kib {
        println!(
            "  {:<12} {:>8} {:>8} {:>8}",
            mode.name(),
            rss.total,
            rss.anon,
            ratio(rss.total as f64, direct_idle as f64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, round: u32, p99_ms: f64) -> Measured {
        Measured {
            mode,
            scenario: SCENARIOS[0].name,
            round,
            outcome: Outcome {
                rps: 1000.0,
                p99_ms,
                ..Outcome::default()
            },
            cores_per_process: 0.05,
            cpu_per_1000_rps: 0.05,
            rss_kib: Rss {
                total: 1000 + u64::from(round),
                anon: 10,
            },
        }
    }

    #[test]
    fn added_latency_pairs_rounds_and_takes_the_median() {
        let report = Report {
            duration_s: 10,
            rounds: 3,
            body_bytes: 1024,
            idle_rss_kib: Vec::new(),
            runs: vec![
                run(Mode::Direct, 0, 1.0),
                run(Mode::OneProxy, 0, 1.2),
                run(Mode::Direct, 1, 5.0),
                run(Mode::OneProxy, 1, 5.3),
                run(Mode::Direct, 2, 1.0),
                run(Mode::OneProxy, 2, 1.1),
            ],
        };
        let rows = summary(&report);
        let one = rows.iter().find(|r| r.mode == Mode::OneProxy).unwrap();
        assert!((one.added_p99_ms - 0.2).abs() < 1e-9, "{one:?}");
        assert!((one.p99_ms - 1.2).abs() < 1e-9);
        assert_eq!((one.rounds, one.rss_kib.total), (3, 1002));
        assert_eq!(median(vec![3.0, 1.0, f64::NAN, 2.0, 4.0]), 2.5);
    }
}
