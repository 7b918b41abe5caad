//! A Kubernetes API server on loopback speaking the part of the protocol the
//! identity service uses: TokenReview (answered from a table of tokens, as
//! the real server answers from its signing keys), and Secrets and
//! ConfigMaps (get, create, replace with resourceVersion preconditions,
//! server-side apply). State plus recorded requests, no script of calls.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// How the API server answers a token.
#[derive(Clone, Debug)]
pub enum Review {
    /// A valid service-account token for these audiences.
    Valid {
        namespace: String,
        service_account: String,
        audiences: Vec<String>,
    },
    /// A valid token of a user that is not a service account.
    User(String),
    /// A token the server recognises but refuses (e.g. expired).
    Invalid { error: String },
}

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<String, Value>,
    version: u64,
    tokens: HashMap<String, Review>,
    requests: Vec<(String, String, Value)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running mock; stops when dropped.
#[derive(Debug)]
pub struct MockApi {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

impl MockApi {
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn token(&self, token: &str, review: Review) {
        self.inner
            .lock()
            .unwrap()
            .tokens
            .insert(token.into(), review);
    }

    /// A valid token of `ns/sa` for the identity audience.
    pub fn service_account_token(&self, token: &str, ns: &str, sa: &str) {
        self.token(
            token,
            Review::Valid {
                namespace: ns.into(),
                service_account: sa.into(),
                audiences: vec![trellis_api::contract::IDENTITY_TOKEN_AUDIENCE.into()],
            },
        );
    }

    /// Stores `obj` as if someone else (Helm) had written it.
    pub fn put(&self, ns: &str, plural: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        let key = format!("/api/v1/namespaces/{ns}/{plural}/{name}");
        inner.objects.insert(key, obj);
    }

    /// The stored object at `/api/v1/namespaces/<ns>/<plural>/<name>`.
    pub fn object(&self, ns: &str, plural: &str, name: &str) -> Option<Value> {
        let key = format!("/api/v1/namespaces/{ns}/{plural}/{name}");
        self.inner.lock().unwrap().objects.get(&key).cloned()
    }

    /// (method, path, body) of every request so far.
    pub fn requests(&self) -> Vec<(String, String, Value)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn handle(State(inner): State<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body: Bytes = match axum::body::to_bytes(request.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "body too large"),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = inner.lock().unwrap();
    inner
        .requests
        .push((method.to_string(), path.clone(), body.clone()));
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" && method == Method::POST {
        return token_review(&inner, body);
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (ns, plural, name) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, plural] => (*ns, *plural, None),
        ["api", "v1", "namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    };
    if !matches!(plural, "secrets" | "configmaps") {
        return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource");
    }
    let collection = format!("/api/v1/namespaces/{ns}/{plural}");
    let object_name = name.map(str::to_string).or_else(|| {
        body.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let Some(object_name) = object_name else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "no name");
    };
    let key = format!("{collection}/{object_name}");
    let existing = inner.objects.get(&key).cloned();
    let store = |inner: &mut Inner, mut obj: Value, code: StatusCode| {
        inner.version += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        obj["metadata"]["namespace"] = json!(ns);
        inner.objects.insert(key.clone(), obj.clone());
        (code, axum::Json(obj)).into_response()
    };
    match (method, name, existing) {
        (Method::GET, Some(_), Some(obj)) => (StatusCode::OK, axum::Json(obj)).into_response(),
        (Method::GET, Some(_), None) => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        (Method::POST, None, Some(_)) => {
            status(StatusCode::CONFLICT, "AlreadyExists", "already exists")
        }
        (Method::POST, None, None) => store(&mut inner, body, StatusCode::CREATED),
        (Method::PUT, Some(_), None) => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        (Method::PUT, Some(_), Some(old)) => {
            let want = body.pointer("/metadata/resourceVersion");
            if want.is_some() && want != old.pointer("/metadata/resourceVersion") {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified",
                );
            }
            store(&mut inner, body, StatusCode::OK)
        }
        (Method::PATCH, Some(_), old) => {
            // Server-side apply of whole fields: labels merge, data replaces.
            let mut obj = old.unwrap_or_else(|| json!({"metadata": {}}));
            for (k, v) in body.as_object().into_iter().flatten() {
                if k == "metadata" {
                    for (mk, mv) in v.as_object().into_iter().flatten() {
                        obj["metadata"][mk] = mv.clone();
                    }
                } else {
                    obj[k] = v.clone();
                }
            }
            store(&mut inner, obj, StatusCode::OK)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "unsupported",
        ),
    }
}

fn token_review(inner: &Inner, body: Value) -> Response {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let wanted: Vec<String> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let status_of = match inner.tokens.get(token) {
        Some(Review::Valid {
            namespace,
            service_account,
            audiences,
        }) => {
            let common: Vec<&String> = audiences.iter().filter(|a| wanted.contains(a)).collect();
            if common.is_empty() && !wanted.is_empty() {
                json!({"authenticated": false, "error": "token audiences are invalid"})
            } else {
                json!({
                    "authenticated": true,
                    "audiences": common,
                    "user": {
                        "username": format!("system:serviceaccount:{namespace}:{service_account}"),
                        "groups": ["system:serviceaccounts"],
                    }
                })
            }
        }
        Some(Review::User(name)) => json!({
            "authenticated": true,
            "audiences": wanted,
            "user": {"username": name},
        }),
        Some(Review::Invalid { error }) => json!({"authenticated": false, "error": error}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut review = body;
    review["status"] = status_of;
    (StatusCode::CREATED, axum::Json(review)).into_response()
}
