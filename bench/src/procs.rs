//! Processes under measurement: started pinned to a core with `taskset`
//! (optionally under a wrapper such as valgrind), their CPU time and
//! resident memory read from `/proc`.

use anyhow::{Context, Result, bail};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// How to start one process.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// Pinned to this core (all cores when `None`).
    pub core: Option<usize>,
    pub env: Vec<(String, String)>,
    /// A command the program runs under (`valgrind --tool=callgrind`).
    pub wrapper: Vec<String>,
}

impl Launch {
    pub fn new(program: &str, args: Vec<String>, core: Option<usize>) -> Self {
        Self {
            program: program.to_string(),
            args,
            core,
            ..Self::default()
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// Resident memory, KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, launch: &Launch) -> Result<Proc> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(c) = launch.core {
            argv.extend(["taskset".into(), "-c".into(), c.to_string()]);
        }
        argv.extend(launch.wrapper.iter().cloned());
        argv.push(launch.program.clone());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(&launch.args)
            .env(trellis_api::contract::env::LOG, "warn")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", launch.program))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// The process id (with `taskset`, which execs, the program's own).
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

    /// Resident set size in KiB: all of it, and the anonymous part (heap
    /// and stacks; the rest is mapped code and data of the executable and
    /// its libraries).
    pub fn rss_kib(&self) -> Result<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading /proc/{}/status ({})", self.pid(), self.name))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/PID/status"))
        };
        Ok(Rss {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
        })
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
pub fn wait_for(addr: SocketAddr, what: &str, within: Duration) -> Result<()> {
    let deadline = std::time::SystemTime::now() + within;
    while std::time::SystemTime::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr} within {within:?}")
}

/// The status code of `GET path` on `addr` (HTTP/1.1, connection closed).
pub fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])?
        .parse()
        .with_context(|| format!("no status line from {addr}{path}"))
}

/// Waits until `GET /ready` on an admin address answers 200.
pub fn wait_ready(admin: SocketAddr, what: &str, within: Duration) -> Result<()> {
    let deadline = std::time::SystemTime::now() + within;
    while std::time::SystemTime::now() < deadline {
        if http_status(admin, "/ready").ok() == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} was not ready (GET {admin}/ready) within {within:?}")
}

/// CPU seconds of several processes, summed.
pub fn cpu_of(procs: &[&Proc]) -> Result<f64> {
    procs.iter().map(|p| p.cpu_seconds()).sum()
}
