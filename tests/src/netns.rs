//! Network namespaces and processes in them, through `ip netns` (so that
//! `/etc/netns/<name>/hosts` is bind-mounted for every process, as for a
//! person using `ip netns exec`), plus sockets opened from inside a namespace
//! by a thread that joined it (a socket stays in the namespace it was made in,
//! whichever thread uses it afterwards).

use crate::state::Proc;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot enter network namespace {netns}: {message}")]
    Enter { netns: String, message: String },
    #[error("cannot connect to {addr} from network namespace {netns}: {source}")]
    Connect {
        netns: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs a command to completion; stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_input(program, args, None)
}

/// Runs a command with `input` on stdin; stdout on success.
pub fn run_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    use std::io::Write;
    let cmd = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A failed write shows up as the command's own failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn exists(netns: &str) -> bool {
    Path::new("/var/run/netns").join(netns).exists()
}

/// Creates a namespace with its loopback up (idempotent).
pub fn add(netns: &str) -> Result<(), Error> {
    if !exists(netns) {
        run("ip", &["netns", "add", netns])?;
    }
    run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// `ip -n <netns> addr <verb> <cidr> dev <dev>`: adds (`add`) or removes
/// (`del`) an address.
pub fn addr(netns: &str, verb: &str, cidr: &str, dev: &str) -> Result<String, Error> {
    run("ip", &["-n", netns, "addr", verb, cidr, "dev", dev])
}

/// Deletes a namespace and its `/etc/netns` directory (idempotent).
pub fn delete(netns: &str) -> Result<(), Error> {
    if exists(netns) {
        run("ip", &["netns", "delete", netns])?;
    }
    let etc = etc_dir(netns);
    if etc.exists() {
        std::fs::remove_dir_all(&etc).map_err(|source| Error::Spawn {
            cmd: format!("rm -r {}", etc.display()),
            source,
        })?;
    }
    Ok(())
}

/// `/etc/netns/<netns>`: files `ip netns exec` bind-mounts over `/etc`.
pub fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// Writes `/etc/netns/<netns>/hosts` in place (not by rename): running
/// processes have the file bind-mounted by inode and see the new content.
pub fn write_hosts(netns: &str, content: &str) -> Result<(), Error> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Spawn {
        cmd: format!("mkdir -p {}", dir.display()),
        source,
    })?;
    let path = dir.join("hosts");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    std::fs::write(&path, content).map_err(|source| Error::Spawn {
        cmd: format!("write {}", path.display()),
        source,
    })
}

/// The pids of every process in a namespace.
pub fn pids(netns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", netns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// What to start in a namespace.
#[derive(Debug, Clone)]
pub struct Spawn<'a> {
    pub netns: &'a str,
    pub role: &'a str,
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    /// Run as this uid/gid (through `setpriv`), else as root.
    pub uid: Option<u32>,
    pub log: &'a Path,
}

/// Starts a long-running process in a namespace, detached in its own process
/// group with a clean environment, output appended to its log. `ip netns exec`
/// and `setpriv` both exec, so the recorded pid is the program's own.
pub fn spawn(s: &Spawn<'_>) -> Result<Proc, Error> {
    use std::os::unix::process::CommandExt;
    let log = File::options()
        .create(true)
        .append(true)
        .open(s.log)
        .map_err(|source| Error::Log {
            path: s.log.to_path_buf(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| Error::Log {
        path: s.log.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", s.netns]);
    if let Some(uid) = s.uid {
        cmd.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ]);
    }
    cmd.arg(s.program)
        .args(s.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(s.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        cmd: format!("ip netns exec {} {}", s.netns, s.program.display()),
        source,
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // The child is reaped by whoever outlives it; `alive` treats zombies as dead.
    drop(child);
    Ok(Proc {
        role: s.role.to_string(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
        log: s.log.to_path_buf(),
    })
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn state_char(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether the process is still the one we started (and not a zombie).
pub fn alive(p: &Proc) -> bool {
    reap(p.pid);
    start_time(p.pid) == Some(p.start_time) && !matches!(state_char(p.pid), Some('Z' | 'X'))
}

fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    // Only succeeds for our own children; others are reaped by their parent.
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// Stops a process group we started: TERM, then KILL after `grace`.
pub fn kill(p: &Proc, grace: Duration) {
    if !alive(p) {
        return;
    }
    let _ = signal::killpg(Pid::from_raw(p.pid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while alive(p) && tokio::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(p) {
        let _ = signal::killpg(Pid::from_raw(p.pid), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
        reap(p.pid);
    }
}

/// Kills every process left in a namespace (after a crash, or children the
/// records do not know).
pub fn kill_all_in(netns: &str) {
    for pid in pids(netns) {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        reap(pid);
    }
}

/// The TCP ports with a listening socket in the network namespace of `pid`.
pub fn listening_ports(pid: i32) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN.
            if fields.len() > 3
                && fields[3] == "0A"
                && let Some(port) = fields[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                out.insert(port);
            }
        }
    }
    out
}

/// Opens a TCP connection from inside a network namespace. The socket is
/// made by a short-lived thread that joined the namespace; it is then usable
/// from any thread or runtime.
pub fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let path = Path::new("/var/run/netns").join(netns);
    let ns = netns.to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).map_err(|e| Error::Enter {
                netns: ns.clone(),
                message: e.to_string(),
            })?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::Enter {
                    netns: ns.clone(),
                    message: e.to_string(),
                }
            })?;
            TcpStream::connect_timeout(&addr, timeout).map_err(|source| Error::Connect {
                netns: ns.clone(),
                addr,
                source,
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Enter {
                netns: ns.clone(),
                message: "the connecting thread panicked".into(),
            })
        })
    })
}

/// Resolves a name the way a process in the pod would: through the pod's
/// `/etc/netns/<netns>/hosts`, then as an IP literal.
pub fn resolve(netns: &str, host: &str) -> Option<std::net::Ipv4Addr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let hosts = std::fs::read_to_string(etc_dir(netns).join("hosts")).ok()?;
    hosts.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        let ip = it.next()?.parse().ok()?;
        it.any(|n| n == host).then_some(ip)
    })
}
