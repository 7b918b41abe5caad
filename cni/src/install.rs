//! `trellis-cni install`: what the chart's DaemonSet runs on every node.
//!
//! ```text
//! every few seconds:  own binary ──copy──► <bin-dir>/trellis-cni
//!                     SA token, CA ──────► <conf-dir>/trellis-cni/{token,ca.crt,kubeconfig}
//!                     primary conflist ──► + {"type": "trellis-cni", "kubeconfig": …} last
//! SIGTERM (pod deleted, chart uninstalled): take all of it out again, exit 0
//! ```
//!
//! The primary network is the first `*.conflist` / `*.conf` of the
//! configuration directory in lexical order, which is the one container
//! runtimes use. A single-plugin `.conf` becomes a `.conflist` of the same
//! name (runtimes read lists only from `.conflist`). The loop re-chains after
//! the primary plugin rewrites its file, and rewrites the token the kubelet
//! rotates. `--check` answers the readiness probe; `uninstall` undoes it all
//! once. Every write goes to a temporary file renamed into place, so the
//! runtime never reads half a file.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The plugin's `type`, and the binary's name on the node.
pub const PLUGIN: &str = "trellis-cni";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a CNI network configuration: {message}", path.display())]
    BadConf { path: PathBuf, message: String },
    #[error("{} holds no network configuration to chain into", dir.display())]
    NoPrimary { dir: PathBuf },
    #[error("{0} is not set: the installer must run in a pod")]
    NoApiServer(&'static str),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |error| InstallError::Io { what, path, error }
}

/// What to do, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where the node's CNI binaries are, as mounted in this container.
    pub bin_dir: PathBuf,
    /// Where the node's CNI configuration is, as mounted in this container.
    pub conf_dir: PathBuf,
    /// The same directory as the node sees it (written into the conflist).
    pub host_conf_dir: PathBuf,
    /// The service-account token and CA to hand to the plugin.
    pub sa_dir: PathBuf,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install, keep current, undo on SIGTERM.
    Run,
    /// Exit 0 when installed and chained, 1 otherwise.
    Check,
    /// Undo once.
    Uninstall,
}

impl Options {
    /// `install [--check] --bin-dir=D --conf-dir=D [--host-conf-dir=D]` or `uninstall …`.
    pub fn parse(args: &[String]) -> Result<Self, InstallError> {
        let usage = |m: String| InstallError::Usage(format!("trellis-cni: {m}"));
        let mode = match args.first().map(String::as_str) {
            Some("install") => Mode::Run,
            Some("uninstall") => Mode::Uninstall,
            other => {
                return Err(usage(format!(
                    "expected install or uninstall, got {other:?}"
                )));
            }
        };
        let mut o = Options {
            bin_dir: PathBuf::from("/opt/cni/bin"),
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            host_conf_dir: PathBuf::new(),
            sa_dir: PathBuf::from(SA_DIR),
            mode,
        };
        for arg in &args[1..] {
            let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            match (k, v) {
                ("--check", "") if mode == Mode::Run => o.mode = Mode::Check,
                ("--bin-dir", v) if !v.is_empty() => o.bin_dir = v.into(),
                ("--conf-dir", v) if !v.is_empty() => o.conf_dir = v.into(),
                ("--host-conf-dir", v) if !v.is_empty() => o.host_conf_dir = v.into(),
                ("--sa-dir", v) if !v.is_empty() => o.sa_dir = v.into(),
                _ => return Err(usage(format!("unexpected argument {arg:?}"))),
            }
        }
        if o.host_conf_dir.as_os_str().is_empty() {
            o.host_conf_dir = o.conf_dir.clone();
        }
        Ok(o)
    }

    fn own_dir(&self) -> PathBuf {
        self.conf_dir.join(PLUGIN)
    }
}

/// Our entry in a conflist: the plugin reads pod annotations through the
/// kubeconfig the installer keeps next to it.
pub fn entry(host_conf_dir: &Path) -> Value {
    json!({
        "type": PLUGIN,
        "kubeconfig": host_conf_dir.join(PLUGIN).join("kubeconfig"),
    })
}

/// `conf` with our entry last (replacing an older one); `.conf` documents
/// become lists.
pub fn chain(conf: &Value, entry: &Value) -> Result<Value, String> {
    let mut list = as_list(conf)?;
    let plugins = list["plugins"]
        .as_array_mut()
        .ok_or("plugins is not a list")?;
    plugins.retain(|p| p["type"] != PLUGIN);
    plugins.push(entry.clone());
    Ok(list)
}

/// `conf` without our entry, or `None` when it has none.
pub fn unchain(conf: &Value) -> Option<Value> {
    let plugins = conf.get("plugins")?.as_array()?;
    if !plugins.iter().any(|p| p["type"] == PLUGIN) {
        return None;
    }
    let mut out = conf.clone();
    out["plugins"] = Value::Array(
        plugins
            .iter()
            .filter(|p| p["type"] != PLUGIN)
            .cloned()
            .collect(),
    );
    Some(out)
}

fn as_list(conf: &Value) -> Result<Value, String> {
    let obj = conf.as_object().ok_or("not a JSON object")?;
    if obj.contains_key("plugins") {
        return Ok(conf.clone());
    }
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("neither plugins nor type")?;
    let mut single = conf.clone();
    let map = single.as_object_mut().ok_or("not a JSON object")?;
    let version = map.remove("cniVersion").unwrap_or(json!("1.0.0"));
    let name = map.remove("name").unwrap_or(json!(kind));
    Ok(json!({"cniVersion": version, "name": name, "plugins": [single]}))
}

/// The runtime's configuration file: the first `.conflist`/`.conf`/`.json`.
pub fn primary(names: &[String]) -> Option<&String> {
    let mut candidates: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".conflist") || n.ends_with(".conf") || n.ends_with(".json"))
        .filter(|n| !n.starts_with('.'))
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

/// A kubeconfig naming the API server and files the installer keeps fresh.
pub fn kubeconfig(server: &str, dir: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: trellis-cni\n  user:\n    tokenFile: {}\ncontexts:\n- name: trellis-cni\n  context:\n    cluster: local\n    user: trellis-cni\ncurrent-context: trellis-cni\n",
        dir.join("ca.crt").display(),
        dir.join("token").display(),
    )
}

/// Writes `bytes` to `path` through a temporary file, unless it already holds them.
fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(path).is_ok_and(|b| b == bytes) {
        return Ok(false);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.trellis-tmp"));
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))?;
    Ok(true)
}

fn list_dir(dir: &Path) -> Result<Vec<String>, InstallError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("reading", dir))? {
        let e = e.map_err(io("reading", dir))?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

fn read_conf(path: &Path) -> Result<Value, InstallError> {
    let text = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&text).map_err(|e| InstallError::BadConf {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One pass of installation; returns whether anything changed.
pub fn install_once(o: &Options, server: &str, own_binary: &Path) -> Result<bool, InstallError> {
    let mut changed = false;
    let binary = std::fs::read(own_binary).map_err(io("reading", own_binary))?;
    changed |= write_if_changed(&o.bin_dir.join(PLUGIN), &binary, 0o755)?;
    let dir = o.own_dir();
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    for (file, mode) in [("token", 0o600), ("ca.crt", 0o644)] {
        let src = o.sa_dir.join(file);
        let bytes = std::fs::read(&src).map_err(io("reading", &src))?;
        changed |= write_if_changed(&dir.join(file), &bytes, mode)?;
    }
    let host_dir = o.host_conf_dir.join(PLUGIN);
    changed |= write_if_changed(
        &dir.join("kubeconfig"),
        kubeconfig(server, &host_dir).as_bytes(),
        0o600,
    )?;

    let names = list_dir(&o.conf_dir)?;
    let name = primary(&names).ok_or_else(|| InstallError::NoPrimary {
        dir: o.conf_dir.clone(),
    })?;
    let path = o.conf_dir.join(name);
    let conf = read_conf(&path)?;
    let chained =
        chain(&conf, &entry(&o.host_conf_dir)).map_err(|message| InstallError::BadConf {
            path: path.clone(),
            message,
        })?;
    let mut text = serde_json::to_vec_pretty(&chained).unwrap_or_default();
    text.push(b'\n');
    if let Some(stem) = name
        .strip_suffix(".conf")
        .or_else(|| name.strip_suffix(".json"))
    {
        // A runtime reads a plugin list only from a .conflist.
        write_if_changed(&o.conf_dir.join(format!("{stem}.conflist")), &text, 0o644)?;
        std::fs::remove_file(&path).map_err(io("removing", &path))?;
        return Ok(true);
    }
    changed |= if chained == conf {
        false
    } else {
        write_if_changed(&path, &text, 0o644)?
    };
    Ok(changed)
}

/// Whether the plugin is on the node and chained into the primary conflist.
pub fn is_installed(o: &Options) -> bool {
    let Ok(names) = list_dir(&o.conf_dir) else {
        return false;
    };
    let chained = primary(&names)
        .and_then(|n| read_conf(&o.conf_dir.join(n)).ok())
        .is_some_and(|c| unchain(&c).is_some());
    chained && o.bin_dir.join(PLUGIN).is_file() && o.own_dir().join("kubeconfig").is_file()
}

/// Takes the entry out of every configuration file and removes our files.
pub fn uninstall(o: &Options) -> Result<(), InstallError> {
    for name in list_dir(&o.conf_dir)? {
        if !(name.ends_with(".conflist") || name.ends_with(".conf") || name.ends_with(".json")) {
            continue;
        }
        let path = o.conf_dir.join(&name);
        if let Ok(conf) = read_conf(&path)
            && let Some(without) = unchain(&conf)
        {
            let mut text = serde_json::to_vec_pretty(&without).unwrap_or_default();
            text.push(b'\n');
            write_if_changed(&path, &text, 0o644)?;
        }
    }
    for path in [o.bin_dir.join(PLUGIN)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &path)(e));
            }
            _ => {}
        }
    }
    let dir = o.own_dir();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &dir)(e)),
        _ => Ok(()),
    }
}

/// The API server as pods see it (`KUBERNETES_SERVICE_HOST`/`_PORT`).
fn api_server() -> Result<String, InstallError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| InstallError::NoApiServer("KUBERNETES_SERVICE_HOST"))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

/// `trellis-cni install|uninstall …`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let o = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return trellis_api::contract::EXIT_USAGE;
        }
    };
    match o.mode {
        Mode::Check => i32::from(!is_installed(&o)),
        Mode::Uninstall => report(uninstall(&o)),
        Mode::Run => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("trellis-cni: starting the runtime: {e}");
                    return 1;
                }
            };
            report(runtime.block_on(run(&o)))
        }
    }
}

fn report(r: Result<(), InstallError>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("trellis-cni: {e}");
            if matches!(e, InstallError::Usage(_) | InstallError::NoApiServer(_)) {
                trellis_api::contract::EXIT_USAGE
            } else {
                1
            }
        }
    }
}

async fn run(o: &Options) -> Result<(), InstallError> {
    use tokio::signal::unix::{SignalKind, signal};
    let server = api_server()?;
    let exe = std::env::current_exe().map_err(io("locating", Path::new("/proc/self/exe")))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(io("handling SIGTERM", Path::new("-")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("handling SIGINT", Path::new("-")))?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => match install_once(o, &server, &exe) {
                Ok(true) => tracing::info!(conf_dir = %o.conf_dir.display(), "trellis-cni installed and chained"),
                Ok(false) => {}
                // The primary network may not be there yet; keep trying.
                Err(e) => tracing::warn!("not installed yet: {e}"),
            },
        }
    }
    tracing::info!("removing trellis-cni from the node");
    uninstall(o)
}

#[cfg(test)]
mod tests;
