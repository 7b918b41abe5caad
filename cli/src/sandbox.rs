//! `trellisctl sandbox up|apply|delete|exec|status|down`: a real mesh on this
//! host in network namespaces (see the `trellis-sandbox` crate).

use crate::table;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trellis_sandbox::state::State;
use trellis_sandbox::{Options, Sandbox};

/// Run a local Trellis mesh in network namespaces (needs root).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Name {
    /// The sandbox's name (sandboxes with different names run side by side).
    #[arg(long)]
    name: String,
}

#[derive(Debug, clap::Args)]
struct Files {
    /// Manifest files or directories (YAML or JSON, several documents each).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// How long to wait for every pod to be ready, in seconds.
    #[arg(long, default_value_t = 90)]
    timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a sandbox from manifests; returns once every pod is ready.
    Up {
        #[command(flatten)]
        name: Name,
        #[command(flatten)]
        files: Files,
        /// Mesh every namespace (the default: a sandbox is a mesh on one
        /// host, and manifests written for any cluster, such as the upstream
        /// conformance ones, get sidecars). Pods annotated
        /// `trellis.io/inject: disabled` still opt out.
        #[arg(long, conflicts_with = "labelled_only")]
        mesh_all: bool,
        /// Mesh only namespaces labelled `trellis.io/inject: enabled`, as the
        /// injector's webhook selects them in a cluster.
        #[arg(long)]
        labelled_only: bool,
        /// Where the Trellis binaries are (default: next to trellisctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Add or change objects of a running sandbox.
    Apply {
        #[command(flatten)]
        name: Name,
        #[command(flatten)]
        files: Files,
    },
    /// Remove the objects named in the manifests.
    Delete {
        #[command(flatten)]
        name: Name,
        #[command(flatten)]
        files: Files,
    },
    /// Run a command in a pod's network namespace (POD: name, namespace/name, or a Deployment).
    Exec {
        #[command(flatten)]
        name: Name,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show the pods, their addresses and readiness.
    Status {
        #[command(flatten)]
        name: Name,
    },
    /// Remove every namespace, process and file of the sandbox (also after a crash).
    Down {
        #[command(flatten)]
        name: Name,
    },
}

/// Whether `up` meshes every namespace: unless `--labelled-only`.
fn meshes_all(labelled_only: bool) -> bool {
    !labelled_only
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Up {
            name,
            files,
            mesh_all: _,
            labelled_only,
            bin_dir,
        } => {
            let mut opts = Options::new(&name.name)?;
            opts.mesh_all = meshes_all(labelled_only);
            opts.bin_dir = bin_dir;
            opts.timeout = Duration::from_secs(files.timeout);
            let (_, st) = Sandbox::up(&opts, &files.files).with_context(|| {
                format!(
                    "bringing up sandbox {} (clean up with `trellisctl sandbox down --name {}`)",
                    name.name, name.name
                )
            })?;
            print!("{}", pods_table(&st));
            print!("{}", gateways_table(&st));
        }
        Command::Apply { name, files } => {
            let st = Sandbox::open(&name.name)?
                .apply(&files.files, Duration::from_secs(files.timeout))?;
            print!("{}", pods_table(&st));
            print!("{}", gateways_table(&st));
        }
        Command::Delete { name, files } => {
            let st = Sandbox::open(&name.name)?
                .delete(&files.files, Duration::from_secs(files.timeout))?;
            print!("{}", pods_table(&st));
            print!("{}", gateways_table(&st));
        }
        Command::Exec { name, pod, command } => {
            let code = Sandbox::open(&name.name)?.exec(&pod, &command)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Command::Status { name } => {
            let sb = Sandbox::open(&name.name)?;
            let st = sb.refresh()?;
            println!("sandbox {} (state in {})", st.name, sb.dir.root.display());
            print!("{}", pods_table(&st));
            print!("{}", gateways_table(&st));
            println!("controller logs: {}", sb.dir.logs().display());
        }
        Command::Down { name } => {
            let problems = Sandbox::down(&name.name)?;
            for p in &problems {
                eprintln!("trellisctl: {p}");
            }
            if !problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
            println!("sandbox {} removed", name.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The pods with their addresses, namespaces and readiness.
pub fn pods_table(st: &State) -> String {
    let mut rows = vec![vec![
        "NAMESPACE".to_string(),
        "POD".into(),
        "IP".into(),
        "SIDECAR".into(),
        "READY".into(),
        "NETNS".into(),
    ]];
    for p in st.pods.values() {
        rows.push(vec![
            p.plan.namespace.clone(),
            p.plan.name.clone(),
            p.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
            if p.meshed { "yes" } else { "no" }.into(),
            if p.ready { "yes" } else { "no" }.into(),
            p.netns.clone(),
        ]);
    }
    table::render(&rows)
}

/// The gateway proxies: their Gateway, address, listener URLs and
/// readiness, and how to reach them from the host (empty without Gateways).
pub fn gateways_table(st: &State) -> String {
    if st.gateways.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec![
        "GATEWAY".to_string(),
        "ADDRESS".into(),
        "LISTENERS".into(),
        "READY".into(),
    ]];
    for g in st.gateways.values() {
        rows.push(vec![
            format!("{}/{}", g.namespace, g.name),
            g.address.to_string(),
            trellis_sandbox::gateway::urls(st, g).join(" "),
            if g.ready { "yes" } else { "no" }.into(),
        ]);
    }
    let node = trellis_sandbox::names::SandboxName::new(&st.name)
        .map(|n| n.node_netns())
        .unwrap_or_default();
    format!(
        "\n{}gateways answer pods (`trellisctl sandbox exec … -- curl http://ADDRESS/`) and the host (`ip netns exec {node} curl http://ADDRESS/`)\n",
        table::render(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sandbox: Args,
    }

    fn up(args: &[&str]) -> Result<bool, clap::Error> {
        let argv = ["trellisctl", "up", "--name", "t", "-f", "m.yaml"];
        let cli = Cli::try_parse_from(argv.iter().chain(args))?;
        match cli.sandbox.command {
            Command::Up { labelled_only, .. } => Ok(meshes_all(labelled_only)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn up_meshes_every_namespace_unless_told_to_follow_the_label() {
        assert!(up(&[]).unwrap(), "the default");
        assert!(up(&["--mesh-all"]).unwrap());
        assert!(!up(&["--labelled-only"]).unwrap());
        let e = up(&["--mesh-all", "--labelled-only"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
