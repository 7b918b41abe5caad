//! Processes under measurement: started pinned to a core with `taskset`,
//! their CPU time and resident memory read from `/proc`.

use anyhow::{Context, Result, bail};
use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args` pinned to `core` (all cores when `None`).
    pub fn spawn(name: &str, core: Option<usize>, program: &str, args: &[String]) -> Result<Proc> {
        let mut cmd = match core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &c.to_string(), program]);
                cmd
            }
            None => Command::new(program),
        };
        let child = cmd
            .args(args)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds so far, all threads.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .with_context(|| format!("reading /proc/{}/stat ({})", self.pid(), self.name))?;
        // Fields after the parenthesised command name: state is field 3,
        // utime field 14, stime field 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .with_context(|| format!("unexpected /proc/{}/stat: {stat}", self.pid()))
        };
        Ok((ticks(11)? + ticks(12)?) / clock_ticks())
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading /proc/{}/status ({})", self.pid(), self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for(addr: SocketAddr, what: &str) -> Result<()> {
    for _ in 0..200 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr} within 10 s")
}

/// The CPU seconds several processes used while `f` ran, and `f`'s result.
pub fn measure_cpu<T>(procs: &[&Proc], f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let before: f64 = procs.iter().map(|p| p.cpu_seconds()).sum::<Result<f64>>()?;
    let out = f()?;
    let after: f64 = procs.iter().map(|p| p.cpu_seconds()).sum::<Result<f64>>()?;
    Ok((after - before, out))
}
