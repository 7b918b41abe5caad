//! `trellis-cni`: the chained CNI plugin (spec 1.0.0) that installs the
//! capture rules of `trellis-capture` in a meshed pod's network namespace.
//! A container runtime runs it after the plugins that give the pod its
//! interface and address (`bridge` + `host-local` in the sandbox).
//!
//! ```text
//! env (CNI_COMMAND, CNI_NETNS, CNI_ARGS …) + config JSON on stdin
//!   → spec::Invocation, config::NetConf            (errors → spec JSON, code)
//!   → ADD/CHECK: PodSource (dir of Pod JSON | API server) → PodInfo
//!       meshed? → capture config + annotations → plan
//!       → netns::run_in(CNI_NETNS, apply | check)
//!     DEL: netns::run_in(CNI_NETNS, remove)          (no pod lookup needed)
//!   → stdout: prevResult unchanged (ADD), nothing (DEL, CHECK), version info
//! ```
//!
//! docs/decisions.md ("CNI and capture") has the configuration and the
//! pod-metadata file format.

pub mod config;
pub mod install;
pub mod pod;
pub mod source;
pub mod spec;

use config::NetConf;
use source::PodSource;
use spec::{CURRENT_VERSION, CniError, Command, Invocation, Vars, code};
use std::path::Path;
use trellis_capture::{ApplyError, apply, check, netns, plan, remove};

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
}

/// One invocation: the environment and stdin in, stdout and status out.
/// `sources` picks the pod-metadata source for a configuration (tests may
/// substitute one).
pub fn run(
    vars: &dyn Vars,
    stdin: &[u8],
    sources: &dyn Fn(&config::MetadataSource) -> Box<dyn PodSource>,
) -> Outcome {
    match handle(vars, stdin, sources) {
        Ok(stdout) => Outcome { stdout, status: 0 },
        Err(e) => {
            let version = config::version_of(stdin)
                .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| CURRENT_VERSION.to_string());
            tracing::error!(code = e.code, "{}", e.msg);
            Outcome {
                stdout: e.to_json(&version),
                status: 1,
            }
        }
    }
}

fn handle(
    vars: &dyn Vars,
    stdin: &[u8],
    sources: &dyn Fn(&config::MetadataSource) -> Box<dyn PodSource>,
) -> Result<String, CniError> {
    let inv = Invocation::from_vars(vars)?;
    if inv.command == Command::Version {
        return Ok(spec::version_info());
    }
    let conf = NetConf::parse(stdin)?;
    init_logging(&conf.log_level);
    match inv.command {
        Command::Add => add(&inv, &conf, sources),
        Command::Del => del(&inv, &conf).map(|()| String::new()),
        Command::Check => check_pod(&inv, &conf, sources).map(|()| String::new()),
        Command::Version => Ok(spec::version_info()),
    }
}

/// Logs go to stderr, which runtimes keep; stdout is the protocol's.
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn prev_result<'a>(conf: &'a NetConf, command: &str) -> Result<&'a str, CniError> {
    conf.prev_result.as_deref().map(|r| r.get()).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("{command} without prevResult: trellis-cni runs chained after the plugin that sets up the pod's interface"),
        )
    })
}

fn add(
    inv: &Invocation,
    conf: &NetConf,
    sources: &dyn Fn(&config::MetadataSource) -> Box<dyn PodSource>,
) -> Result<String, CniError> {
    let prev = prev_result(conf, "ADD")?.to_string();
    let Some(capture) = pod_plan(inv, conf, sources)? else {
        return Ok(prev);
    };
    in_netns(&inv.netns, || apply(&capture, conf.backend))?.map_err(rules_failed)?;
    tracing::info!(pod = ?inv.args.pod(), netns = inv.netns, "capture rules installed");
    Ok(prev)
}

fn del(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    if inv.netns.is_empty() || !Path::new(&inv.netns).exists() {
        tracing::debug!(netns = inv.netns, "no network namespace: nothing to remove");
        return Ok(());
    }
    let families = conf.capture.families;
    match netns::run_in(Path::new(&inv.netns), || remove(families, conf.backend)) {
        Ok(result) => result.map_err(rules_failed),
        // Gone between the check and the call: its rules went with it.
        Err(netns::NetnsError::NotFound { .. }) => Ok(()),
        Err(e) => Err(CniError::new(code::IO_FAILURE, e.to_string())),
    }
}

fn check_pod(
    inv: &Invocation,
    conf: &NetConf,
    sources: &dyn Fn(&config::MetadataSource) -> Box<dyn PodSource>,
) -> Result<(), CniError> {
    if !conf.supports_check() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, not {}",
                conf.cni_version
            ),
        ));
    }
    prev_result(conf, "CHECK")?;
    let Some(capture) = pod_plan(inv, conf, sources)? else {
        return Ok(());
    };
    in_netns(&inv.netns, || check(&capture, conf.backend))?.map_err(|e| match e {
        ApplyError::Mismatch { .. } => CniError::new(code::RULES_DIFFER, e.to_string()),
        other => rules_failed(other),
    })
}

/// The pod's capture plan, or `None` when the plugin leaves it alone (not a
/// Kubernetes pod, or not meshed).
fn pod_plan(
    inv: &Invocation,
    conf: &NetConf,
    sources: &dyn Fn(&config::MetadataSource) -> Box<dyn PodSource>,
) -> Result<Option<trellis_capture::Plan>, CniError> {
    let Some((namespace, name)) = inv.args.pod() else {
        tracing::debug!("no K8S_POD_NAME in CNI_ARGS: not a Kubernetes pod");
        return Ok(None);
    };
    let pod = sources(&conf.source).pod(namespace, name)?;
    if !pod.is_meshed() {
        tracing::debug!(namespace, name, "pod is not meshed");
        return Ok(None);
    }
    let capture = pod.capture_config(&conf.capture).map_err(|e| CniError {
        msg: format!("pod {namespace}/{name}: {}", e.msg),
        ..e
    })?;
    Ok(Some(plan(&capture)))
}

fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> Result<T, CniError> {
    netns::run_in(Path::new(path), f).map_err(|e| match e {
        netns::NetnsError::NotFound { .. } => CniError::new(code::UNKNOWN_CONTAINER, e.to_string()),
        other => CniError::new(code::IO_FAILURE, other.to_string()),
    })
}

fn rules_failed(e: ApplyError) -> CniError {
    CniError::new(code::RULES_FAILED, "capture rules could not be changed").details(e.to_string())
}

/// The binary: environment, arguments and stdin of this process in, the
/// outcome on stdout; returns the exit status.
pub fn process_main() -> i32 {
    use std::io::{Read, Write};
    // Runtimes never pass arguments; a person typing them gets one line.
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--version" {
            println!("trellis-cni {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        if arg == "install" || arg == "uninstall" {
            return install::main(&std::env::args().skip(1).collect::<Vec<_>>());
        }
        eprintln!(
            "trellis-cni: unexpected argument {arg:?}: this is a CNI plugin, run by a container runtime with CNI_COMMAND in the environment and the network configuration on stdin"
        );
        return trellis_api::contract::EXIT_USAGE;
    }
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&spec::ProcessVars, &stdin, &source::from_config),
        Err(e) => Outcome {
            stdout: CniError::new(code::IO_FAILURE, format!("reading stdin: {e}"))
                .to_json(CURRENT_VERSION),
            status: 1,
        },
    };
    let mut out = std::io::stdout().lock();
    // A runtime that stopped reading has given up on this invocation.
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    outcome.status
}
