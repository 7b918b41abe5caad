//! The GATEWAY-HTTP profile: the upstream base manifests in a sandbox (the
//! Gateways of class `trellis`, as the upstream suite's `--gateway-class`
//! flag makes them), then for each test of `gateway-http-tests.yaml` its
//! manifests applied, the route and listener status it waits for read from
//! the controller, and its requests sent to the Gateway's address from the
//! node namespace, where a client outside the cluster would be.
//!
//! ```text
//! base manifests ─{GATEWAY_CLASS_NAME}→ trellis─► up (+ the suite's TLS Secrets)
//!   for test: apply ─► status (Accepted, ResolvedRefs, conditions, attachedRoutes; 60 s)
//!             ─► cases (HTTP, or HTTPS with SNI and the suite's certificate;
//!                converge 3 in a row within 30 s, then 10 more) ─► delete
//! ```
//!
//! As upstream, a 200 answer must show the backend the request as sent:
//! path, headers, and the Host when the case names one, unless the test
//! expects the request to have been changed. Base objects the sandbox
//! cannot run (containers that need mounted Secret files, images other
//! than the echo server without a command) are left out and listed.

use super::check::{self, Expect};
use super::report::{Outcome, TestResult};
use super::{
    REQUIRED_CONSECUTIVE_SUCCESSES, RunOptions, STABILITY_REQUESTS, all_pass, await_convergence,
};
use crate::client::{self, Request, Response};
use crate::manifest::{self, Object};
use crate::sandbox::{Options, Sandbox};
use crate::state::State;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trellis_api::contract;

/// The GATEWAY-HTTP tests the runner reconstructs.
pub const GATEWAY_TESTS: &str = include_str!("../../conformance/gateway-http-tests.yaml");
/// The Gateway of a test that names none.
pub const DEFAULT_GATEWAY: &str = "gateway-conformance-infra/same-namespace";
/// How long the status a test waits for may take (upstream's
/// `GatewayMustHaveLatestConditions` and route timeouts are of this order).
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub features: Vec<String>,
    #[serde(default)]
    pub provisional: bool,
    pub manifests: Vec<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteCheck>,
    #[serde(default)]
    pub conditions: Vec<ConditionCheck>,
    #[serde(default)]
    pub listeners: Vec<ListenerCheck>,
    #[serde(default)]
    pub cases: Vec<GatewayCase>,
    /// A weighted split: the share of each backend over many requests.
    #[serde(default)]
    pub weights: Option<GatewayWeights>,
}

/// Backend pod-name prefix → expected share of the requests.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayWeights {
    #[serde(default)]
    pub request: GatewayRequest,
    pub expected: BTreeMap<String, f64>,
}

/// A route that must be Accepted by its Gateway (and ResolvedRefs=True).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteCheck {
    pub route: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "yes")]
    pub resolved_refs: bool,
}

fn yes() -> bool {
    true
}

/// A condition of a route's parent status.
#[derive(Debug, Clone, Deserialize)]
pub struct ConditionCheck {
    pub route: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Routes attached to each listener of a Gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerCheck {
    pub gateway: String,
    pub attached_routes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewayCase {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    pub request: GatewayRequest,
    #[serde(default)]
    pub expect: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GatewayRequest {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub sni: Option<String>,
}

/// Every test, in the order of the data file.
pub fn tests() -> Result<Vec<GatewayTest>, check::DataError> {
    serde_saphyr::from_str(GATEWAY_TESTS).map_err(|e| check::DataError(e.to_string()))
}

impl GatewayCase {
    pub fn title(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            let sni = self
                .request
                .sni
                .as_ref()
                .map(|s| format!(" (SNI {s})"))
                .unwrap_or_default();
            format!(
                "{index} {}{}{sni}",
                self.request.host.as_deref().unwrap_or("(address)"),
                self.request.path
            )
        })
    }

    /// The expectation, with upstream's defaults: an answer of 200 must
    /// show the backend the request as sent (path, headers, method, and the
    /// Host when the case names one) unless the case says what it saw.
    pub fn expectation(&self) -> Result<Expect, check::DataError> {
        let mut e: Expect = serde_json::from_value(self.expect.clone())
            .map_err(|err| check::DataError(format!("{}: {err}", self.title(0))))?;
        let ok = e.status.is_empty() || e.status.contains(&200);
        if ok {
            let path = if self.request.path.is_empty() {
                "/"
            } else {
                &self.request.path
            };
            e.request_path.get_or_insert_with(|| path.to_string());
            if self.expect.get("requestHeaders").is_none() {
                e.request_headers = self.request.headers.clone();
            }
            if e.host.is_none() {
                e.host = self.request.host.clone();
            }
            if e.method.is_none() {
                e.method = Some(self.request.method.clone().unwrap_or_else(|| "GET".into()));
            }
        }
        Ok(e)
    }
}

/// The base manifests as a sandbox can run them: the class substituted,
/// the objects it cannot run left out (with the reason), and the TLS
/// Secrets the upstream suite makes. Returns the files to bring up and the
/// PEM of the certificate clients trust.
pub fn prepare_base(
    conformance: &Path,
    dir: &Path,
) -> Result<(Vec<PathBuf>, String, Vec<String>), String> {
    let base = conformance.join("base/manifests.yaml");
    let text = std::fs::read_to_string(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let objects = manifest::parse(&substitute(&text), &base.display().to_string())
        .map_err(|e| e.to_string())?;
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for o in objects {
        match unrunnable(&o) {
            Some(why) => left_out.push(format!(
                "{} {}/{}: {why}",
                o.kind(),
                o.namespace(),
                o.name()
            )),
            None => kept.push(o.0),
        }
    }
    let secret = |ns: &str, name: &str, hosts: &[&str]| {
        crate::gateway::tls_secret(ns, name, hosts)
            .map_err(|e| format!("making Secret {ns}/{name}: {e}"))
    };
    let (web, _) = secret("gateway-conformance-web-backend", "certificate", &["*"])?;
    let (infra, trusted) = secret(
        "gateway-conformance-infra",
        "tls-validity-checks-certificate",
        &["*", "*.org"],
    )?;
    kept.extend([web, infra]);
    let file = dir.join("base.yaml");
    let body = serde_saphyr::to_string_multiple(&kept.iter().collect::<Vec<_>>())
        .map_err(|e| e.to_string())?;
    std::fs::write(&file, body).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((vec![file], trusted, left_out))
}

/// `{GATEWAY_CLASS_NAME}` → `trellis`, as the suite's flag substitutes it.
fn substitute(text: &str) -> String {
    text.replace("{GATEWAY_CLASS_NAME}", contract::GATEWAY_CLASS_NAME)
}

/// Why the sandbox cannot run a base object (None when it can).
fn unrunnable(o: &Object) -> Option<&'static str> {
    if o.kind() != "Deployment" {
        return None;
    }
    let spec = &o.0["spec"]["template"]["spec"];
    let secret_volume = spec["volumes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|v| !v["secret"].is_null()));
    if secret_volume {
        return Some("mounts a Secret as files, which the sandbox does not mount");
    }
    let foreign = spec["containers"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            !crate::probe::is_echo_image(c["image"].as_str().unwrap_or_default())
                && c["command"].is_null()
        })
    });
    foreign.then_some("runs an image that is not the echo server and names no command")
}

/// Writes a test's manifests, substituted, into `dir`.
fn test_manifests(
    conformance: &Path,
    dir: &Path,
    test: &GatewayTest,
) -> Result<Vec<PathBuf>, String> {
    test.manifests
        .iter()
        .map(|m| {
            let src = conformance.join("tests/gateway").join(m);
            let text =
                std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            let dst = dir.join(m);
            std::fs::write(&dst, substitute(&text))
                .map_err(|e| format!("{}: {e}", dst.display()))?;
            Ok(dst)
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::sandbox::Error> + Send + 'static,
) -> Result<T, super::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| super::Error::Join(e.to_string()))?
        .map_err(super::Error::from)
}

/// Runs the selected GATEWAY-HTTP tests; `progress` hears one line per event.
pub async fn run(
    opts: &RunOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Outcome>, super::Error> {
    let all = tests()?;
    for name in &opts.only {
        if !all.iter().any(|t| &t.name == name) {
            return Err(super::Error::UnknownTest(name.clone()));
        }
    }
    let selected: Vec<GatewayTest> = all
        .into_iter()
        .filter(|t| opts.only.is_empty() || opts.only.contains(&t.name))
        .collect();
    let tmp = std::env::temp_dir().join(format!("trellis-conformance-{}", opts.sandbox));
    std::fs::create_dir_all(&tmp).map_err(|e| super::Error::Prepare(e.to_string()))?;
    let conformance = opts.conformance_dir();
    let (base, trusted, left_out) =
        prepare_base(&conformance, &tmp).map_err(super::Error::Prepare)?;
    for l in &left_out {
        progress(&format!("left out of the base manifests: {l}"));
    }
    let mut sb_opts = Options::new(&opts.sandbox)?;
    sb_opts.bin_dir = opts.bin_dir.clone();
    sb_opts.timeout = Duration::from_secs(180);
    progress(&format!(
        "bringing up sandbox {} with the base manifests",
        opts.sandbox
    ));
    let name = opts.sandbox.clone();
    if Sandbox::open(&name)?.dir.exists() {
        blocking(move || Sandbox::down(&name).map(|_| ())).await?;
    }
    let up = blocking(move || Sandbox::up(&sb_opts, &base).map(|(_, st)| st)).await;
    if let Err(e) = up {
        if !opts.keep {
            let name = opts.sandbox.clone();
            let _ = blocking(move || Sandbox::down(&name).map(|_| ())).await;
        }
        return Err(e);
    }
    let mut outcomes = Vec::new();
    for test in &selected {
        progress(&format!("{}: running", test.name));
        let result = run_test(opts, &conformance, &tmp, test, &trusted).await;
        progress(&match &result {
            TestResult::Passed => format!("{}: PASSED", test.name),
            TestResult::Failed(why) => format!("{}: FAILED: {why}", test.name),
            TestResult::Skipped(why) => format!("{}: SKIPPED: {why}", test.name),
        });
        outcomes.push(Outcome {
            name: test.name.clone(),
            features: test.features.clone(),
            provisional: test.provisional,
            result,
        });
    }
    if !opts.keep {
        let name = opts.sandbox.clone();
        blocking(move || Sandbox::down(&name).map(|_| ())).await?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(outcomes)
}

async fn run_test(
    opts: &RunOptions,
    conformance: &Path,
    tmp: &Path,
    test: &GatewayTest,
    trusted: &str,
) -> TestResult {
    let manifests = match test_manifests(conformance, tmp, test) {
        Ok(m) => m,
        Err(e) => return TestResult::Failed(e),
    };
    let name = opts.sandbox.clone();
    let (n, m) = (name.clone(), manifests.clone());
    let state = match blocking(move || Sandbox::open(&n)?.apply(&m, Duration::from_secs(120))).await
    {
        Ok(st) => st,
        Err(e) => return TestResult::Failed(format!("applying the manifests: {e}")),
    };
    let result = match status(&state, test).await {
        Err(e) => TestResult::Failed(e),
        Ok(()) => match cases(&state, test, trusted).await {
            TestResult::Passed => match &test.weights {
                Some(w) => weights(&state, test, w).await,
                None => TestResult::Passed,
            },
            r => r,
        },
    };
    let cleaned =
        blocking(move || Sandbox::open(&name)?.delete(&manifests, Duration::from_secs(120))).await;
    match (result, cleaned) {
        (TestResult::Passed, Err(e)) => TestResult::Failed(format!("removing the manifests: {e}")),
        (r, _) => r,
    }
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Waits until the controller reports every route and listener status the
/// test expects.
async fn status(state: &State, test: &GatewayTest) -> Result<(), String> {
    let node = crate::names::SandboxName::new(&state.name)
        .map(|n| n.node_netns())
        .map_err(|e| e.to_string())?;
    let default_gw = test
        .gateway
        .clone()
        .unwrap_or_else(|| DEFAULT_GATEWAY.into());
    let mut wanted: Vec<ConditionCheck> = Vec::new();
    for r in &test.routes {
        let gateway = r.gateway.clone().or_else(|| Some(default_gw.clone()));
        wanted.push(ConditionCheck {
            route: r.route.clone(),
            gateway: gateway.clone(),
            type_: "Accepted".into(),
            status: "True".into(),
            reason: None,
        });
        if r.resolved_refs {
            wanted.push(ConditionCheck {
                route: r.route.clone(),
                gateway,
                type_: "ResolvedRefs".into(),
                status: "True".into(),
                reason: None,
            });
        }
    }
    wanted.extend(test.conditions.iter().cloned().map(|mut c| {
        c.gateway.get_or_insert_with(|| default_gw.clone());
        c
    }));
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    loop {
        let n = node.clone();
        let got = tokio::task::spawn_blocking(move || {
            crate::probe::http_get(&n, crate::spawn::controller_admin(), "/status")
        })
        .await
        .map_err(|e| e.to_string())?;
        let why = match got {
            Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
                Ok(all) => unmet(&all, &wanted, &test.listeners),
                Err(e) => Some(format!("/status is not JSON: {e}")),
            },
            Ok((s, body)) => Some(format!("/status answered {s}: {}", body.trim())),
            Err(e) => Some(format!("/status: {e}")),
        };
        let Some(why) = why else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "status not reached within {} s: {why}",
                STATUS_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first expected status that does not hold in the controller's
/// `/status` (None when all do).
pub fn unmet(
    all: &Value,
    wanted: &[ConditionCheck],
    listeners: &[ListenerCheck],
) -> Option<String> {
    let entries = all.as_array()?;
    let find = |kind: &str, key: &str| {
        let (ns, name) = split(key);
        entries
            .iter()
            .find(|e| e["kind"] == kind && e["namespace"] == ns && e["name"] == name)
    };
    for w in wanted {
        let gw = w.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY);
        let (gw_ns, gw_name) = split(gw);
        let (route_ns, _) = split(&w.route);
        let Some(route) = find("HTTPRoute", &w.route) else {
            return Some(format!("no status for HTTPRoute {}", w.route));
        };
        let parent = route["parents"].as_array().into_iter().flatten().find(|p| {
            let r = &p["parentRef"];
            r["name"] == gw_name
                && r["namespace"].as_str().unwrap_or(route_ns) == gw_ns
                && r["kind"].as_str().unwrap_or("Gateway") == "Gateway"
        });
        let Some(parent) = parent else {
            return Some(format!(
                "HTTPRoute {} has no parent status for Gateway {gw}",
                w.route
            ));
        };
        let cond = parent["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == w.type_.as_str());
        let holds = cond.is_some_and(|c| {
            c["status"] == w.status.as_str()
                && w.reason.as_ref().is_none_or(|r| c["reason"] == r.as_str())
        });
        if !holds {
            return Some(format!(
                "HTTPRoute {} for {gw}: wanted {}={}{}, have {}",
                w.route,
                w.type_,
                w.status,
                w.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                cond.map_or_else(
                    || "none".to_string(),
                    |c| format!("{}={} ({})", c["type"], c["status"], c["reason"])
                )
            ));
        }
    }
    for l in listeners {
        let Some(gw) = find("Gateway", &l.gateway) else {
            return Some(format!("no status for Gateway {}", l.gateway));
        };
        let statuses = gw["extra"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (name, want) in &l.attached_routes {
            let got = statuses
                .iter()
                .find(|s| s["name"] == name.as_str())
                .and_then(|s| s["attachedRoutes"].as_u64());
            if got != Some(*want) {
                return Some(format!(
                    "listener {name} of {}: wanted {want} attached routes, have {got:?}",
                    l.gateway
                ));
            }
        }
    }
    None
}

/// Every case converges, concurrently as upstream runs them.
async fn cases(state: &State, test: &GatewayTest, trusted: &str) -> TestResult {
    let node = match crate::names::SandboxName::new(&state.name) {
        Ok(n) => n.node_netns(),
        Err(e) => return TestResult::Failed(e.to_string()),
    };
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in test.cases.iter().enumerate() {
        let title = c.title(i);
        let gw = c
            .gateway
            .clone()
            .or_else(|| test.gateway.clone())
            .unwrap_or_else(|| DEFAULT_GATEWAY.into());
        let Some(g) = state.gateways.get(&gw) else {
            return TestResult::Failed(format!("{title}: no gateway proxy for {gw}"));
        };
        let expect = match c.expectation() {
            Ok(e) => e,
            Err(e) => return TestResult::Failed(e.to_string()),
        };
        let port = c
            .request
            .port
            .unwrap_or(if c.request.sni.is_some() { 443 } else { 80 });
        let addr = if port == 80 {
            g.address.to_string()
        } else {
            format!("{}:{port}", g.address)
        };
        let mut headers: Vec<(String, String)> = c.request.headers.clone().into_iter().collect();
        headers.push((
            "Host".into(),
            c.request.host.clone().unwrap_or_else(|| addr.clone()),
        ));
        let req = Request {
            host: addr,
            path: if c.request.path.is_empty() {
                "/".into()
            } else {
                c.request.path.clone()
            },
            method: c.request.method.clone().unwrap_or_else(|| "GET".into()),
            headers,
        };
        let (node, sni, trusted) = (node.clone(), c.request.sni.clone(), trusted.to_string());
        let for_compare = check::Req {
            host: req.host.clone(),
            path: req.path.clone(),
            method: req.method.clone(),
            headers: BTreeMap::new(),
        };
        set.spawn(async move {
            converge(&node, &req, sni.as_deref(), &trusted, &for_compare, &expect)
                .await
                .map_err(|e| format!("{title}: {e}"))
        });
    }
    all_pass(set).await
}

/// Upstream's weighted-backend check (as the mesh runner makes it): once a
/// request succeeds, 500 requests 10 at a time must split within 5 % of the
/// weights, in one of 10 tries.
async fn weights(state: &State, test: &GatewayTest, w: &GatewayWeights) -> TestResult {
    let node = match crate::names::SandboxName::new(&state.name) {
        Ok(n) => n.node_netns(),
        Err(e) => return TestResult::Failed(e.to_string()),
    };
    let gw = test
        .gateway
        .clone()
        .unwrap_or_else(|| DEFAULT_GATEWAY.into());
    let Some(g) = state.gateways.get(&gw) else {
        return TestResult::Failed(format!("no gateway proxy for {gw}"));
    };
    let path = if w.request.path.is_empty() {
        "/".to_string()
    } else {
        w.request.path.clone()
    };
    let req = Request {
        host: g.address.to_string(),
        path: path.clone(),
        method: "GET".into(),
        headers: w.request.headers.clone().into_iter().collect(),
    };
    let for_compare = check::Req {
        host: req.host.clone(),
        path,
        method: req.method.clone(),
        headers: BTreeMap::new(),
    };
    if let Err(e) = converge(&node, &req, None, "", &for_compare, &Expect::default()).await {
        return TestResult::Failed(e);
    }
    let spec = check::Weights {
        grpc: false,
        request: for_compare,
        expected: w.expected.clone(),
    };
    let mut last = String::new();
    for _ in 0..super::WEIGHT_TRIES {
        match super::distribution(&node, &req, &spec).await {
            Ok(()) => return TestResult::Passed,
            Err(e) => last = e,
        }
    }
    TestResult::Failed(format!(
        "weighted distribution failed {} times; last: {last}",
        super::WEIGHT_TRIES
    ))
}

async fn send(
    node: &str,
    req: &Request,
    sni: Option<&str>,
    trusted: &str,
) -> Result<Response, client::Error> {
    match sni {
        Some(sni) => client::send_tls(node, req, sni, trusted, REQUEST_TIMEOUT).await,
        None => client::send(node, req, REQUEST_TIMEOUT).await,
    }
}

/// Upstream's `MakeRequestAndExpectEventuallyConsistentResponse` (3 in a
/// row within 30 s), then 10 more in a row, as the mesh runner does.
async fn converge(
    node: &str,
    req: &Request,
    sni: Option<&str>,
    trusted: &str,
    for_compare: &check::Req,
    expect: &Expect,
) -> Result<(), String> {
    let in_a_row = REQUIRED_CONSECUTIVE_SUCCESSES + STABILITY_REQUESTS;
    await_convergence(in_a_row, || async {
        match send(node, req, sni, trusted).await {
            Ok(resp) => check::compare(for_compare, expect, &resp),
            Err(e) => Some(e.to_string()),
        }
    })
    .await
}

#[cfg(test)]
mod tests;
