//! An in-memory Kubernetes API server on loopback, for the tests of the parts
//! that talk to one (the injector's certificate sync, `trellisctl install` and
//! `check`, the controller's gateway deployer). There is no API server on the
//! development machines; this one speaks enough of the real protocol that the
//! code under test uses a real `kube::Client` unchanged:
//!
//! - discovery (`/version`, `/api/v1`, `/apis/<group>/<version>`) from a
//!   table of the kinds Trellis touches plus any kind that was stored;
//! - get, list (with `labelSelector` equality), create, replace (with
//!   `resourceVersion` preconditions), delete;
//! - patch: JSON Patch, merge patch, strategic merge (as a merge) and
//!   server-side apply (as a merge that creates), on objects and `/status`;
//! - watch (`?watch=true`): the changes after the given `resourceVersion`.
//!
//! Tests seed it with recorded objects (`MockApi::start(objects)`), then
//! read what was written (`object`, `objects`, `requests`).

use axum::{
    Router,
    extract::{Request, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};
use tokio::sync::broadcast;

mod ops;
use ops::{create, delete, get, list, patch, replace, watch};

/// (group, version, kind, plural, namespaced) of the kinds discovery knows
/// before anything is stored.
const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Endpoints", "endpoints", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    (
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        false,
    ),
    (
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        true,
    ),
    (
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
    ),
    (
        "gateway.networking.x-k8s.io",
        "v1alpha1",
        "XMesh",
        "xmeshes",
        false,
    ),
    (
        "policy.trellis.io",
        "v1alpha1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        true,
    ),
];

/// The plural resource name and scope of a kind.
pub fn resource_of(group: &str, kind: &str) -> (String, bool) {
    if let Some(k) = KINDS.iter().find(|k| k.0 == group && k.2 == kind) {
        return (k.3.to_string(), k.4);
    }
    let lower = kind.to_ascii_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    (plural, true)
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug, Clone)]
struct Event {
    prefix: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    version: u64,
    requests: Vec<Recorded>,
    /// Answers of the API server's service and pod proxy, by path.
    proxied: BTreeMap<String, (u16, String)>,
    /// GVKs stored at least once, for discovery: (group, version, kind, plural, namespaced).
    extra_kinds: Vec<(String, String, String, String, bool)>,
}

#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    server_version: String,
}

/// A running mock API server; stops when dropped.
#[derive(Debug)]
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a path points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    status: bool,
}

impl Target {
    fn key(&self) -> Option<String> {
        let name = self.name.as_ref()?;
        Some(format!("{}/{}", self.collection(), name))
    }
    fn collection(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.prefix, self.resource),
            None => format!("{}/{}", self.prefix, self.resource),
        }
    }
    fn matches(&self, key: &str) -> bool {
        match &self.namespace {
            Some(_) => key
                .rsplit_once('/')
                .is_some_and(|(c, _)| c == self.collection()),
            None => key.rsplit_once('/').is_some_and(|(c, _)| {
                c == self.collection()
                    || (c.starts_with(&format!("{}/namespaces/", self.prefix))
                        && c.ends_with(&format!("/{}", self.resource)))
            }),
        }
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*r];
            v.extend_from_slice(more);
            v
        }),
        other => (None, other.to_vec()),
    };
    let (resource, name, status) = match rest.as_slice() {
        [r] => (r.to_string(), None, false),
        [r, n] => (r.to_string(), Some(n.to_string()), false),
        [r, n, "status"] => (r.to_string(), Some(n.to_string()), true),
        _ => return None,
    };
    Some(Target {
        prefix,
        namespace,
        resource,
        name,
        status,
    })
}

/// The storage key of an object, from its own apiVersion/kind/namespace/name.
pub fn key_of(obj: &Value) -> Option<String> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let (group, prefix) = match api_version.split_once('/') {
        Some((g, _)) => (g, format!("/apis/{api_version}")),
        None => ("", format!("/api/{api_version}")),
    };
    let (plural, namespaced) = resource_of(group, kind);
    Some(if namespaced {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        format!("{prefix}/namespaces/{ns}/{plural}/{name}")
    } else {
        format!("{prefix}/{plural}/{name}")
    })
}

impl MockApi {
    /// Starts a server on 127.0.0.1 holding `objects`, reporting Kubernetes
    /// `v1.34.0` as its version.
    pub async fn start(objects: impl IntoIterator<Item = Value>) -> Self {
        Self::start_with_version(objects, "v1.34.0").await
    }

    /// Starts a server reporting `git_version` from `/version`.
    pub async fn start_with_version(
        objects: impl IntoIterator<Item = Value>,
        git_version: &str,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events,
            server_version: git_version.to_string(),
        });
        for o in objects {
            put(&shared, o);
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding a loopback port for the mock API server");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockApi { addr, shared, task }
    }

    /// A client for this server (default namespace `default`, no retries).
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr)
            .parse()
            .expect("a loopback URL parses");
        let mut config = kube::Config::new(url);
        // Tests see every answer as it is; a 503 is not retried for minutes.
        config.default_retry = false;
        kube::Client::try_from(config).expect("a client for the mock API server")
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stores `obj` as if someone else had written it.
    pub fn put(&self, obj: Value) {
        put(&self.shared, obj);
    }

    /// The stored object with the same apiVersion/kind/namespace/name as `like`.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let mut probe =
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = namespace {
            probe["metadata"]["namespace"] = json!(ns);
        }
        let key = key_of(&probe)?;
        self.shared.store.lock().objects.get(&key).cloned()
    }

    /// Every stored object of a kind.
    pub fn objects_of(&self, kind: &str) -> Vec<Value> {
        self.shared
            .store
            .lock()
            .objects
            .values()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    /// Answers `GET`/`POST` on `path` (a `.../proxy/...` path of a Service or
    /// Pod) with `status` and `body`, as if the API server had reached it.
    pub fn proxy(&self, path: &str, status: u16, body: &str) {
        self.shared
            .store
            .lock()
            .proxied
            .insert(path.to_string(), (status, body.to_string()));
    }

    /// Every stored object.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.store.lock().objects.values().cloned().collect()
    }

    /// The requests served so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.store.lock().requests.clone()
    }
}

fn put(shared: &Shared, mut obj: Value) {
    let Some(key) = key_of(&obj) else { return };
    let mut store = shared.store.lock();
    store.version += 1;
    let rv = store.version.to_string();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{rv}")));
    }
    remember_kind(&mut store, &obj);
    let prefix = key
        .rsplit_once('/')
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    let kind = if store.objects.insert(key, obj.clone()).is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    let _ = shared.events.send(Event {
        prefix,
        kind,
        object: obj,
    });
}

fn remember_kind(store: &mut Store, obj: &Value) {
    let (Some(av), Some(kind)) = (
        obj.get("apiVersion").and_then(Value::as_str),
        obj.get("kind").and_then(Value::as_str),
    ) else {
        return;
    };
    let (group, version) = av.split_once('/').unwrap_or(("", av));
    if KINDS
        .iter()
        .any(|k| k.0 == group && k.1 == version && k.2 == kind)
        || store
            .extra_kinds
            .iter()
            .any(|k| k.0 == group && k.1 == version && k.2 == kind)
    {
        return;
    }
    let (plural, namespaced) = resource_of(group, kind);
    store.extra_kinds.push((
        group.into(),
        version.into(),
        kind.into(),
        plural,
        namespaced,
    ));
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn ok(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    shared.store.lock().requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if path.contains("/proxy/") {
        let answer = shared.store.lock().proxied.get(&path).cloned();
        return match answer {
            Some((code, body)) => Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body))
                .unwrap_or_else(|e| {
                    status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        e.to_string(),
                    )
                }),
            None => status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("no endpoints available for {path}"),
            ),
        };
    }
    if path == "/version" {
        return ok(StatusCode::OK, version_info(&shared.server_version));
    }
    if method == Method::GET
        && let Some(list) = discovery(&shared, &path)
    {
        return ok(StatusCode::OK, list);
    }
    let Some(target) = parse_path(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {path}"),
        );
    };
    let params = query_params(&query);
    match (method, target.name.is_some()) {
        (Method::GET, false) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(&shared, &target, &params)
        }
        (Method::GET, false) => list(&shared, &target, &params),
        (Method::GET, true) => get(&shared, &target),
        (Method::POST, false) => create(&shared, &target, &body),
        (Method::PUT, true) => replace(&shared, &target, &body),
        (Method::PATCH, true) => patch(&shared, &target, &headers, &body, &params),
        (Method::DELETE, true) => delete(&shared, &target),
        (m, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{m} {path} is not supported"),
        ),
    }
}

fn version_info(git_version: &str) -> Value {
    let trimmed = git_version.trim_start_matches('v');
    let mut parts = trimmed.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    json!({
        "major": major, "minor": minor, "gitVersion": git_version,
        "gitCommit": "mock", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn discovery(shared: &Shared, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let store = shared.store.lock();
    let extra = store
        .extra_kinds
        .iter()
        .map(|k| (k.0.as_str(), k.1.as_str(), k.2.as_str(), k.3.as_str(), k.4));
    let mut resources = Vec::new();
    for (g, v, kind, plural, namespaced) in KINDS.iter().copied().chain(extra) {
        if g != group || v != version {
            continue;
        }
        let verbs = json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ]);
        resources.push(json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs}));
        resources.push(json!({"name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ");
            (k.to_string(), v)
        })
        .collect()
}

fn label_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        let have = obj
            .pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str);
        if term.contains('=') {
            have == Some(v)
        } else {
            have.is_some()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_objects() {
        let t = parse_path("/api/v1/namespaces/trellis/secrets/tls").unwrap();
        assert_eq!(t.key().unwrap(), "/api/v1/namespaces/trellis/secrets/tls");
        let t = parse_path("/api/v1/namespaces/trellis").unwrap();
        assert_eq!(t.key().unwrap(), "/api/v1/namespaces/trellis");
        let t = parse_path("/apis/gateway.networking.k8s.io/v1/namespaces/a/gateways/g/status")
            .unwrap();
        assert!(t.status);
        let all = parse_path("/api/v1/pods").unwrap();
        assert!(all.matches("/api/v1/namespaces/x/pods/p"));
        assert!(!all.matches("/api/v1/namespaces/x/services/p"));
        assert_eq!(
            key_of(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"}})).unwrap(),
            "/api/v1/namespaces/n/secrets/s"
        );
    }

    #[test]
    fn apply_merges_named_lists() {
        let mut doc = json!({"webhooks": [{"name": "a", "x": 1}, {"name": "b"}]});
        ops::apply_merge(&mut doc, &json!({"webhooks": [{"name": "b", "y": 2}]}));
        assert_eq!(
            doc,
            json!({"webhooks": [{"name": "a", "x": 1}, {"name": "b", "y": 2}]})
        );
    }
}
