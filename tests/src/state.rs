//! What a sandbox has made, on disk under `/run/trellis-sandbox/<name>/`, so
//! that `status`, `exec`, `apply`, `delete` and `down` work from another
//! process, and `down` cleans up after a crash.
//!
//! Layout of the state directory:
//!
//! ```text
//! state.json        this file's State (written before each step it records)
//! lock              flock held by whoever changes the sandbox
//! manifests/        the controller's directory (one object per file)
//! ipam/             host-local IPAM state (CNI `dataDir`)
//! logs/             one log per process (`<namespace>_<pod>_<container>.log`)
//! pods/             pod metadata for trellis-cni (see docs/decisions.md)
//! identity/         trellis-identity's CA (0700, files 0600)
//! trust-bundle.pem  the trust bundle identity publishes
//! identity-tokens.json, tokens/<namespace>/<pod>   pod tokens (see [`crate::identity`]),
//!                   tokens/_gateways/<namespace>/<gateway>   gateway proxies' tokens
//! ```
//!
//! Every mutation is recorded *before* it happens (a namespace is listed
//! before `ip netns add`), so a crash leaves at worst an entry with nothing
//! behind it, which `down` tolerates.

use crate::manifest::{Object, PodPlan};
use crate::names::SandboxName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {0:?} does not exist (no {1})")]
    Missing(String, PathBuf),
    #[error("sandbox {0:?} already exists: run `trellisctl sandbox down --name {0}` first")]
    Exists(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt sandbox state {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One process the sandbox started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proc {
    /// The container name, `trellis-proxy`, or `trellis-controller`.
    pub role: String,
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells a recycled pid from ours.
    pub start_time: u64,
    pub log: PathBuf,
}

/// One pod replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    pub plan: PodPlan,
    pub netns: String,
    pub meshed: bool,
    pub container_id: String,
    pub uid: String,
    pub ip: Option<Ipv4Addr>,
    /// The result of the last CNI ADD (the `prevResult` of DEL and CHECK).
    pub cni_result: Option<serde_json::Value>,
    pub procs: Vec<Proc>,
    pub ready: bool,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.plan.namespace, self.plan.name)
    }
}

/// The proxy of one Gateway (see [`crate::gateway`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayState {
    pub namespace: String,
    pub name: String,
    /// Where it listens, from the Service range, on the node bridge.
    pub address: Ipv4Addr,
    pub service_account: String,
    pub proc: Option<Proc>,
    pub ready: bool,
}

/// Everything a sandbox made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// Every namespace is meshed, labelled or not.
    pub mesh_all: bool,
    pub bin_dir: PathBuf,
    /// Objects as applied, in order of first application.
    pub objects: Vec<Object>,
    /// `namespace/name` → ClusterIP.
    pub cluster_ips: BTreeMap<String, Ipv4Addr>,
    /// `namespace/name` → pod.
    pub pods: BTreeMap<String, PodState>,
    pub controller: Option<Proc>,
    /// The identity service (CA), in the node namespace.
    #[serde(default)]
    pub identity: Option<Proc>,
    /// `--certificate-lifetime` of the identity service, when not its default.
    #[serde(default)]
    pub certificate_lifetime: Option<String>,
    /// Every network namespace made (recorded before it is made).
    pub netns: Vec<String>,
    /// `namespace/name` → the proxy of that Gateway.
    #[serde(default)]
    pub gateways: BTreeMap<String, GatewayState>,
}

impl State {
    pub fn new(name: &SandboxName, mesh_all: bool, bin_dir: PathBuf) -> Self {
        Self {
            name: name.as_str().to_string(),
            mesh_all,
            bin_dir,
            objects: Vec::new(),
            cluster_ips: BTreeMap::new(),
            pods: BTreeMap::new(),
            controller: None,
            identity: None,
            certificate_lifetime: None,
            netns: Vec::new(),
            gateways: BTreeMap::new(),
        }
    }
}

/// The paths of one sandbox's directory.
#[derive(Debug, Clone)]
pub struct Dir {
    pub root: PathBuf,
}

impl Dir {
    pub fn of(name: &SandboxName) -> Self {
        Self {
            root: name.state_dir(),
        }
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    pub fn ipam(&self) -> PathBuf {
        self.root.join("ipam")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// trellis-identity's `--state-dir`.
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity")
    }
    pub fn trust_bundle(&self) -> PathBuf {
        self.root.join("trust-bundle.pem")
    }
    /// trellis-identity's `--tokens-file`.
    pub fn tokens_file(&self) -> PathBuf {
        self.root.join("identity-tokens.json")
    }
    /// One token file per pod, `<namespace>/<pod>`.
    pub fn tokens(&self) -> PathBuf {
        self.root.join("tokens")
    }
    pub fn exists(&self) -> bool {
        self.state_file().exists()
    }

    pub fn create(&self) -> Result<(), Error> {
        for d in [
            self.root.clone(),
            self.manifests(),
            self.ipam(),
            self.logs(),
            self.pods(),
            self.tokens(),
        ] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        Ok(())
    }

    pub fn load(&self, name: &str) -> Result<State, Error> {
        let path = self.state_file();
        if !path.exists() {
            return Err(Error::Missing(name.to_string(), path));
        }
        let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    pub fn save(&self, state: &State) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::Corrupt {
            path: self.state_file(),
            message: e.to_string(),
        })?;
        write_atomic(&self.state_file(), text.as_bytes())
    }

    /// Takes the sandbox's lock (blocking until other trellisctl processes
    /// working on the same sandbox are done); released on drop.
    pub fn lock(&self) -> Result<Lock, Error> {
        std::fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, e)| Error::Io {
                what: "lock",
                path: path.clone(),
                source: e.into(),
            },
        )?;
        Ok(Lock(flock))
    }
}

/// The held sandbox lock.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Writes a file so that readers see the old or the new content, never half
/// of it (write to a sibling, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}
