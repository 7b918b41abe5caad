//! What the plugin's tests share: running the built plugin the way a runtime
//! does, named network namespaces, and Pod files for the sandbox source.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    io::Write,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};
use trellis_capture::netns;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_trellis-cni");

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, iptables); run it as root, as CI does"
    );
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts a spec-shaped error with this code; returns its message.
    pub fn error_code(&self, code: u64) -> String {
        assert_ne!(self.status, 0, "expected an error, got {self:?}");
        let err = self.json();
        assert!(err["cniVersion"].is_string(), "{err}");
        assert!(err["msg"].is_string(), "{err}");
        assert_eq!(err["code"], json!(code), "{err}");
        format!(
            "{} {}",
            err["msg"].as_str().unwrap_or(""),
            err["details"].as_str().unwrap_or("")
        )
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, 0, "plugin failed: {self:?}");
        self
    }
}

/// One plugin invocation with the runtime's environment.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl Call {
    pub fn new(command: &str) -> Self {
        Self::of(Path::new(PLUGIN), command)
    }

    pub fn of(plugin: &Path, command: &str) -> Self {
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "c0ffee-1".to_string()),
            ("CNI_NETNS", "/run/netns/trl-cni-absent".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", cni_path()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            plugin: plugin.to_path_buf(),
            env,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn pod(self, namespace: &str, name: &str) -> Self {
        self.env(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=c0ffee-1"),
        )
    }

    pub fn netns(self, ns: &Netns) -> Self {
        self.env("CNI_NETNS", &ns.path().display().to_string())
    }

    pub fn run(&self, stdin: &str) -> Output {
        let mut child = Command::new(&self.plugin)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.plugin.display()));
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Debian's plugins, then the directory of the built `trellis-cni`.
pub fn cni_path() -> String {
    let ours = Path::new(PLUGIN).parent().unwrap().display().to_string();
    format!("/usr/lib/cni:{ours}")
}

/// A directory of Pod objects, as the sandbox writes them.
pub struct PodDir {
    pub dir: tempfile::TempDir,
}

impl PodDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<dir>/<namespace>/<name>.json`.
    pub fn pod(
        &self,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
        containers: &[&str],
    ) {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "x"}))
            .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": namespace, "name": name, "annotations": annotations},
            "spec": {"containers": containers},
        });
        let dir = self.path().join(namespace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), pod.to_string()).unwrap();
    }

    pub fn meshed(&self, namespace: &str, name: &str) {
        self.pod(namespace, name, &[], &["app", "trellis-proxy"]);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = format!("trl-cni-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend(args);
        run(&all)
    }

    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.path(), f).expect("entering the test namespace")
    }

    /// Our rules as `iptables-save` shows them (both families).
    pub fn capture_rules(&self) -> Vec<String> {
        ["iptables-save", "ip6tables-save"]
            .iter()
            .flat_map(|tool| {
                self.exec(&[tool, "-t", "nat"])
                    .lines()
                    .filter(|l| l.starts_with("-A") && l.contains("TRELLIS_"))
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Connects from inside the namespace with the given fsuid (what socket
    /// owner matches see).
    pub fn connect_as(&self, uid: u32, to: SocketAddr) -> TcpStream {
        self.run(|| {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("uid {uid} connecting to {to}: {e}"))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rules the default plan installs, as `iptables-save` prints them.
pub fn default_rules() -> Vec<String> {
    let config =
        trellis_capture::CaptureConfig::default().families(trellis_capture::Families::host());
    let plan = trellis_capture::plan(&config);
    config
        .families
        .iter()
        .flat_map(|f| plan.iptables_rules(f))
        .collect()
}

/// A non-blocking listener inside the namespace.
pub fn listen(ns: &Netns, addr: &str) -> std::net::TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(|| {
        let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    })
}

/// Which listener holds the connection just made (its handshake completes
/// in the kernel's backlog before anyone accepts), and its original
/// destination as a proxy reads it.
pub fn landed(listeners: &[(&str, &std::net::TcpListener)]) -> (String, SocketAddr) {
    for _ in 0..100 {
        for (name, l) in listeners {
            match l.accept() {
                Ok((conn, _)) => return (name.to_string(), original_dst(&conn)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept on {name}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no listener got the connection");
}

/// `SO_ORIGINAL_DST`, or the local address when no translation was tracked.
pub fn original_dst(conn: &TcpStream) -> SocketAddr {
    use nix::{
        errno::Errno,
        sys::socket::{getsockopt, sockopt},
    };
    match getsockopt(conn, sockopt::OriginalDst) {
        Ok(sa) => SocketAddr::from((
            u32::from_be(sa.sin_addr.s_addr).to_be_bytes(),
            u16::from_be(sa.sin_port),
        )),
        Err(Errno::ENOENT) => conn.local_addr().unwrap(),
        Err(e) => panic!("reading the original destination: {e}"),
    }
}
