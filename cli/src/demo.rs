//! `trellisctl demo`: a guided canary release on a real mesh on this host.
//! Brings up a sandbox with a client and a service `web` (v1 and v2), shifts
//! traffic 90/10 → 50/50 → 0/100 with an HTTPRoute, drives traffic from the
//! client pod with a live progress line, and shows what the sidecars saw:
//! the observed split, per-version success rate and latency, and the mTLS
//! identity the server side verified. Then tears everything down.

use crate::sandbox::pods_table;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use trellis_api::contract;
use trellis_sandbox::client::{self, Request};
use trellis_sandbox::state::State;
use trellis_sandbox::{Options, Sandbox, metrics, probe, sandbox};

const APP: &str = include_str!("../demo/app.yaml");
const CANARY: &str = include_str!("../demo/canary.yaml");
const STEPS: &[(u32, u32)] = &[(90, 10), (50, 50), (0, 100)];

/// A guided canary release on a real mesh on this host (needs root).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sandbox's name.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Requests sent at each step.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Where the Trellis binaries are (default: next to trellisctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Leave the sandbox up at the end (remove it with `trellisctl sandbox down --name demo`).
    #[arg(long)]
    keep: bool,
}

fn say(text: &str) {
    println!("\n▶ {text}");
}

pub fn run(args: Args) -> Result<ExitCode> {
    sandbox::preflight()?;
    let opts = {
        let mut o = Options::new(&args.name)?;
        o.bin_dir = args.bin_dir.clone();
        o
    };
    let files = tempdir(&args.name)?;
    let app = files.join("app.yaml");
    std::fs::write(&app, APP).context("writing the demo manifests")?;
    say(
        "Trellis demo: a canary release on a real mesh, on this machine.\n  \
         Every pod below gets its own network namespace, wired by the CNI plugins;\n  \
         meshed pods run the trellis-proxy sidecar, which captures their traffic\n  \
         and follows the Gateway API routes the controller sends it.",
    );
    if Sandbox::open(&args.name)?.dir.exists() {
        say(&format!(
            "Removing a sandbox left over from an earlier run ({})",
            args.name
        ));
        Sandbox::down(&args.name)?;
    }
    say("Starting the sandbox: the controller, a client, web v1 (2 replicas) and web v2…");
    let result = (|| -> Result<()> {
        let (sb, st) = Sandbox::up(&opts, std::slice::from_ref(&app))?;
        print!("{}", pods_table(&st));
        let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
        let client = Sandbox::find_pod(&st, "demo/client")?;
        for (v1, v2) in STEPS {
            say(&format!(
                "Routing web: {v1}% to v1, {v2}% to v2 (an HTTPRoute whose parent is the Service)"
            ));
            let route = files.join("canary.yaml");
            std::fs::write(
                &route,
                CANARY
                    .replace("WEIGHT_V1", &v1.to_string())
                    .replace("WEIGHT_V2", &v2.to_string()),
            )
            .context("writing the route")?;
            sb.apply(std::slice::from_ref(&route), Duration::from_secs(60))?;
            // Give the controller a moment to push the new weights.
            std::thread::sleep(Duration::from_secs(2));
            let seen = rt.block_on(drive(&client.netns, args.requests))?;
            report_split(&seen, *v1, *v2);
        }
        say("What the client's sidecar measured, per version (from its /metrics):");
        show_metrics(&sb.name.node_netns(), &st)?;
        show_identities(&rt, &sb.name.node_netns(), &st)?;
        Ok(())
    })();
    if args.keep {
        say(&format!(
            "Leaving the sandbox up: try `trellisctl sandbox exec --name {} client -- curl -s http://web/`; \
             remove it with `trellisctl sandbox down --name {}`.",
            args.name, args.name
        ));
    } else {
        say("Tearing everything down (namespaces, processes, files)…");
        for p in Sandbox::down(&args.name)? {
            eprintln!("trellisctl: {p}");
        }
    }
    let _ = std::fs::remove_dir_all(&files);
    result?;
    say("Done.");
    Ok(ExitCode::SUCCESS)
}

fn tempdir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("trellis-demo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Who answered, per version label, and how many requests failed.
#[derive(Debug, Default)]
struct Seen {
    by_version: BTreeMap<String, usize>,
    errors: usize,
}

/// Sends `n` requests to `http://web/` from the client pod, 8 at a time,
/// with a live progress line.
async fn drive(netns: &str, n: usize) -> Result<Seen> {
    let sent = Arc::new(AtomicUsize::new(0));
    let v1 = Arc::new(AtomicUsize::new(0));
    let v2 = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (netns, sent, v1, v2, errors) = (
            netns.to_string(),
            sent.clone(),
            v1.clone(),
            v2.clone(),
            errors.clone(),
        );
        workers.spawn(async move {
            let req = Request {
                host: "web".into(),
                path: "/".into(),
                method: "GET".into(),
                headers: Vec::new(),
            };
            while sent.fetch_add(1, Ordering::SeqCst) < n {
                match client::send(&netns, &req, Duration::from_secs(5)).await {
                    Ok(r) if r.status == 200 => {
                        let pod = r.echo().map(|e| e.pod).unwrap_or_default();
                        if pod.starts_with("web-v1") {
                            v1.fetch_add(1, Ordering::SeqCst);
                        } else if pod.starts_with("web-v2") {
                            v2.fetch_add(1, Ordering::SeqCst);
                        } else {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    let line = |done: usize| {
        let (a, b, e) = (
            v1.load(Ordering::SeqCst),
            v2.load(Ordering::SeqCst),
            errors.load(Ordering::SeqCst),
        );
        let width = 30;
        let filled = (done * width) / n.max(1);
        print!(
            "\r  [{}{}] {done:>4}/{n}  v1 {a:>4}  v2 {b:>4}  errors {e}",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
        let _ = std::io::stdout().flush();
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !workers.is_empty() {
        tokio::select! {
            _ = tick.tick() => line((v1.load(Ordering::SeqCst) + v2.load(Ordering::SeqCst) + errors.load(Ordering::SeqCst)).min(n)),
            r = workers.join_next() => { if let Some(Err(e)) = r { anyhow::bail!("a traffic worker failed: {e}"); } }
        }
    }
    line(n);
    println!();
    let mut by_version = BTreeMap::new();
    by_version.insert("v1".to_string(), v1.load(Ordering::SeqCst));
    by_version.insert("v2".to_string(), v2.load(Ordering::SeqCst));
    Ok(Seen {
        by_version,
        errors: errors.load(Ordering::SeqCst),
    })
}

fn report_split(seen: &Seen, v1: u32, v2: u32) {
    let total: usize = seen.by_version.values().sum::<usize>().max(1);
    let pct = |v: &str| 100.0 * seen.by_version.get(v).copied().unwrap_or(0) as f64 / total as f64;
    println!(
        "  observed: v1 {:.1}%  v2 {:.1}%  (configured {v1}/{v2}); failed requests: {}",
        pct("v1"),
        pct("v2"),
        seen.errors
    );
}

fn show_metrics(node: &str, st: &State) -> Result<()> {
    let client = Sandbox::find_pod(st, "demo/client")?;
    let ip = client.ip.context("the client pod has no IP")?;
    let admin = SocketAddr::from((ip, contract::port::PROXY_ADMIN));
    let (status, body) = probe::http_get(node, admin, "/metrics")
        .map_err(|e| anyhow::anyhow!("reading the client sidecar's metrics: {e}"))?;
    if status != 200 {
        anyhow::bail!("the client sidecar's /metrics answered {status}");
    }
    let by = metrics::outbound_by_backend(&metrics::parse(&body));
    if by.is_empty() {
        println!("  (the sidecar reported no outbound HTTP requests)");
    }
    let ms = |s: Option<f64>| match s {
        Some(v) if v.is_finite() => format!("≤ {:.1} ms", v * 1000.0),
        Some(_) => "> largest bucket".to_string(),
        None => "-".to_string(),
    };
    for (backend, s) in by {
        println!(
            "  {backend:<20} requests {:>6}  success {:>6}  p50 {}  p99 {}",
            s.requests,
            s.success_rate()
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            ms(s.p50),
            ms(s.p99)
        );
    }
    Ok(())
}

/// The identities behind the mTLS between the sidecars: who the web side
/// verified the client as (the inbound sidecar hands it to the app as
/// `x-trellis-client-id`), and each sidecar's certificate and handshakes
/// (from its /metrics).
fn show_identities(rt: &tokio::runtime::Runtime, node: &str, st: &State) -> Result<()> {
    let client = Sandbox::find_pod(st, "demo/client")?;
    let req = Request {
        host: "web".into(),
        path: "/".into(),
        method: "GET".into(),
        headers: Vec::new(),
    };
    let echo = rt
        .block_on(client::send(&client.netns, &req, Duration::from_secs(5)))
        .ok()
        .and_then(|r| r.echo());
    let Some(ids) = echo
        .as_ref()
        .and_then(|e| e.header(contract::header::CLIENT_ID))
    else {
        anyhow::bail!(
            "the web sidecar passed no verified client identity: mTLS between the sidecars is not working (see the logs under {})",
            Sandbox::open(&st.name)?.dir.logs().display()
        );
    };
    say(&format!(
        "mTLS: {} verified the caller as {}",
        echo.as_ref().map(|e| e.pod.as_str()).unwrap_or("web"),
        ids.join(", ")
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    for pod in st.pods.values().filter(|p| p.meshed) {
        let Some(ip) = pod.ip else { continue };
        let admin = SocketAddr::from((ip, contract::port::PROXY_ADMIN));
        let Ok((200, body)) = probe::http_get(node, admin, "/metrics") else {
            continue;
        };
        let samples = metrics::parse(&body);
        let sum = |name: &str, outcome: Option<&str>| -> f64 {
            samples
                .iter()
                .filter(|s| s.name == name)
                .filter(|s| {
                    outcome.is_none_or(|o| s.labels.get("outcome").map(String::as_str) == Some(o))
                })
                .map(|s| s.value)
                .sum()
        };
        let expiry = sum(
            "trellis_identity_certificate_expiry_timestamp_seconds",
            None,
        );
        let id = format!(
            "spiffe://{}/ns/{}/sa/{}",
            contract::DEFAULT_TRUST_DOMAIN,
            pod.plan.namespace,
            pod.plan.service_account
        );
        println!(
            "  {:<26} {id:<44} certificate expires in {:>4.1} h  handshakes ok {:>3}  refused {:>3}",
            pod.plan.name,
            (expiry - now).max(0.0) / 3600.0,
            sum("trellis_tls_handshakes_total", Some("ok")),
            sum("trellis_tls_handshakes_total", None)
                - sum("trellis_tls_handshakes_total", Some("ok")),
        );
    }
    Ok(())
}
