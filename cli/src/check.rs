//! `trellisctl check`: is this cluster ready for Trellis (`--pre`), and is
//! the installed mesh healthy? One ✓/✗ line per check; exit status 1 when any
//! fails. Every check reads the API server only (the webhook and identity are
//! reached through its service and pod proxy), so it needs nothing but the
//! user's kubeconfig.
//!
//! ```text
//! kubeconfig ─► Client ─► checks (one async fn each) ─► Vec<Outcome> ─► ✓/✗ lines, exit status
//! ```

use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use trellis_api::contract::{self, key, port};

/// The Kubernetes minor versions Trellis supports (v1.31–v1.36).
pub const MIN_MINOR: u32 = 31;
pub const MAX_MINOR: u32 = 36;

/// CRDs the mesh needs: (name, version that must be served).
const CRDS: &[(&str, &str)] = &[
    ("gatewayclasses.gateway.networking.k8s.io", "v1"),
    ("gateways.gateway.networking.k8s.io", "v1"),
    ("httproutes.gateway.networking.k8s.io", "v1"),
    ("grpcroutes.gateway.networking.k8s.io", "v1"),
    ("referencegrants.gateway.networking.k8s.io", "v1beta1"),
    ("xmeshes.gateway.networking.x-k8s.io", "v1alpha1"),
    ("authorizationpolicies.policy.trellis.io", "v1alpha1"),
];
const CONTROL_PLANE: &[&str] = &["trellis-controller", "trellis-identity", "trellis-injector"];
const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";

/// Where the cluster is.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// A client for the cluster; `retry` retries 429/503/504 answers with
    /// backoff (for `install`; `check` wants the answer as it is).
    pub async fn client(&self, retry: bool) -> Result<Client> {
        let opts = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &opts).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&opts).await?,
            None => kube::Config::infer().await?,
        };
        let mut config = config;
        config.default_retry = retry;
        Client::try_from(config).context("building the Kubernetes client")
    }
}

/// Check that the cluster can take Trellis (`--pre`) or that the mesh is healthy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check the cluster before installing instead of the installed mesh.
    #[arg(long)]
    pub pre: bool,
    /// The namespace Trellis is (or will be) installed in.
    #[arg(long, short, default_value = "trellis")]
    pub namespace: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Outcome {
    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Outcome {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }
    fn fail(name: &str, detail: impl Into<String>) -> Self {
        Outcome {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
    fn of(name: &str, r: Result<String, String>) -> Self {
        match r {
            Ok(d) => Self::ok(name, d),
            Err(d) => Self::fail(name, d),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "✓" } else { "✗" };
        write!(f, "{mark} {}: {}", self.name, self.detail)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let client = args.kube.client(false).await?;
        let outcomes = check(&client, &args.namespace, args.pre).await;
        for o in &outcomes {
            println!("{o}");
        }
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            eprintln!("trellisctl: {failed} of {} checks failed", outcomes.len());
            ExitCode::FAILURE
        })
    })
}

/// Runs every check, in order; never stops early.
pub async fn check(client: &Client, namespace: &str, pre: bool) -> Vec<Outcome> {
    let mut out = vec![version(client).await];
    if pre {
        out.push(Outcome::of(
            "Gateway API CRDs",
            gateway_api_pre(client).await,
        ));
        return out;
    }
    out.push(Outcome::of("CRDs present and served", crds(client).await));
    for name in CONTROL_PLANE {
        out.push(Outcome::of(
            &format!("{name} ready"),
            deployment(client, namespace, name).await,
        ));
    }
    out.push(Outcome::of(
        "webhook caBundle matches its certificate",
        ca_bundle(client, namespace).await,
    ));
    out.push(Outcome::of(
        "webhook reachable and injecting",
        webhook(client, namespace).await,
    ));
    out.push(Outcome::of(
        "identity issuing",
        identity(client, namespace).await,
    ));
    out.push(Outcome::of(
        "CNI installed on every node",
        cni(client, namespace).await,
    ));
    out.push(Outcome::of(
        "proxies in sync",
        proxies(client, namespace).await,
    ));
    out
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The API server's own message, without the wrapping.
fn kube_err(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        e => e.to_string(),
    }
}

/// The injector's configuration (what it injects), if installed.
async fn injector_config(client: &Client, ns: &str) -> Result<Value, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cfg = cms
        .get_opt("trellis-injector")
        .await
        .map_err(kube_err)?
        .and_then(|c| c.data?.get("injector.yaml").cloned())
        .ok_or("configmap trellis-injector has no injector.yaml")?;
    serde_saphyr::from_str(&cfg).map_err(|e| format!("injector.yaml: {e}"))
}

async fn version(client: &Client) -> Outcome {
    const NAME: &str = "Kubernetes version";
    let info = match client.apiserver_version().await {
        Ok(i) => i,
        Err(e) => return Outcome::fail(NAME, format!("the API server did not answer: {e}")),
    };
    let minor: Option<u32> = info.minor.trim_end_matches('+').parse().ok();
    match (info.major.as_str(), minor) {
        ("1", Some(m)) if (MIN_MINOR..=MAX_MINOR).contains(&m) => Outcome::ok(
            NAME,
            format!(
                "{} (supported: v1.{MIN_MINOR}–v1.{MAX_MINOR})",
                info.git_version
            ),
        ),
        _ => Outcome::fail(
            NAME,
            format!(
                "{} is not supported (v1.{MIN_MINOR}–v1.{MAX_MINOR})",
                info.git_version
            ),
        ),
    }
}

fn bundle_version(crd: &CustomResourceDefinition) -> Option<(u32, u32)> {
    let v = crd.metadata.annotations.as_ref()?.get(BUNDLE_VERSION)?;
    let mut parts = v.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

async fn gateway_api_pre(client: &Client) -> Result<String, String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api
        .get_opt("httproutes.gateway.networking.k8s.io")
        .await
        .map_err(kube_err)?
    {
        None => Ok("not installed; the chart installs v1.6.1".into()),
        Some(crd) => match bundle_version(&crd) {
            Some((1, m)) if m >= 6 => Ok(format!(
                "v1.{m} installed (set gatewayAPI.installCRDs=false to keep them)"
            )),
            Some((maj, m)) => Err(format!("v{maj}.{m} installed; Trellis needs v1.6 or later")),
            None => Err(format!(
                "installed without the {BUNDLE_VERSION} annotation; Trellis needs v1.6 or later"
            )),
        },
    }
}

async fn crds(client: &Client) -> Result<String, String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut problems = Vec::new();
    for (name, version) in CRDS {
        match api.get_opt(name).await.map_err(kube_err)? {
            None => problems.push(format!("{name} missing")),
            Some(crd) => {
                let served = crd
                    .spec
                    .versions
                    .iter()
                    .any(|v| v.name == *version && v.served);
                if !served {
                    problems.push(format!("{name} does not serve {version}"));
                }
                if name.ends_with("gateway.networking.k8s.io")
                    && bundle_version(&crd).is_some_and(|(maj, m)| maj < 1 || (maj == 1 && m < 6))
                {
                    problems.push(format!("{name} is older than Gateway API v1.6"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(format!("{} of {}", CRDS.len(), CRDS.len()))
    } else {
        Err(problems.join("; "))
    }
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Result<String, String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api.get_opt(name).await.map_err(kube_err)?.ok_or_else(|| {
        format!("deployment {ns}/{name} not found (is Trellis installed in {ns}?)")
    })?;
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready >= want && want > 0 {
        Ok(format!("{ready}/{want} replicas"))
    } else {
        Err(format!("{ready}/{want} replicas ready"))
    }
}

async fn ca_bundle(client: &Client, ns: &str) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt("trellis-injector-tls")
        .await
        .map_err(kube_err)?
        .ok_or("secret trellis-injector-tls not found: the injector has not started")?;
    let ca = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .ok_or("secret trellis-injector-tls has no ca.crt")?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc = api
        .get_opt("trellis-injector")
        .await
        .map_err(kube_err)?
        .ok_or("mutatingwebhookconfiguration trellis-injector not found")?;
    let hooks = mwc.webhooks.unwrap_or_default();
    let stale: Vec<String> = hooks
        .iter()
        .filter(|w| w.client_config.ca_bundle.as_ref() != Some(ca))
        .map(|w| w.name.clone())
        .collect();
    match (hooks.is_empty(), stale.is_empty()) {
        (true, _) => Err("trellis-injector has no webhooks".into()),
        (false, true) => Ok(format!("{} webhook(s)", hooks.len())),
        (false, false) => Err(format!(
            "caBundle of {} differs from ca.crt",
            stale.join(", ")
        )),
    }
}

/// A review of a pod, as the API server would send it.
fn probe_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "trellisctl-check",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "trellisctl-check", "operation": "CREATE", "dryRun": true,
            "userInfo": {"username": "trellisctl"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "trellisctl-check", "namespace": "trellisctl-check"},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app"}]}},
        }
    })
}

async fn webhook(client: &Client, ns: &str) -> Result<String, String> {
    let path = format!("/api/v1/namespaces/{ns}/services/https:trellis-injector:443/proxy/inject");
    let body = serde_json::to_vec(&probe_review()).map_err(err)?;
    let req = http::Request::post(&path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(err)?;
    let text = client.request_text(req).await.map_err(|e| {
        format!(
            "the API server could not reach the injector: {}",
            kube_err(e)
        )
    })?;
    let review: Value = serde_json::from_str(&text).map_err(|e| {
        format!("the injector answered something else than an AdmissionReview: {e}")
    })?;
    let resp = &review["response"];
    if resp["uid"] != "trellisctl-check" {
        return Err(format!("the injector answered for uid {}", resp["uid"]));
    }
    match (resp["allowed"].as_bool(), resp["patch"].is_string()) {
        (Some(true), true) => Ok("a test pod gets the sidecar".into()),
        (Some(true), false) => Err("the injector allowed a test pod without a sidecar".into()),
        _ => Err(format!(
            "the injector refused a test pod: {}",
            resp["status"]["message"]
        )),
    }
}

async fn identity(client: &Client, ns: &str) -> Result<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = cms
        .get_opt("trellis-trust-bundle")
        .await
        .map_err(kube_err)?
        .ok_or("configmap trellis-trust-bundle not published: identity has not started")?;
    let pem = cm
        .data
        .as_ref()
        .and_then(|d| d.get("ca-bundle.crt"))
        .ok_or("trellis-trust-bundle has no ca-bundle.crt")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(err)?
        .as_secs() as i64;
    let anchors = valid_certificates(pem, now);
    if anchors == 0 {
        return Err("the trust bundle holds no currently valid certificate".into());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=trellis-identity");
    let list = pods.list(&lp).await.map_err(kube_err)?;
    let mut ready = 0;
    let mut seen = Vec::new();
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let path = format!(
            "/api/v1/namespaces/{ns}/pods/{name}:{}/proxy/ready",
            port::IDENTITY_ADMIN
        );
        let req = http::Request::get(&path).body(Vec::new()).map_err(err)?;
        match client.request_text(req).await {
            Ok(_) => ready += 1,
            Err(e) => seen.push(format!("{name}: {}", kube_err(e))),
        }
    }
    if ready == 0 {
        return Err(if seen.is_empty() {
            "no identity pod found".into()
        } else {
            format!("no identity pod is ready ({})", seen.join("; "))
        });
    }
    Ok(format!(
        "{ready} of {} replicas ready, {anchors} trust anchor(s)",
        list.items.len()
    ))
}

/// How many certificates of a PEM bundle are valid at `now` (Unix seconds).
pub fn valid_certificates(pem: &str, now: i64) -> usize {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|der| {
            x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| {
                let v = c.validity();
                v.not_before.timestamp() <= now && now < v.not_after.timestamp()
            })
        })
        .count()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn cni(client: &Client, ns: &str) -> Result<String, String> {
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    if ds.get_opt("trellis-cni").await.map_err(kube_err)?.is_none() {
        let cfg = injector_config(client, ns).await?;
        return if cfg["cniEnabled"] == false {
            Ok("CNI plugin off: meshed pods get trellis-init".into())
        } else {
            Err(format!("daemonset {ns}/trellis-cni not found"))
        };
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await.map_err(kube_err)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=trellis-cni");
    let pods = pods.list(&lp).await.map_err(kube_err)?;
    let ready_on: std::collections::BTreeSet<String> = pods
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let missing: Vec<String> = nodes
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .filter(|n| !ready_on.contains(n))
        .collect();
    if missing.is_empty() {
        Ok(format!(
            "{} of {} nodes",
            nodes.items.len(),
            nodes.items.len()
        ))
    } else {
        Err(format!("not ready on {}", missing.join(", ")))
    }
}

async fn proxies(client: &Client, ns: &str) -> Result<String, String> {
    let cfg = injector_config(client, ns).await?;
    let want = cfg["proxyImage"].as_str().unwrap_or_default().to_string();
    let controller = cfg["controllerIdentity"].as_str();
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default()).await.map_err(kube_err)?;
    let mut total = 0;
    let mut problems = Vec::new();
    for p in &list.items {
        let injected = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(key::INJECTED));
        if !injected {
            continue;
        }
        total += 1;
        let who = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        let status = p
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == contract::PROXY_CONTAINER_NAME));
        match status {
            None => problems.push(format!("{who}: no trellis-proxy status")),
            Some(s) if !s.ready => problems.push(format!("{who}: proxy not ready")),
            Some(s) if !want.is_empty() && s.image != want => {
                problems.push(format!("{who}: runs {} (restart it for {want})", s.image))
            }
            Some(_) => {
                if let Some(p) = controller_identity_problem(p, controller) {
                    problems.push(format!("{who}: {p} (restart it)"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(format!("{total} meshed pod(s), all ready on {want}"))
    } else {
        let more = problems.len().saturating_sub(5);
        problems.truncate(5);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Err(format!("{}{tail}", problems.join("; ")))
    }
}

/// Why a meshed pod cannot reach the controller as the mesh now serves it:
/// its proxy got the controller's SPIFFE id (or none) when it was injected,
/// and `controller.mtls` may have changed since. `want` is the injector's
/// `controllerIdentity`.
fn controller_identity_problem(pod: &Pod, want: Option<&str>) -> Option<String> {
    let has = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == contract::PROXY_CONTAINER_NAME))
        .and_then(|c| c.env.as_ref())
        .and_then(|env| {
            env.iter()
                .find(|e| e.name == contract::env::CONTROLLER_IDENTITY)
        })
        .and_then(|e| e.value.as_deref());
    match (has, want) {
        (None, Some(_)) => Some("reaches the controller in plaintext, but it requires mTLS".into()),
        (Some(_), None) => Some("requires mTLS of the controller, but it serves plaintext".into()),
        (Some(has), Some(want)) if has != want => {
            Some(format!("expects the controller as {has}, not {want}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
