//! Kubernetes manifests as the sandbox reads them: multi-document YAML (or
//! JSON) files, kept as JSON values so that every field — including kinds the
//! sandbox knows nothing about — reaches the controller unchanged.
//!
//! The sandbox itself only interprets Namespaces, Deployments (and bare Pods)
//! and Services; [`pods_of`] expands a Deployment into the pods a ReplicaSet
//! would create, with Kubernetes-looking, deterministic names.

use crate::names;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {origin} is not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("manifest {origin}: document {index} has no {field}")]
    Missing {
        origin: String,
        index: usize,
        field: &'static str,
    },
    #[error("{kind} {namespace}/{name}: {message}")]
    Invalid {
        kind: String,
        namespace: String,
        name: String,
        message: String,
    },
}

/// Kinds without a namespace (the rest default to `default`).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "GatewayClass",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "XMesh",
];

/// Identifies an object the way the API server does (group-less: kinds do not
/// collide among what the sandbox handles).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Deserialize)]
pub struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One Kubernetes object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Object(pub Value);

impl Object {
    pub fn key(&self) -> Key {
        Key {
            kind: self.kind().to_string(),
            namespace: self.namespace().to_string(),
            name: self.name().to_string(),
        }
    }
    pub fn kind(&self) -> &str {
        self.0["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.0["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.0["metadata"]["namespace"].as_str().unwrap_or_default()
    }
    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(&self.0["metadata"]["labels"])
    }
    pub fn annotations(&self) -> BTreeMap<String, String> {
        string_map(&self.0["metadata"]["annotations"])
    }
}

pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses every document of a YAML (or JSON) text; `origin` names it in errors.
/// Empty documents are skipped; namespaced objects without a namespace get
/// `default`, as `kubectl apply` does.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Object>, Error> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (index, mut doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if doc.get("kind").and_then(Value::as_str).is_none() {
            return Err(Error::Missing {
                origin: origin.to_string(),
                index,
                field: "kind",
            });
        }
        if doc["kind"] == "List" {
            for item in doc["items"].as_array().cloned().unwrap_or_default() {
                out.extend(parse(&item.to_string(), origin)?);
            }
            continue;
        }
        if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(Error::Missing {
                origin: origin.to_string(),
                index,
                field: "metadata.name",
            });
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if !CLUSTER_SCOPED.contains(&kind.as_str()) && doc["metadata"]["namespace"].is_null() {
            doc["metadata"]["namespace"] = Value::String("default".into());
        }
        out.push(Object(doc));
    }
    Ok(out)
}

/// Reads manifests from files, or from every `.yaml`/`.yml`/`.json` file of a
/// directory (sorted by name), in the order given.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<Object>, Error> {
    let mut out = Vec::new();
    for path in paths {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            out.extend(read_file(&file)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Object>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// The part of a container the sandbox runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<ContainerPort>,
    pub readiness_probe: Option<Probe>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    pub tcp_socket: Option<ProbePort>,
    pub http_get: Option<ProbePort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ProbePort {
    pub port: Value,
}

/// One pod the sandbox runs, as a ReplicaSet of the Deployment would create it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    /// The Deployment that owns it (empty for a bare Pod).
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<Container>,
    /// The pod template as written (metadata + spec), for the controller.
    pub template: Value,
}

impl PodPlan {
    /// The ports the pod's apps listen on, as far as the manifest tells.
    pub fn declared_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(|p| p.container_port))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Resolves a Service `targetPort` (number or container port name).
    pub fn resolve_port(&self, target: &Value) -> Option<u16> {
        match target {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.parse().ok().or_else(|| {
                self.containers
                    .iter()
                    .flat_map(|c| c.ports.iter())
                    .find(|p| p.name.as_deref() == Some(s.as_str()))
                    .map(|p| p.container_port)
            }),
            _ => None,
        }
    }
}

fn invalid(obj: &Object, message: impl Into<String>) -> Error {
    Error::Invalid {
        kind: obj.kind().to_string(),
        namespace: obj.namespace().to_string(),
        name: obj.name().to_string(),
        message: message.into(),
    }
}

/// The pods of a Deployment (or the pod of a bare Pod); other kinds have none.
pub fn pods_of(obj: &Object) -> Result<Vec<PodPlan>, Error> {
    let (template, replicas, owner) = match obj.kind() {
        "Deployment" => {
            let spec = &obj.0["spec"];
            let replicas = match &spec["replicas"] {
                Value::Null => 1,
                v => v
                    .as_u64()
                    .ok_or_else(|| invalid(obj, format!("bad spec.replicas {v}")))?,
            };
            (spec["template"].clone(), replicas, obj.name().to_string())
        }
        "Pod" => (obj.0.clone(), 1, String::new()),
        _ => return Ok(Vec::new()),
    };
    let containers: Vec<Container> = serde_json::from_value(template["spec"]["containers"].clone())
        .map_err(|e| invalid(obj, format!("bad containers: {e}")))?;
    if containers.is_empty() {
        return Err(invalid(obj, "the pod template has no containers"));
    }
    let mut labels = string_map(&template["metadata"]["labels"]);
    let annotations = string_map(&template["metadata"]["annotations"]);
    let service_account = template["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if owner.is_empty() {
        return Ok(vec![PodPlan {
            namespace: obj.namespace().to_string(),
            name: obj.name().to_string(),
            owner,
            labels,
            annotations,
            service_account,
            containers,
            template,
        }]);
    }
    // Like a ReplicaSet: a template hash in the name and the label, then a
    // per-replica suffix.
    let hash = names::k8s_suffix(&template.to_string(), 10);
    labels.insert("pod-template-hash".into(), hash.clone());
    Ok((0..replicas)
        .map(|i| PodPlan {
            namespace: obj.namespace().to_string(),
            name: format!(
                "{owner}-{hash}-{}",
                names::k8s_suffix(&format!("{hash}/{i}"), 5)
            ),
            owner: owner.clone(),
            labels: labels.clone(),
            annotations: annotations.clone(),
            service_account: service_account.clone(),
            containers: containers.clone(),
            template: template.clone(),
        })
        .collect())
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<Value>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// `targetPort`, defaulting to `port` as Kubernetes does.
    pub fn target(&self) -> Value {
        self.target_port
            .clone()
            .unwrap_or_else(|| Value::from(self.port))
    }
}

/// What the sandbox needs of a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `spec.clusterIP` as written (`None` when absent; "None" for headless).
    pub cluster_ip: Option<String>,
}

impl Service {
    pub fn from_object(obj: &Object) -> Result<Self, Error> {
        let spec = &obj.0["spec"];
        let ports: Vec<ServicePort> = serde_json::from_value(match &spec["ports"] {
            Value::Null => Value::Array(Vec::new()),
            v => v.clone(),
        })
        .map_err(|e| invalid(obj, format!("bad spec.ports: {e}")))?;
        Ok(Self {
            namespace: obj.namespace().to_string(),
            name: obj.name().to_string(),
            selector: string_map(&spec["selector"]),
            ports,
            cluster_ip: spec["clusterIP"].as_str().map(String::from),
        })
    }

    /// Whether a pod with these labels backs this Service.
    pub fn selects(&self, pod: &PodPlan) -> bool {
        pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests;
