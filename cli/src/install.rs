//! `trellisctl install`: render the chart with the user's values through the
//! real Helm engine, apply every object with server-side apply (field manager
//! `trellisctl`) in dependency order, and wait until the mesh is ready,
//! printing progress as it goes.
//!
//! ```text
//! values files + --set ─► Render (helm binary | PyPI helm-python-sdk) ─► objects
//!   ─► CRDs ─► wait Established ─► namespaced and cluster objects ─► webhook configuration
//!   ─► wait: Deployments ready, DaemonSets ready on every node ─► ✓
//! ```

use crate::check::KubeArgs;
use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, discovery};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The field manager of every object `install` applies.
pub const FIELD_MANAGER: &str = "trellisctl";

/// Install Trellis: render the Helm chart and apply it to the cluster.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The chart directory (default: charts/trellis of the enclosing checkout).
    #[arg(long, value_name = "DIR")]
    pub chart: Option<PathBuf>,
    /// A values file (YAML); repeatable, later files win.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// One value, `path.to.key=value` (YAML scalar); repeatable, wins over files.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The namespace to install into (created when missing).
    #[arg(long, short, default_value = "trellis")]
    pub namespace: String,
    /// The Helm release name.
    #[arg(long, default_value = "trellis")]
    pub release: String,
    /// How to render the chart.
    #[arg(long, value_enum, default_value_t = RendererKind::Auto)]
    pub renderer: RendererKind,
    /// Print the rendered objects instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the mesh to become ready.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RendererKind {
    /// `helm` on PATH, else Python with helm-python-sdk.
    Auto,
    /// `helm template`.
    Helm,
    /// Python with the PyPI package helm-python-sdk (Helm 4 as a library).
    Python,
}

/// A bad flag or values file: exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Renders a chart directory into Kubernetes objects.
pub trait Render {
    fn render(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Value,
    ) -> Result<String>;
}

/// `helm template`.
#[derive(Debug)]
pub struct HelmBinary;

impl Render for HelmBinary {
    fn render(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Value,
    ) -> Result<String> {
        let args = [
            "template",
            release,
            &chart.to_string_lossy(),
            "--namespace",
            namespace,
            "--values",
            "-",
        ];
        run_with_stdin("helm", &args, values)
    }
}

/// The Helm engine of PyPI `helm-python-sdk` (`import helm_python`).
#[derive(Debug)]
pub struct HelmPython {
    pub python: String,
}

const PYTHON_RENDER: &str = r#"
import json, sys
import helm_python as helm
chart, release, namespace = sys.argv[1:4]
values = json.load(sys.stdin)
with helm.Chart.load(chart) as c:
    c.validate_schema(values)
    out = c.render(values, name=release, namespace=namespace, is_install=True)
for path in sorted(out):
    if path.endswith(".yaml") or path.endswith(".yml"):
        sys.stdout.write("---\n# Source: " + path + "\n" + out[path] + "\n")
"#;

impl Render for HelmPython {
    fn render(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Value,
    ) -> Result<String> {
        let chart = chart.to_string_lossy();
        run_with_stdin(
            &self.python,
            &["-c", PYTHON_RENDER, &chart, release, namespace],
            values,
        )
    }
}

fn run_with_stdin(program: &str, args: &[&str], values: &Value) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(values.to_string().as_bytes())
            .context("writing the values")?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    if !out.status.success() {
        bail!(
            "rendering the chart with {program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("the rendered chart is not UTF-8")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The renderer `kind` names; `auto` prefers the helm binary.
pub fn renderer(kind: RendererKind) -> Box<dyn Render> {
    let python = || {
        Box::new(HelmPython {
            python: std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into()),
        }) as Box<dyn Render>
    };
    match kind {
        RendererKind::Helm => Box::new(HelmBinary),
        RendererKind::Python => python(),
        RendererKind::Auto if on_path("helm") => Box::new(HelmBinary),
        RendererKind::Auto => python(),
    }
}

/// The values: files merged in order, then each `--set`.
pub fn values(files: &[PathBuf], set: &[String]) -> Result<Value, UsageError> {
    let mut v = json!({});
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| UsageError(format!("reading {}: {e}", f.display())))?;
        let file: Value = serde_saphyr::from_str(&text)
            .map_err(|e| UsageError(format!("{} is not YAML: {e}", f.display())))?;
        if !file.is_null() && !file.is_object() {
            return Err(UsageError(format!(
                "{} does not hold a mapping",
                f.display()
            )));
        }
        merge(&mut v, &file);
    }
    for s in set {
        let (path, raw) = s
            .split_once('=')
            .filter(|(p, _)| !p.is_empty())
            .ok_or_else(|| UsageError(format!("--set {s:?}: expected key.path=value")))?;
        let value = match serde_saphyr::from_str::<Value>(raw) {
            Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
            _ => Value::String(raw.to_string()),
        };
        let mut node = json!({});
        let keys: Vec<&str> = path.split('.').collect();
        let mut cursor = &mut node;
        for k in &keys[..keys.len() - 1] {
            cursor[*k] = json!({});
            cursor = &mut cursor[*k];
        }
        cursor[keys[keys.len() - 1]] = value;
        merge(&mut v, &node);
    }
    Ok(v)
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// The YAML documents of a rendered chart, in the order they must be applied.
pub fn objects(rendered: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(rendered).context("parsing the rendered chart")?;
    let mut objs: Vec<Value> = docs
        .into_iter()
        .filter(|d| d.get("kind").is_some())
        .collect();
    objs.sort_by_key(order);
    Ok(objs)
}

/// CRDs first (custom objects need them), the webhook configuration last
/// (nothing is sent to the injector before it exists).
fn order(o: &Value) -> u8 {
    match o["kind"].as_str().unwrap_or("") {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 2,
        "ConfigMap" | "Secret" => 3,
        "Service" | "Deployment" | "DaemonSet" | "PodDisruptionBudget" => 4,
        "MutatingWebhookConfiguration" => 6,
        _ => 5,
    }
}

fn describe(o: &Value) -> String {
    let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match ns {
        Some(ns) => format!("{} {ns}/{name}", o["kind"].as_str().unwrap_or("?")),
        None => format!("{} {name}", o["kind"].as_str().unwrap_or("?")),
    }
}

/// Creates the namespace when it is missing.
pub async fn ensure_namespace(client: &Client, namespace: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if api.get_opt(namespace).await?.is_none() {
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        eprintln!("  created namespace {namespace}");
    }
    Ok(())
}

/// The API of `obj`'s kind, in the object's namespace (else `namespace`)
/// when the kind is namespaced.
async fn api_for(client: &Client, obj: &Value, namespace: &str) -> Result<Api<DynamicObject>> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the cluster does not serve {api_version} {kind}"))?;
    Ok(if caps.scope == discovery::Scope::Namespaced {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace);
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    })
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Server-side applies `obj` (forcing ownership of the fields it sets).
pub async fn apply_one(client: &Client, obj: &Value, namespace: &str) -> Result<()> {
    let api = api_for(client, obj, namespace).await?;
    api.patch(
        name_of(obj),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {}", describe(obj)))?;
    Ok(())
}

/// How far an object is from ready: `None` when ready, else what is missing.
pub fn not_ready(o: &Value) -> Option<String> {
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match o["kind"].as_str()? {
        "CustomResourceDefinition" => {
            let established = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            (!established).then(|| "not established".into())
        }
        "Deployment" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (ready, updated) = (int("/status/readyReplicas"), int("/status/updatedReplicas"));
            let current = int("/status/observedGeneration") >= int("/metadata/generation");
            (ready < want || updated < want || !current).then(|| format!("{ready}/{want} ready"))
        }
        "DaemonSet" => {
            let want = int("/status/desiredNumberScheduled");
            let ready = int("/status/numberReady");
            let current = int("/status/observedGeneration") >= int("/metadata/generation");
            (ready < want || !current || o.pointer("/status").is_none())
                .then(|| format!("{ready}/{want} nodes ready"))
        }
        _ => None,
    }
}

async fn fetch(client: &Client, obj: &Value, namespace: &str) -> Result<Value> {
    let api = api_for(client, obj, namespace).await?;
    Ok(serde_json::to_value(api.get(name_of(obj)).await?)?)
}

/// Polls `watched` every `every` until all are ready, printing each change;
/// fails naming what is still not ready after `timeout`.
pub async fn wait_ready(
    client: &Client,
    watched: &[&Value],
    namespace: &str,
    every: Duration,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Vec<Option<String>> = vec![Some(String::new()); watched.len()];
    loop {
        let mut pending = Vec::new();
        for (i, obj) in watched.iter().enumerate() {
            let state = match fetch(client, obj, namespace).await {
                Ok(live) => not_ready(&live),
                Err(e) => Some(format!("not readable yet ({e})")),
            };
            if state != last[i] {
                match &state {
                    None => eprintln!("  ✓ {} ready", describe(obj)),
                    Some(s) => eprintln!("  … {}: {s}", describe(obj)),
                }
                last[i] = state.clone();
            }
            if let Some(s) = state {
                pending.push(format!("{} ({s})", describe(obj)));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for {}",
                timeout.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Applies rendered objects and waits for them: the whole of `install` after rendering.
pub async fn install(
    client: &Client,
    objs: &[Value],
    namespace: &str,
    every: Duration,
    timeout: Duration,
) -> Result<()> {
    ensure_namespace(client, namespace).await?;
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objs
        .iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    eprintln!("applying {} CRDs", crds.len());
    for o in &crds {
        apply_one(client, o, namespace).await?;
    }
    wait_ready(client, &crds, namespace, every, timeout).await?;
    eprintln!("applying {} objects", rest.len());
    for (i, o) in rest.iter().enumerate() {
        apply_one(client, o, namespace).await?;
        eprintln!("  [{}/{}] {}", i + 1, rest.len(), describe(o));
    }
    let workloads: Vec<&Value> = rest
        .iter()
        .copied()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .collect();
    eprintln!("waiting for {} workloads", workloads.len());
    wait_ready(client, &workloads, namespace, every, timeout).await
}

/// `charts/trellis` of the checkout enclosing the current directory.
fn find_chart() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join("charts/trellis");
        if candidate.join("Chart.yaml").is_file() {
            return Some(candidate);
        }
        if !dir.pop() {
            return None;
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let chart = match args.chart.clone().or_else(find_chart) {
        Some(c) if c.join("Chart.yaml").is_file() => c,
        Some(c) => {
            return Err(
                UsageError(format!("{} is not a chart (no Chart.yaml)", c.display())).into(),
            );
        }
        None => {
            return Err(UsageError("no charts/trellis here or above: pass --chart".into()).into());
        }
    };
    let values = values(&args.values, &args.set)?;
    eprintln!(
        "rendering {} (namespace {})",
        chart.display(),
        args.namespace
    );
    let rendered =
        renderer(args.renderer).render(&chart, &args.release, &args.namespace, &values)?;
    if args.dry_run {
        print!("{rendered}");
        return Ok(ExitCode::SUCCESS);
    }
    let objs = objects(&rendered)?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let client = args.kube.client(true).await?;
        let timeout = Duration::from_secs(args.timeout_seconds);
        install(
            &client,
            &objs,
            &args.namespace,
            Duration::from_secs(2),
            timeout,
        )
        .await?;
        println!(
            "✓ Trellis is installed in {}; run `trellisctl check` to verify it",
            args.namespace
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests;
