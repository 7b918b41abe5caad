//! The sandbox's life cycle: `up`, `apply`, `delete`, `down`, `status` and
//! `exec`, each a short-lived call working on the on-disk [`State`] under
//! the sandbox's lock, so that any process (`trellisctl`, a test) can drive a
//! sandbox another one made.
//!
//! ```text
//! up:    preflight → node netns + bridge → controller → identity (wait for the
//!        trust bundle) → reconcile → wait ready
//! apply: load → add/replace objects → reconcile → wait ready
//! reconcile: ClusterIPs → pods gone: stop, CNI DEL, delete netns
//!            → new pods: netns, CNI ADD (loopback; bridge+host-local → trellis-cni)
//!            → gateways gone: stop; new gateways: an address each
//!            → hosts files, Service NAT, controller directory
//!            → tokens of meshed pods and gateways → start apps + sidecars, gateway proxies
//! ```

use crate::cluster;
use crate::cni;
use crate::gateway;
use crate::identity;
use crate::manifest::{self, Object, PodPlan};
use crate::names::{self, SandboxName};
use crate::netns;
use crate::probe;
use crate::spawn::{self, Bins};
use crate::state::{self, Dir, PodState, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the sandbox needs root (network namespaces, CNI plugins, iptables): run it with sudo")]
    NotRoot,
    #[error(
        "{file} is missing: install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingTool { file: String, package: String },
    #[error(transparent)]
    Names(#[from] names::Error),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error(transparent)]
    Cni(#[from] cni::Error),
    #[error(transparent)]
    Spawn(#[from] spawn::Error),
    #[error(transparent)]
    Identity(#[from] identity::Error),
    #[error("pod {0} has no IP address in its CNI result")]
    NoIp(String),
    #[error("no pod matches {0:?} (give `name`, `namespace/name` or a Deployment name)")]
    NoPod(String),
    #[error("{0:?} names Deployments in several namespaces: give one of {1}")]
    Ambiguous(String, String),
    #[error("{what} not ready after {secs} s:\n  {details}")]
    NotReady {
        what: String,
        secs: u64,
        details: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to make a sandbox.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: SandboxName,
    /// Mesh every namespace, labelled or not.
    pub mesh_all: bool,
    /// Where the Trellis binaries are (default: next to the running executable).
    pub bin_dir: Option<PathBuf>,
    /// How long `up`/`apply` wait for readiness.
    pub timeout: Duration,
    /// Lifetime of the workload certificates identity issues (a Gateway API
    /// duration such as `40s`); its default (24h) when `None`. Short
    /// lifetimes make renewals happen while a test watches.
    pub certificate_lifetime: Option<String>,
}

impl Options {
    pub fn new(name: &str) -> Result<Self, Error> {
        Ok(Self {
            name: SandboxName::new(name)?,
            mesh_all: false,
            bin_dir: None,
            timeout: Duration::from_secs(90),
            certificate_lifetime: None,
        })
    }
}

/// Tools the sandbox runs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/lib/cni/bridge", cni::SYSTEM_PLUGIN_PACKAGE),
    ("/usr/lib/cni/host-local", cni::SYSTEM_PLUGIN_PACKAGE),
    ("/usr/lib/cni/loopback", cni::SYSTEM_PLUGIN_PACKAGE),
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/sbin/iptables-restore", "iptables"),
    ("/usr/bin/setpriv", "util-linux"),
];

/// Checks what the sandbox needs from the system, with a message that says
/// how to fix it.
pub fn preflight() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    for (file, package) in TOOLS {
        if !std::path::Path::new(file).exists() {
            return Err(Error::MissingTool {
                file: file.to_string(),
                package: package.to_string(),
            });
        }
    }
    Ok(())
}

/// A handle on an existing sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub name: SandboxName,
    pub dir: Dir,
}

impl Sandbox {
    pub fn open(name: &str) -> Result<Self, Error> {
        let name = SandboxName::new(name)?;
        let dir = Dir::of(&name);
        Ok(Self { name, dir })
    }

    pub fn state(&self) -> Result<State, Error> {
        Ok(self.dir.load(self.name.as_str())?)
    }

    /// Brings a sandbox up from manifests; returns once every pod is ready.
    pub fn up(opts: &Options, paths: &[PathBuf]) -> Result<(Self, State), Error> {
        preflight()?;
        let objects = manifest::read_paths(paths)?;
        let bins = Bins::discover(opts.bin_dir.as_deref())?;
        let sb = Self {
            name: opts.name.clone(),
            dir: Dir::of(&opts.name),
        };
        let _lock = sb.dir.lock()?;
        if sb.dir.exists() {
            return Err(state::Error::Exists(opts.name.to_string()).into());
        }
        sb.dir.create()?;
        let mut st = State::new(&opts.name, opts.mesh_all, bins.dir.clone());
        st.certificate_lifetime = opts.certificate_lifetime.clone();
        let node = opts.name.node_netns();
        st.netns.push(node.clone());
        sb.dir.save(&st)?;
        netns::add(&node)?;
        make_bridge(&node)?;
        identity::issue_file(&spawn::controller_token(&sb.dir))?;
        sb.start_identity(&mut st, &bins, opts.timeout)?;
        let controller = spawn::controller(&bins, &node, &sb.dir)?;
        st.controller = Some(controller);
        sb.dir.save(&st)?;
        merge(&mut st, objects);
        sb.reconcile(&mut st, &bins)?;
        sb.wait_ready(&mut st, opts.timeout)?;
        Ok((sb, st))
    }

    /// Starts the identity service and waits until it serves and has
    /// published the trust bundle, which sidecars read at start.
    fn start_identity(&self, st: &mut State, bins: &Bins, timeout: Duration) -> Result<(), Error> {
        identity::write_tokens_file(&self.dir, st)?;
        let node = self.name.node_netns();
        let proc = spawn::identity(bins, &node, &self.dir, st.certificate_lifetime.as_deref())?;
        st.identity = Some(proc);
        self.dir.save(st)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(reason) = spawn::identity_not_ready(st, &node, &self.dir) else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: "trellis-identity".into(),
                    secs: timeout.as_secs(),
                    details: reason,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the identity service and starts it again from its state
    /// directory (same CA, same bundle); returns once it serves. Sidecars
    /// keep their certificates meanwhile and retry renewals.
    pub fn restart_identity(&self, timeout: Duration) -> Result<(), Error> {
        let _lock = self.dir.lock()?;
        let mut st = self.state()?;
        let bins = Bins::discover(Some(&st.bin_dir))?;
        if let Some(p) = st.identity.take() {
            netns::kill(&p, Duration::from_secs(3));
        }
        self.dir.save(&st)?;
        self.start_identity(&mut st, &bins, timeout)
    }

    /// Adds or replaces objects; returns once every pod is ready again.
    pub fn apply(&self, paths: &[PathBuf], timeout: Duration) -> Result<State, Error> {
        preflight()?;
        let objects = manifest::read_paths(paths)?;
        let _lock = self.dir.lock()?;
        let mut st = self.state()?;
        let bins = Bins::discover(Some(&st.bin_dir))?;
        merge(&mut st, objects);
        self.reconcile(&mut st, &bins)?;
        self.wait_ready(&mut st, timeout)?;
        Ok(st)
    }

    /// Removes the objects named in the manifests (pods of removed
    /// Deployments stop and their namespaces go).
    pub fn delete(&self, paths: &[PathBuf], timeout: Duration) -> Result<State, Error> {
        preflight()?;
        let keys: BTreeSet<manifest::Key> = manifest::read_paths(paths)?
            .iter()
            .map(Object::key)
            .collect();
        let _lock = self.dir.lock()?;
        let mut st = self.state()?;
        let bins = Bins::discover(Some(&st.bin_dir))?;
        st.objects.retain(|o| !keys.contains(&o.key()));
        self.reconcile(&mut st, &bins)?;
        self.wait_ready(&mut st, timeout)?;
        Ok(st)
    }

    /// Brings the state on disk in line with the objects: pods, addresses,
    /// names, NAT, the controller's directory, processes.
    fn reconcile(&self, st: &mut State, bins: &Bins) -> Result<(), Error> {
        // ClusterIPs, as the API server allocates them.
        let services: Vec<(String, Option<String>)> = st
            .objects
            .iter()
            .filter(|o| o.kind() == "Service")
            .filter_map(|o| manifest::Service::from_object(o).ok())
            .filter(|s| s.cluster_ip.as_deref() != Some("None"))
            .map(|s| (format!("{}/{}", s.namespace, s.name), s.cluster_ip))
            .collect();
        let wanted: BTreeSet<&String> = services.iter().map(|(k, _)| k).collect();
        st.cluster_ips.retain(|k, _| wanted.contains(k));
        for (key, requested) in &services {
            if !st.cluster_ips.contains_key(key) {
                let taken = gateway::taken(st);
                let ip = cluster::allocate_cluster_ip(key, requested.as_deref(), &taken);
                st.cluster_ips.insert(key.clone(), ip);
            }
        }
        // Pods: what the objects ask for versus what runs.
        let mut plans: BTreeMap<String, PodPlan> = BTreeMap::new();
        for obj in &st.objects {
            for plan in manifest::pods_of(obj)? {
                plans.insert(format!("{}/{}", plan.namespace, plan.name), plan);
            }
        }
        let gone: Vec<String> = st
            .pods
            .keys()
            .filter(|k| !plans.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(pod) = st.pods.get(&key).cloned() {
                self.teardown_pod(st, &pod);
                identity::revoke(&self.dir, &pod);
            }
            st.pods.remove(&key);
            self.dir.save(st)?;
        }
        let mut new = Vec::new();
        for (key, plan) in plans {
            if st.pods.contains_key(&key) {
                continue;
            }
            let netns = self.name.pod_netns(&plan.namespace, &plan.name);
            let pod = PodState {
                meshed: cluster::pod_meshed(st, &plan),
                container_id: names::container_id(&self.name, &plan.namespace, &plan.name),
                uid: uid_of(&self.name, &plan),
                netns: netns.clone(),
                plan,
                ip: None,
                cni_result: None,
                procs: Vec::new(),
                ready: false,
            };
            st.netns.push(netns);
            st.pods.insert(key.clone(), pod);
            self.dir.save(st)?;
            self.wire_pod(st, &key, bins)?;
            new.push(key);
        }
        let node = self.name.node_netns();
        gateway::remove_unwanted(st, &node, &self.dir);
        let new_gateways = gateway::plan_new(st);
        self.dir.save(st)?;
        self.publish(st)?;
        // Tokens first: a sidecar asks for its certificate as it starts.
        for key in &new {
            let pod = &st.pods[key];
            if pod.meshed {
                identity::issue(&self.dir, pod)?;
            }
        }
        for key in &new_gateways {
            gateway::prepare(&st.gateways[key], &node, &self.dir)?;
        }
        identity::write_tokens_file(&self.dir, st)?;
        for key in new {
            let procs = {
                let pod = &st.pods[&key];
                spawn::pod_processes(bins, st, pod, &self.dir)?
            };
            if let Some(pod) = st.pods.get_mut(&key) {
                pod.procs = procs;
            }
            self.dir.save(st)?;
        }
        for key in new_gateways {
            let proc = gateway::start(bins, &st.gateways[&key], &node, &self.dir)?;
            if let Some(g) = st.gateways.get_mut(&key) {
                g.proc = Some(proc);
            }
            self.dir.save(st)?;
        }
        Ok(())
    }

    /// Network namespace, pod metadata for trellis-cni, CNI ADD.
    fn wire_pod(&self, st: &mut State, key: &str, bins: &Bins) -> Result<(), Error> {
        let pod = st.pods[key].clone();
        netns::add(&pod.netns)?;
        netns::write_hosts(&pod.netns, &cluster::hosts_file(st, &pod))?;
        self.write_pod_metadata(st, &pod)?;
        let node = self.name.node_netns();
        let path = bins.cni_path();
        let mut t = cni::Target {
            node_netns: &node,
            container_id: &pod.container_id,
            netns: &pod.netns,
            ifname: "lo",
            namespace: &pod.plan.namespace,
            pod: &pod.plan.name,
            pod_uid: &pod.uid,
            path: &path,
        };
        cni::add(&cni::loopback_config(), &t)?;
        t.ifname = names::POD_IFNAME;
        let result = cni::add(&cluster::cni_conflist(&self.dir.root), &t)?;
        let ip = cni::result_ipv4(&result).ok_or_else(|| Error::NoIp(key.to_string()))?;
        if let Some(p) = st.pods.get_mut(key) {
            p.ip = Some(ip);
            p.cni_result = Some(result);
        }
        self.dir.save(st)?;
        Ok(())
    }

    /// What trellis-cni reads for a pod: the Pod object, as the API server
    /// would return it, at `pods/<namespace>/<name>.json`.
    fn write_pod_metadata(&self, st: &State, pod: &PodState) -> Result<(), Error> {
        let dir = self.dir.pods().join(&pod.plan.namespace);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{}.json", pod.plan.name));
        let body = cluster::pod_object(st, pod).to_string();
        Ok(state::write_atomic(&path, body.as_bytes())?)
    }

    /// Stops a pod and removes everything it had (tolerant of half-made pods).
    fn teardown_pod(&self, st: &State, pod: &PodState) {
        for p in &pod.procs {
            netns::kill(p, Duration::from_secs(3));
        }
        if netns::exists(&pod.netns) {
            netns::kill_all_in(&pod.netns);
            if let Ok(bins) = Bins::discover(Some(&st.bin_dir)) {
                let node = self.name.node_netns();
                let path = bins.cni_path();
                let mut t = cni::Target {
                    node_netns: &node,
                    container_id: &pod.container_id,
                    netns: &pod.netns,
                    ifname: names::POD_IFNAME,
                    namespace: &pod.plan.namespace,
                    pod: &pod.plan.name,
                    pod_uid: &pod.uid,
                    path: &path,
                };
                if let Err(e) = cni::del(
                    &cluster::cni_conflist(&self.dir.root),
                    &t,
                    pod.cni_result.as_ref(),
                ) {
                    tracing::warn!("{e}");
                }
                t.ifname = "lo";
                let _ = cni::del(&cni::loopback_config(), &t, None);
            }
        }
        if let Err(e) = netns::delete(&pod.netns) {
            tracing::warn!("{e}");
        }
        let _ = std::fs::remove_file(
            self.dir
                .pods()
                .join(&pod.plan.namespace)
                .join(format!("{}.json", pod.plan.name)),
        );
    }

    /// Writes what the control plane computes: hosts files, Service NAT in
    /// every pod, the controller's directory.
    fn publish(&self, st: &State) -> Result<(), Error> {
        let nat = cluster::service_nat(st);
        for pod in st.pods.values() {
            if !netns::exists(&pod.netns) {
                continue;
            }
            netns::write_hosts(&pod.netns, &cluster::hosts_file(st, pod))?;
            netns::run_input(
                "ip",
                &["netns", "exec", &pod.netns, "nft", "-f", "-"],
                Some(&nat),
            )?;
            self.write_pod_metadata(st, pod)?;
        }
        self.write_controller_dir(st)
    }

    fn write_controller_dir(&self, st: &State) -> Result<(), Error> {
        let dir = self.dir.manifests();
        let files = cluster::controller_files(st);
        for (name, body) in &files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str()) {
                state::write_atomic(&path, body.as_bytes())?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') && !files.contains_key(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Probes every pod until all are ready (publishing each change of
    /// readiness, as EndpointSlices and Pod status would change), and the
    /// controller answers `/ready`.
    pub fn wait_ready(&self, st: &mut State, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let node = self.name.node_netns();
        loop {
            let mut reasons = Vec::new();
            let mut changed = false;
            for pod in st.pods.values_mut() {
                let reason = probe::not_ready_reason(&node, pod);
                let ready = reason.is_none();
                if ready != pod.ready {
                    pod.ready = ready;
                    changed = true;
                }
                if let Some(r) = reason {
                    reasons.push(format!("{}: {r}", pod.key()));
                }
            }
            if let Some(r) = spawn::controller_not_ready(st, &node) {
                reasons.push(format!("trellis-controller: {r}"));
            }
            if let Some(r) = spawn::identity_not_ready(st, &node, &self.dir) {
                reasons.push(format!("trellis-identity: {r}"));
            }
            for (key, reason) in gateway_readiness(st, &node, &mut changed) {
                reasons.push(format!("gateway {key}: {reason}"));
            }
            if changed {
                self.publish(st)?;
                self.dir.save(st)?;
            }
            // Ready as far as the pods go: done once the controller serves
            // what was just published, as "up" promises sidecars can get it.
            if reasons.is_empty()
                && !changed
                && let Some(r) = spawn::controller_lags(st, &node)
            {
                reasons.push(format!("trellis-controller: {r}"));
            }
            if reasons.is_empty() && !changed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: format!("sandbox {}", self.name),
                    secs: timeout.as_secs(),
                    details: reasons.join("\n  "),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Re-probes readiness once and publishes changes (for `status`).
    pub fn refresh(&self) -> Result<State, Error> {
        let _lock = self.dir.lock()?;
        let mut st = self.state()?;
        let node = self.name.node_netns();
        let mut changed = false;
        for pod in st.pods.values_mut() {
            let ready = probe::not_ready_reason(&node, pod).is_none();
            changed |= ready != pod.ready;
            pod.ready = ready;
        }
        gateway_readiness(&mut st, &node, &mut changed);
        if changed {
            self.publish(&st)?;
            self.dir.save(&st)?;
        }
        Ok(st)
    }

    /// Finds a pod by `name`, `namespace/name`, or Deployment name (its first
    /// replica).
    pub fn find_pod(st: &State, query: &str) -> Result<PodState, Error> {
        let (ns, name) = match query.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, query),
        };
        let in_ns = |p: &&PodState| ns.is_none_or(|ns| p.plan.namespace == ns);
        if let Some(p) = st.pods.values().filter(in_ns).find(|p| p.plan.name == name) {
            return Ok(p.clone());
        }
        let replicas: Vec<&PodState> = st
            .pods
            .values()
            .filter(in_ns)
            .filter(|p| p.plan.owner == name)
            .collect();
        let namespaces: BTreeSet<&str> =
            replicas.iter().map(|p| p.plan.namespace.as_str()).collect();
        if namespaces.len() > 1 {
            return Err(Error::Ambiguous(
                query.to_string(),
                namespaces
                    .iter()
                    .map(|ns| format!("{ns}/{name}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        replicas
            .into_iter()
            .min_by(|a, b| a.plan.name.cmp(&b.plan.name))
            .cloned()
            .ok_or_else(|| Error::NoPod(query.to_string()))
    }

    /// Runs a command in a pod's namespace with the terminal attached; its
    /// exit status.
    pub fn exec(&self, pod: &str, cmd: &[String]) -> Result<i32, Error> {
        let st = self.state()?;
        let pod = Self::find_pod(&st, pod)?;
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &pod.netns])
            .args(cmd)
            .status()
            .map_err(|source| netns::Error::Spawn {
                cmd: format!("ip netns exec {} {}", pod.netns, cmd.join(" ")),
                source,
            })?;
        Ok(status.code().unwrap_or(128))
    }

    /// Removes every process, namespace, interface and file of the sandbox,
    /// whether or not an earlier run finished; the problems it met.
    pub fn down(name: &str) -> Result<Vec<String>, Error> {
        let name = SandboxName::new(name)?;
        let dir = Dir::of(&name);
        let mut problems = Vec::new();
        let _lock = dir.lock()?;
        let st = dir.load(name.as_str()).ok();
        let sb = Self {
            name: name.clone(),
            dir: dir.clone(),
        };
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        if let Some(st) = &st {
            for pod in st.pods.values() {
                sb.teardown_pod(st, pod);
            }
            if let Some(c) = &st.controller {
                netns::kill(c, Duration::from_secs(3));
            }
            if let Some(p) = &st.identity {
                netns::kill(p, Duration::from_secs(3));
            }
            for g in st.gateways.values() {
                gateway::stop(g, &name.node_netns(), &dir);
            }
            namespaces.extend(st.netns.iter().cloned());
        }
        namespaces.insert(name.node_netns());
        namespaces.extend(orphan_namespaces(&name));
        for ns in &namespaces {
            netns::kill_all_in(ns);
            if let Err(e) = netns::delete(ns) {
                problems.push(e.to_string());
            }
        }
        if dir.root.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir.root)
        {
            problems.push(format!("cannot remove {}: {e}", dir.root.display()));
        }
        Ok(problems)
    }
}

/// Namespaces named like this sandbox's pods that no state records (a crash
/// between `ip netns add` and saving), excluding those another sandbox owns.
fn orphan_namespaces(name: &SandboxName) -> Vec<String> {
    let prefix = format!("{}{}-", names::NETNS_PREFIX, name);
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return Vec::new();
    };
    let mut owned_elsewhere = BTreeSet::new();
    if let Ok(dirs) = std::fs::read_dir(names::STATE_ROOT) {
        for d in dirs.flatten() {
            let other = d.file_name().to_string_lossy().to_string();
            if other == name.as_str() {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(d.path().join("state.json"))
                && let Ok(st) = serde_json::from_str::<State>(&text)
            {
                owned_elsewhere.extend(st.netns);
            }
            owned_elsewhere.insert(format!("{}{other}-node", names::NETNS_PREFIX));
        }
    }
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && !owned_elsewhere.contains(n))
        .collect()
}

/// Probes every gateway proxy, records its readiness (`changed` when one
/// changed) and returns why those not ready are not.
fn gateway_readiness(st: &mut State, node: &str, changed: &mut bool) -> Vec<(String, String)> {
    let reasons: Vec<(String, Option<String>)> = st
        .gateways
        .iter()
        .map(|(k, g)| (k.clone(), gateway::not_ready_reason(st, g, node)))
        .collect();
    let mut out = Vec::new();
    for (key, reason) in reasons {
        if let Some(g) = st.gateways.get_mut(&key) {
            *changed |= g.ready != reason.is_none();
            g.ready = reason.is_none();
        }
        if let Some(r) = reason {
            out.push((key, r));
        }
    }
    out
}

/// Adds objects, replacing those with the same kind, namespace and name.
fn merge(st: &mut State, objects: Vec<Object>) {
    for obj in objects {
        match st.objects.iter_mut().find(|o| o.key() == obj.key()) {
            Some(old) => *old = obj,
            None => st.objects.push(obj),
        }
    }
}

/// A stable pod UID (UUID-shaped) for the sandbox and pod.
fn uid_of(name: &SandboxName, plan: &PodPlan) -> String {
    let h = names::short_hash(&format!("uid/{name}/{}/{}", plan.namespace, plan.name), 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The node bridge with the pods' gateway address (the CNI bridge plugin
/// finds and uses it); nothing else in the node namespace routes anywhere.
fn make_bridge(node: &str) -> Result<(), Error> {
    let br = names::BRIDGE;
    let have = netns::run("ip", &["-n", node, "link", "show", br]).is_ok();
    if !have {
        netns::run("ip", &["-n", node, "link", "add", br, "type", "bridge"])?;
        let cidr = format!("{}/{}", cluster::POD_GATEWAY, cluster::POD_PREFIX);
        netns::addr(node, "add", &cidr, br)?;
    }
    netns::run("ip", &["-n", node, "link", "set", br, "up"])?;
    Ok(())
}
