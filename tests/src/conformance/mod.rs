//! The Gateway API conformance runner. The mesh profiles ([`Profile::Mesh`])
//! are below; GATEWAY-HTTP is [`gateway`]. The mesh run brings up the upstream mesh
//! manifests in a sandbox (every namespace meshed), then for each test of
//! [`check::MESH_TESTS`] applies its manifests, sends its requests from the
//! echo-v1 pod of the client namespace, and removes its manifests again:
//!
//! ```text
//! up(mesh/manifests.yaml) → for test: apply → cases (converge: 3 in a row within 30 s)
//!                                           | weights (500 requests, ±5 %, up to 10 tries)
//!                                     → delete → report (ConformanceReport YAML)
//! ```
//!
//! A test fails when the mesh misbehaves; nothing is skipped silently.

pub mod check;
pub mod gateway;
pub mod grpc;
pub mod report;

use crate::client::{self, Request};
use crate::sandbox::{self, Options, Sandbox};
use crate::state::State;
use check::{Case, Test, Weights};
use report::{Outcome, TestResult};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Upstream `TimeoutConfig` defaults the runner follows.
pub const MAX_TIME_TO_CONSISTENCY: Duration = Duration::from_secs(30);
pub const REQUIRED_CONSECUTIVE_SUCCESSES: usize = 3;
/// Requests that must still meet the expectation after convergence: without
/// them a backend chosen at random passes a one-in-two expectation three
/// times in a row within seconds, and a misbehaving mesh would pass.
pub const STABILITY_REQUESTS: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WEIGHT_REQUESTS: usize = 500;
const WEIGHT_CONCURRENCY: usize = 10;
const WEIGHT_TOLERANCE: f64 = 0.05;
const WEIGHT_TRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error(transparent)]
    Data(#[from] check::DataError),
    #[error("unknown conformance test {0:?}")]
    UnknownTest(String),
    #[error("the sandbox task failed: {0}")]
    Join(String),
    #[error("preparing the manifests: {0}")]
    Prepare(String),
}

/// Which conformance profiles a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// MESH-HTTP and MESH-GRPC (the upstream mesh manifests, every namespace meshed).
    #[default]
    Mesh,
    /// GATEWAY-HTTP (the upstream base manifests behind Gateways of class `trellis`).
    GatewayHttp,
}

impl Profile {
    /// The report's profile names.
    pub fn report_profiles(&self) -> &'static [&'static str] {
        match self {
            Profile::Mesh => report::MESH_PROFILES,
            Profile::GatewayHttp => report::GATEWAY_PROFILES,
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub sandbox: String,
    pub bin_dir: Option<PathBuf>,
    /// Only these tests (all when empty).
    pub only: Vec<String>,
    /// Leave the sandbox up afterwards.
    pub keep: bool,
    /// The repository root (for `third_party/gateway-api`).
    pub root: PathBuf,
    pub profile: Profile,
}

impl RunOptions {
    pub fn conformance_dir(&self) -> PathBuf {
        self.root.join("third_party/gateway-api/conformance")
    }
}

/// Runs the selected tests of the profile; `progress` hears one line per event.
pub async fn run(
    opts: &RunOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Outcome>, Error> {
    if opts.profile == Profile::GatewayHttp {
        return gateway::run(opts, progress).await;
    }
    let all = check::tests()?;
    for name in &opts.only {
        if !all.iter().any(|t| &t.name == name) {
            return Err(Error::UnknownTest(name.clone()));
        }
    }
    let tests: Vec<Test> = all
        .into_iter()
        .filter(|t| opts.only.is_empty() || opts.only.contains(&t.name))
        .collect();
    let mut sb_opts = Options::new(&opts.sandbox)?;
    sb_opts.mesh_all = true;
    sb_opts.bin_dir = opts.bin_dir.clone();
    let base = opts.conformance_dir().join("mesh/manifests.yaml");
    progress(&format!(
        "bringing up sandbox {} with {}",
        opts.sandbox,
        base.display()
    ));
    let name = opts.sandbox.clone();
    if Sandbox::open(&name)?.dir.exists() {
        blocking(move || Sandbox::down(&name).map(|_| ())).await?;
    }
    let up = blocking(move || Sandbox::up(&sb_opts, &[base]).map(|(_, st)| st)).await;
    let state = match up {
        Ok(st) => st,
        Err(e) => {
            let name = opts.sandbox.clone();
            if !opts.keep {
                let _ = blocking(move || Sandbox::down(&name).map(|_| ())).await;
            }
            return Err(e);
        }
    };
    let mut outcomes = Vec::new();
    for test in &tests {
        progress(&format!("{}: running", test.name));
        let result = run_test(opts, &state, test).await;
        let line = match &result {
            TestResult::Passed => format!("{}: PASSED", test.name),
            TestResult::Failed(why) => format!("{}: FAILED: {why}", test.name),
            TestResult::Skipped(why) => format!("{}: SKIPPED: {why}", test.name),
        };
        progress(&line);
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
    Ok(outcomes)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, sandbox::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Join(e.to_string()))?
        .map_err(Error::from)
}

async fn run_test(opts: &RunOptions, state: &State, test: &Test) -> TestResult {
    let manifests: Vec<PathBuf> = test
        .manifests
        .iter()
        .map(|m| opts.conformance_dir().join("tests/mesh").join(m))
        .collect();
    let name = opts.sandbox.clone();
    if !manifests.is_empty() {
        let (n, m) = (name.clone(), manifests.clone());
        let applied = blocking(move || Sandbox::open(&n)?.apply(&m, Duration::from_secs(60))).await;
        if let Err(e) = applied {
            return TestResult::Failed(format!("applying the manifests: {e}"));
        }
    }
    let result = if let Some(w) = &test.weights {
        weights(state, w).await
    } else {
        cases(state, &test.cases).await
    };
    if !manifests.is_empty() {
        let cleaned =
            blocking(move || Sandbox::open(&name)?.delete(&manifests, Duration::from_secs(60)))
                .await;
        if let (TestResult::Passed, Err(e)) = (&result, cleaned) {
            return TestResult::Failed(format!("removing the manifests: {e}"));
        }
    }
    result
}

/// The netns of the first echo-v1 pod of a namespace.
fn client_netns(state: &State, namespace: &str) -> Result<String, String> {
    Sandbox::find_pod(state, &format!("{namespace}/echo-v1"))
        .map(|p| p.netns)
        .map_err(|e| e.to_string())
}

/// Replaces `{pod-ip:DEPLOYMENT}` with that Deployment's first pod IP.
fn expand_host(state: &State, host: &str) -> Result<String, String> {
    let Some(start) = host.find("{pod-ip:") else {
        return Ok(host.to_string());
    };
    let end = host[start..]
        .find('}')
        .map(|e| start + e)
        .ok_or_else(|| format!("bad host {host}"))?;
    let deployment = &host[start + 8..end];
    let pod = Sandbox::find_pod(state, &format!("{}/{deployment}", check::mesh_namespace()))
        .map_err(|e| e.to_string())?;
    let ip = pod.ip.ok_or_else(|| format!("{deployment} has no IP"))?;
    Ok(format!("{}{ip}{}", &host[..start], &host[end + 1..]))
}

fn request_of(state: &State, r: &check::Req) -> Result<Request, String> {
    Ok(Request {
        host: expand_host(state, &r.host)?,
        path: if r.path.is_empty() {
            "/".into()
        } else {
            r.path.clone()
        },
        method: if r.method.is_empty() {
            "GET".into()
        } else {
            r.method.clone()
        },
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Every case converges (concurrently, as upstream runs them in parallel).
async fn cases(state: &State, cases: &[Case]) -> TestResult {
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in cases.iter().enumerate() {
        let title = c.title(i);
        let netns = match client_netns(state, &c.client) {
            Ok(n) => n,
            Err(e) => return TestResult::Failed(format!("{title}: {e}")),
        };
        let req = match request_of(state, &c.request) {
            Ok(r) => r,
            Err(e) => return TestResult::Failed(format!("{title}: {e}")),
        };
        let c = c.clone();
        set.spawn(async move {
            converge(&netns, &req, &c)
                .await
                .map_err(|e| format!("{title}: {e}"))
        });
    }
    all_pass(set).await
}

/// Passed when every case of `set` converged, else failed with every
/// failure, sorted.
pub(crate) async fn all_pass(mut set: tokio::task::JoinSet<Result<(), String>>) -> TestResult {
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        TestResult::Passed
    } else {
        failures.sort();
        TestResult::Failed(failures.join("; "))
    }
}

/// Upstream `AwaitConvergence` (the expectation holds for 3 requests in a
/// row within 30 s, 100 ms between failed attempts), then for 10 more in a
/// row: a failure among them starts over, within the same 30 s.
async fn converge(netns: &str, req: &Request, c: &Case) -> Result<(), String> {
    let in_a_row = REQUIRED_CONSECUTIVE_SUCCESSES + STABILITY_REQUESTS;
    await_convergence(in_a_row, || async {
        match client::send(netns, req, REQUEST_TIMEOUT).await {
            Ok(resp) => check::compare(&c.request, &c.expect, &resp),
            Err(e) => Some(e.to_string()),
        }
    })
    .await
}

/// Repeats `attempt` (which answers `None` when the expectation holds, else
/// why not) until it holds `in_a_row` times in a row, 100 ms between failed
/// attempts, for at most [`MAX_TIME_TO_CONSISTENCY`].
pub(crate) async fn await_convergence<F, Fut>(in_a_row: usize, mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = tokio::time::Instant::now() + MAX_TIME_TO_CONSISTENCY;
    let mut successes = 0;
    let mut last = String::from("no attempt");
    while tokio::time::Instant::now() < deadline {
        match attempt().await {
            None => {
                successes += 1;
                if successes >= in_a_row {
                    return Ok(());
                }
            }
            Some(why) => {
                successes = 0;
                last = why;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(format!(
        "did not converge within {} s: {last}",
        MAX_TIME_TO_CONSISTENCY.as_secs()
    ))
}

/// The share of each backend over 500 requests must be within 5 % of its
/// weight; up to 10 tries, after one request has succeeded.
async fn weights(state: &State, w: &Weights) -> TestResult {
    let netns = match client_netns(state, &check::mesh_namespace()) {
        Ok(n) => n,
        Err(e) => return TestResult::Failed(e),
    };
    let req = match request_of(state, &w.request) {
        Ok(r) => r,
        Err(e) => return TestResult::Failed(e),
    };
    let first = Case {
        name: None,
        client: check::mesh_namespace(),
        request: w.request.clone(),
        expect: check::Expect::default(),
    };
    if !w.grpc
        && let Err(e) = converge(&netns, &req, &first).await
    {
        return TestResult::Failed(e);
    }
    if w.grpc
        && let Err(e) = converge_grpc(&netns, &req.host).await
    {
        return TestResult::Failed(e);
    }
    let mut last = String::new();
    for _ in 0..WEIGHT_TRIES {
        match distribution(&netns, &req, w).await {
            Ok(()) => return TestResult::Passed,
            Err(e) => last = e,
        }
    }
    TestResult::Failed(format!(
        "weighted distribution failed {WEIGHT_TRIES} times; last: {last}"
    ))
}

async fn converge_grpc(netns: &str, host: &str) -> Result<(), String> {
    await_convergence(REQUIRED_CONSECUTIVE_SUCCESSES, || async {
        match grpc::echo(netns, host, REQUEST_TIMEOUT).await {
            Ok(r) if r.status == 0 => None,
            Ok(r) => Some(format!("grpc-status {}", r.status)),
            Err(e) => Some(e.to_string()),
        }
    })
    .await
    .map_err(|e| format!("gRPC {e}"))
}

/// One distribution run: who answered each of 500 requests (10 at a time,
/// each with upstream's jitter: a delay up to 1 s, a random header, or both).
async fn distribution(netns: &str, req: &Request, w: &Weights) -> Result<(), String> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(WEIGHT_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..WEIGHT_REQUESTS {
        let (netns, mut req, grpc, sem) = (netns.to_string(), req.clone(), w.grpc, sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            let jitter = fastrand::u8(0..3);
            if jitter != 1 {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
            }
            if jitter != 0 {
                req.headers
                    .push(("X-Jitter".into(), fastrand::u32(0..10_000).to_string()));
            }
            if grpc {
                let r = grpc::echo(&netns, &req.host, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status != 0 {
                    return Err(format!("grpc-status {}", r.status));
                }
                r.pod()
                    .map(String::from)
                    .ok_or_else(|| "the gRPC echo named no pod".to_string())
            } else {
                let r = client::send(&netns, &req, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("status {}", r.status));
                }
                r.echo()
                    .map(|e| e.pod)
                    .ok_or_else(|| "no echo body".to_string())
            }
        });
    }
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let pod = r.map_err(|e| e.to_string())??;
        let backend = w
            .expected
            .keys()
            .find(|b| pod.starts_with(b.as_str()))
            .ok_or_else(|| format!("request was handled by an unexpected pod {pod:?}"))?;
        *seen.entry(backend.clone()).or_default() += 1.0;
    }
    let mut errs = Vec::new();
    for (backend, want) in &w.expected {
        let got = seen.get(backend).copied().unwrap_or(0.0) / WEIGHT_REQUESTS as f64;
        if (got - want).abs() > WEIGHT_TOLERANCE {
            errs.push(format!(
                "backend {backend} got {got:.3} of the traffic, want {want} ±{WEIGHT_TOLERANCE}"
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}
