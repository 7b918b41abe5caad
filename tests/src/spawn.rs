//! The processes of a sandbox: the controller and the identity service in
//! the node namespace, and in each pod its apps (the echo server for the
//! conformance images, or the container's `command`) and, when meshed,
//! `trellis-proxy sidecar` as the proxy's uid with the downward-API
//! environment a sidecar injector sets, its token and the trust bundle.

use crate::cluster::POD_GATEWAY;
use crate::manifest::Container;
use crate::netns::{self, Spawn};
use crate::probe;
use crate::state::{Dir, PodState, Proc, State};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use trellis_api::contract::{self, env, port};
use trellis_policy::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{binary} not found in {dir}: build the workspace binaries first (`cargo build --workspace --bins`) or pass --bin-dir"
    )]
    MissingBinary { binary: String, dir: PathBuf },
    #[error(
        "container {container} of pod {pod}: image {image} is not an echo image and has no `command` to run"
    )]
    NoCommand {
        pod: String,
        container: String,
        image: String,
    },
    #[error(transparent)]
    Netns(#[from] netns::Error),
}

/// The Trellis binaries a sandbox runs.
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
}

pub const CONTROLLER: &str = "trellis-controller";
pub const PROXY: &str = "trellis-proxy";
pub const ECHO: &str = "trellis-echo";
pub const CNI: &str = "trellis-cni";
pub const IDENTITY: &str = "trellis-identity";

impl Bins {
    /// `dir`, else the directory of the running executable (`target/debug`,
    /// or its parent for test executables in `target/debug/deps`).
    pub fn discover(dir: Option<&Path>) -> Result<Self, Error> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => default_dir(),
        };
        let bins = Self { dir };
        for b in [CONTROLLER, PROXY, ECHO, CNI, IDENTITY] {
            bins.require(b)?;
        }
        Ok(bins)
    }

    pub fn path(&self, binary: &str) -> PathBuf {
        self.dir.join(binary)
    }

    fn require(&self, binary: &str) -> Result<PathBuf, Error> {
        let p = self.path(binary);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingBinary {
                binary: binary.to_string(),
                dir: self.dir.clone(),
            })
        }
    }

    /// `CNI_PATH`: Debian's plugins, then ours.
    pub fn cni_path(&self) -> Vec<PathBuf> {
        vec![
            PathBuf::from(crate::cni::SYSTEM_PLUGIN_DIR),
            self.dir.clone(),
        ]
    }
}

/// Where binaries are when none is given: next to the running executable.
pub fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The controller's gRPC and admin addresses, on the node bridge.
pub fn controller_grpc() -> SocketAddr {
    SocketAddr::from((POD_GATEWAY, port::CONTROLLER_GRPC))
}
pub fn controller_admin() -> SocketAddr {
    SocketAddr::from((POD_GATEWAY, port::CONTROLLER_ADMIN))
}

/// The identity service's gRPC (TLS) and admin addresses, on the node bridge.
pub fn identity_grpc() -> SocketAddr {
    SocketAddr::from((POD_GATEWAY, port::IDENTITY_GRPC))
}
pub fn identity_admin() -> SocketAddr {
    SocketAddr::from((POD_GATEWAY, port::IDENTITY_ADMIN))
}

/// Starts the identity service in the node namespace: its CA in the state
/// directory, the bundle published to a file, pods authenticated by the
/// sandbox's tokens file; `lifetime` shortens the certificates it issues.
pub fn identity(bins: &Bins, node: &str, dir: &Dir, lifetime: Option<&str>) -> Result<Proc, Error> {
    let program = bins.require(IDENTITY)?;
    let path = |p: PathBuf| p.display().to_string();
    let mut args = vec![
        "--state-dir".to_string(),
        path(dir.identity()),
        "--listen".to_string(),
        identity_grpc().to_string(),
        "--admin-listen".to_string(),
        identity_admin().to_string(),
        "--bundle-file".to_string(),
        path(dir.trust_bundle()),
        "--tokens-file".to_string(),
        path(dir.tokens_file()),
        "--trust-domain".to_string(),
        contract::DEFAULT_TRUST_DOMAIN.to_string(),
    ];
    if let Some(l) = lifetime {
        args.extend(["--certificate-lifetime".to_string(), l.to_string()]);
    }
    let mut envs = BTreeMap::new();
    envs.insert(env::LOG.to_string(), "info".to_string());
    Ok(netns::spawn(&Spawn {
        netns: node,
        role: IDENTITY,
        program: &program,
        args: &args,
        env: &envs,
        uid: None,
        log: &dir.logs().join("trellis-identity.log"),
    })?)
}

/// Why the identity service is not ready (None when `/ready` answers 200
/// and the trust bundle is published).
pub fn identity_not_ready(st: &State, node: &str, dir: &Dir) -> Option<String> {
    let Some(p) = st.identity.as_ref() else {
        return Some("not started".into());
    };
    if !netns::alive(p) {
        return Some(format!("exited (see {})", p.log.display()));
    }
    if !dir.trust_bundle().exists() {
        return Some(format!(
            "{} not published yet",
            dir.trust_bundle().display()
        ));
    }
    match probe::http_get(node, identity_admin(), "/ready") {
        Ok((200, _)) => None,
        Ok((s, body)) => Some(format!("/ready answered {s}: {}", body.trim())),
        Err(e) => Some(format!("/ready: {e}")),
    }
}

/// The namespace and service account the controller runs as, as the
/// chart's defaults: its mesh identity.
pub const CONTROLLER_NAMESPACE: &str = "trellis";
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "trellis-controller";

/// The SPIFFE id the controller serves discovery under; proxies refuse any
/// other.
pub fn controller_identity() -> SpiffeId {
    SpiffeId::for_service_account(
        contract::DEFAULT_TRUST_DOMAIN,
        CONTROLLER_NAMESPACE,
        CONTROLLER_SERVICE_ACCOUNT,
    )
}

/// The controller's identity token (no pod can be named this: Kubernetes
/// names never start with a dot).
pub fn controller_token(dir: &Dir) -> PathBuf {
    dir.tokens().join(".controller")
}

/// Starts the controller in the node namespace, reading the sandbox's
/// manifest directory, with its own identity so it serves discovery over
/// mTLS (the identity service must be up and its token issued).
pub fn controller(bins: &Bins, node: &str, dir: &Dir) -> Result<Proc, Error> {
    let program = bins.require(CONTROLLER)?;
    let args = vec![
        "--manifests".to_string(),
        dir.manifests().display().to_string(),
        "--grpc-addr".to_string(),
        controller_grpc().to_string(),
        "--admin-addr".to_string(),
        controller_admin().to_string(),
    ];
    let mut envs = BTreeMap::new();
    envs.insert(env::LOG.to_string(), "info".to_string());
    envs.insert(env::IDENTITY_ADDR.into(), identity_grpc().to_string());
    envs.insert(
        env::IDENTITY_TOKEN.into(),
        controller_token(dir).display().to_string(),
    );
    envs.insert(
        env::TRUST_BUNDLE.into(),
        dir.trust_bundle().display().to_string(),
    );
    envs.insert(env::POD_NAMESPACE.into(), CONTROLLER_NAMESPACE.into());
    envs.insert(
        env::SERVICE_ACCOUNT.into(),
        CONTROLLER_SERVICE_ACCOUNT.into(),
    );
    envs.insert(
        env::TRUST_DOMAIN.into(),
        contract::DEFAULT_TRUST_DOMAIN.into(),
    );
    Ok(netns::spawn(&Spawn {
        netns: node,
        role: CONTROLLER,
        program: &program,
        args: &args,
        env: &envs,
        uid: None,
        log: &dir.logs().join("trellis-controller.log"),
    })?)
}

/// Why the controller is not ready (None when `/ready` answers 200).
pub fn controller_not_ready(st: &State, node: &str) -> Option<String> {
    let c = st.controller.as_ref()?;
    if !netns::alive(c) {
        return Some(format!("exited (see {})", c.log.display()));
    }
    match probe::http_get(node, controller_admin(), "/ready") {
        Ok((200, _)) => None,
        Ok((s, body)) => Some(format!("/ready answered {s}: {}", body.trim())),
        Err(e) => Some(format!("/ready: {e}")),
    }
}

/// Starts a pod's apps, then its sidecar when meshed.
pub fn pod_processes(
    bins: &Bins,
    st: &State,
    pod: &PodState,
    dir: &Dir,
) -> Result<Vec<Proc>, Error> {
    let mut procs = Vec::new();
    let log_of = |c: &str| {
        dir.logs()
            .join(format!("{}_{}_{c}.log", pod.plan.namespace, pod.plan.name))
    };
    for c in &pod.plan.containers {
        let (program, args) = app_command(bins, pod, c)?;
        let envs = app_env(st, pod, c);
        procs.push(netns::spawn(&Spawn {
            netns: &pod.netns,
            role: &c.name,
            program: Path::new(&program),
            args: &args,
            env: &envs,
            uid: None,
            log: &log_of(&c.name),
        })?);
    }
    if pod.meshed {
        let program = bins.require(PROXY)?;
        let envs = proxy_env(st, pod, dir);
        procs.push(netns::spawn(&Spawn {
            netns: &pod.netns,
            role: contract::PROXY_CONTAINER_NAME,
            program: &program,
            args: &["sidecar".to_string()],
            env: &envs,
            uid: Some(contract::PROXY_UID),
            log: &log_of(contract::PROXY_CONTAINER_NAME),
        })?);
    }
    Ok(procs)
}

/// What runs for a container: `trellis-echo` with the Deployment's args for
/// the conformance echo images, else the container's own command.
fn app_command(bins: &Bins, pod: &PodState, c: &Container) -> Result<(String, Vec<String>), Error> {
    if probe::is_echo_image(&c.image) {
        let program = bins.require(ECHO)?;
        return Ok((program.display().to_string(), probe::echo_args(c)));
    }
    let Some((program, rest)) = c.command.split_first() else {
        return Err(Error::NoCommand {
            pod: pod.key(),
            container: c.name.clone(),
            image: c.image.clone(),
        });
    };
    let mut args = rest.to_vec();
    args.extend(c.args.iter().cloned());
    Ok((program.clone(), args))
}

/// A container's environment: what the echo server reads, then the
/// manifest's `env` (literal values and the downward-API fields).
fn app_env(st: &State, pod: &PodState, c: &Container) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("NAMESPACE".into(), pod.plan.namespace.clone());
    out.insert("POD_NAME".into(), pod.plan.name.clone());
    let service = if pod.plan.owner.is_empty() {
        pod.plan.name.clone()
    } else {
        pod.plan.owner.clone()
    };
    out.insert("SERVICE_NAME".into(), service);
    out.insert("HOSTNAME".into(), pod.plan.name.clone());
    for e in &c.env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => field_ref(st, pod, from),
            _ => None,
        };
        if let Some(v) = value {
            out.insert(e.name.clone(), v);
        }
    }
    out
}

/// The downward API fields a sandbox knows.
fn field_ref(_st: &State, pod: &PodState, from: &Value) -> Option<String> {
    match from["fieldRef"]["fieldPath"].as_str()? {
        "metadata.name" => Some(pod.plan.name.clone()),
        "metadata.namespace" => Some(pod.plan.namespace.clone()),
        "metadata.uid" => Some(pod.uid.clone()),
        "spec.serviceAccountName" => Some(pod.plan.service_account.clone()),
        "spec.nodeName" => Some("trellis-node".into()),
        "status.podIP" => pod.ip.map(|ip| ip.to_string()),
        "status.hostIP" => Some(POD_GATEWAY.to_string()),
        path => path
            .strip_prefix("metadata.labels['")
            .and_then(|p| p.strip_suffix("']"))
            .and_then(|k| pod.plan.labels.get(k).cloned()),
    }
}

/// The sidecar's environment, as the injector sets it: the controller, the
/// identity service with the pod's token and the trust bundle, the pod.
pub fn proxy_env(st: &State, pod: &PodState, dir: &Dir) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(env::CONTROLLER_ADDR.into(), controller_grpc().to_string());
    out.insert(
        env::CONTROLLER_IDENTITY.into(),
        controller_identity().to_string(),
    );
    out.insert(env::IDENTITY_ADDR.into(), identity_grpc().to_string());
    out.insert(
        env::IDENTITY_TOKEN.into(),
        crate::identity::token_path(dir, pod).display().to_string(),
    );
    out.insert(
        env::TRUST_BUNDLE.into(),
        dir.trust_bundle().display().to_string(),
    );
    out.insert(env::POD_NAMESPACE.into(), pod.plan.namespace.clone());
    out.insert(env::POD_NAME.into(), pod.plan.name.clone());
    out.insert(
        env::POD_IP.into(),
        pod.ip.map(|ip| ip.to_string()).unwrap_or_default(),
    );
    out.insert(
        env::SERVICE_ACCOUNT.into(),
        pod.plan.service_account.clone(),
    );
    out.insert(
        env::TRUST_DOMAIN.into(),
        contract::DEFAULT_TRUST_DOMAIN.into(),
    );
    out.insert(
        env::CLUSTER_DOMAIN.into(),
        contract::DEFAULT_CLUSTER_DOMAIN.into(),
    );
    let level = pod
        .plan
        .annotations
        .get(contract::key::PROXY_LOG_LEVEL)
        .cloned()
        .unwrap_or_else(|| "info".into());
    out.insert(env::LOG.into(), level);
    let _ = st;
    out
}

/// Why the controller's view lags the sandbox's (None when it has caught
/// up): every ready endpoint of every Service must appear in the policy the
/// controller serves for some Service port, as proxies would receive it.
pub fn controller_lags(st: &State, node: &str) -> Option<String> {
    let mut expected = std::collections::BTreeSet::new();
    let mut observed = std::collections::BTreeSet::new();
    for (svc, ip) in crate::cluster::services(st) {
        let Some(ip) = ip else { continue };
        for port in &svc.ports {
            for pod in st.pods.values().filter(|p| p.ready && svc.selects(&p.plan)) {
                if let (Some(pip), Some(t)) = (pod.ip, pod.plan.resolve_port(&port.target())) {
                    expected.insert(format!("{pip}:{t}"));
                }
            }
            let path = format!(
                "/policy?ip={ip}&port={}&namespace={}",
                port.port, svc.namespace
            );
            match probe::http_get(node, controller_admin(), &path) {
                Ok((200, body)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&body) {
                        collect_addrs(&v, &mut observed);
                    }
                }
                Ok((s, body)) => return Some(format!("{path} answered {s}: {}", body.trim())),
                Err(e) => return Some(format!("{path}: {e}")),
            }
        }
    }
    let missing: Vec<&String> = expected.difference(&observed).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "has not published endpoints {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn collect_addrs(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(a)) = m.get("addr") {
                out.insert(a.clone());
            }
            m.values().for_each(|x| collect_addrs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_addrs(x, out)),
        _ => {}
    }
}
