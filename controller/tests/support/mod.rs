//! Fixture builders: what Kubernetes would compute for a set of manifests
//! (ClusterIPs, pods with IPs, EndpointSlices), and small builders that read
//! like sentences for hand-made clusters.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trellis_controller::index::{Index, Settings};
use trellis_controller::objects::Object;
use trellis_controller::source::dir;

pub fn third_party() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../third_party/gateway-api/conformance")
}

/// A Service: `svc("shop", "web").cluster_ip("198.19.0.1").port("http", 80, 8080)`.
pub fn svc(ns: &str, name: &str) -> SvcBuilder {
    SvcBuilder(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec::default()),
        ..Service::default()
    })
}

pub struct SvcBuilder(pub Service);

impl SvcBuilder {
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.spec().cluster_ip = Some(ip.to_string());
        self
    }

    pub fn port(mut self, name: &str, port: i32, target: i32) -> Self {
        self.spec().ports.get_or_insert_default().push(ServicePort {
            name: Some(name.to_string()),
            port,
            target_port: Some(IntOrString::Int(target)),
            ..ServicePort::default()
        });
        self
    }

    pub fn app_protocol(mut self, app: &str) -> Self {
        if let Some(p) = self.spec().ports.as_mut().and_then(|p| p.last_mut()) {
            p.app_protocol = Some(app.to_string());
        }
        self
    }

    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }

    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_default()
    }

    pub fn build(self) -> Object {
        Object::Service(self.0)
    }
}

/// A pod: `pod("shop", "web-0").ip("198.18.0.1").meshed()`.
pub fn pod(ns: &str, name: &str) -> PodBuilder {
    PodBuilder(Pod {
        metadata: meta(ns, name),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus::default()),
    })
}

pub struct PodBuilder(pub Pod);

impl PodBuilder {
    pub fn ip(mut self, ip: &str) -> Self {
        self.0.status.get_or_insert_default().pod_ip = Some(ip.to_string());
        self
    }

    pub fn meshed(mut self) -> Self {
        self.0
            .spec
            .get_or_insert_default()
            .containers
            .push(Container {
                name: trellis_api::contract::PROXY_CONTAINER_NAME.into(),
                ..Container::default()
            });
        self
    }

    pub fn service_account(mut self, sa: &str) -> Self {
        self.0.spec.get_or_insert_default().service_account_name = Some(sa.into());
        self
    }

    pub fn labels(mut self, labels: &BTreeMap<String, String>) -> Self {
        self.0.metadata.labels = Some(labels.clone());
        self
    }

    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }

    pub fn build(self) -> Object {
        Object::Pod(self.0)
    }
}

/// An EndpointSlice of a Service:
/// `slice("shop", "web").port("http", 8080).endpoint("web-0", "198.18.0.1")`.
pub fn slice(ns: &str, service: &str) -> SliceBuilder {
    let mut m = meta(ns, &format!("{service}-slice"));
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        service.to_string(),
    )]));
    SliceBuilder(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Default::default(),
        ports: Some(Vec::new()),
    })
}

pub struct SliceBuilder(pub EndpointSlice);

impl SliceBuilder {
    pub fn port(mut self, name: &str, port: i32) -> Self {
        self.0.ports.get_or_insert_default().push(EndpointPort {
            name: Some(name.to_string()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        });
        self
    }

    pub fn app_protocol(mut self, app: &str) -> Self {
        if let Some(p) = self.0.ports.as_mut().and_then(|p| p.last_mut()) {
            p.app_protocol = Some(app.to_string());
        }
        self
    }

    fn push(mut self, pod: &str, ip: &str, ready: bool) -> Self {
        let ns = self.0.metadata.namespace.clone();
        let ep = Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                namespace: ns,
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        };
        push_endpoint(&mut self.0, ep);
        self
    }

    pub fn endpoint(self, pod: &str, ip: &str) -> Self {
        self.push(pod, ip, true)
    }

    pub fn unready_endpoint(self, pod: &str, ip: &str) -> Self {
        self.push(pod, ip, false)
    }

    pub fn build(self) -> Object {
        Object::EndpointSlice(self.0)
    }
}

/// `EndpointSlice.endpoints` is a `Vec` or an `Option<Vec>` depending on the
/// Kubernetes version k8s-openapi is built for; this works with both.
fn push_endpoint(slice: &mut EndpointSlice, ep: Endpoint) {
    let mut v = serde_json::to_value(&*slice).unwrap();
    let eps = v
        .as_object_mut()
        .unwrap()
        .entry("endpoints")
        .or_insert_with(|| Value::Array(Vec::new()));
    if eps.is_null() {
        *eps = Value::Array(Vec::new());
    }
    eps.as_array_mut()
        .unwrap()
        .push(serde_json::to_value(ep).unwrap());
    *slice = serde_json::from_value(v).unwrap();
}

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

/// Objects parsed from YAML text (a test's own manifests).
pub fn yaml(text: &str) -> Vec<Object> {
    let (objects, errors) = dir::parse(Path::new("inline.yaml"), text);
    assert!(errors.is_empty(), "{errors:?}");
    objects
}

/// What Kubernetes computes for `files`: every Service gets a ClusterIP
/// (`198.19.0.N`, in order), every Deployment one meshed pod (`NAME-0`,
/// `198.18.0.N`) with its template's labels, and every Service with a
/// selector an EndpointSlice of the pods it selects. Returns the parsed
/// objects (with ClusterIPs) plus the synthetic ones.
pub fn cluster(files: &[PathBuf]) -> Vec<Object> {
    let mut values = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        values.extend(docs.into_iter().filter(|v| !v.is_null()));
    }
    let mut next_svc = 1;
    let mut next_pod = 1;
    let mut pods: Vec<(String, String, BTreeMap<String, String>, String)> = Vec::new();
    let mut out_values = Vec::new();
    for mut v in values {
        match v["kind"].as_str() {
            Some("Service") => {
                v["spec"]["clusterIP"] = Value::String(format!("198.19.0.{next_svc}"));
                next_svc += 1;
                out_values.push(v);
            }
            Some("Deployment") => {
                let ns = v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                let name = format!("{}-0", v["metadata"]["name"].as_str().unwrap());
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(v["spec"]["template"]["metadata"]["labels"].clone())
                        .unwrap_or_default();
                pods.push((ns, name, labels, format!("198.18.0.{next_pod}")));
                next_pod += 1;
            }
            _ => out_values.push(v),
        }
    }
    let mut objects: Vec<Object> = out_values
        .into_iter()
        .filter_map(|v| Object::from_value(v).unwrap())
        .collect();
    for (ns, name, labels, ip) in &pods {
        objects.push(pod(ns, name).ip(ip).labels(labels).meshed().build());
    }
    let services: Vec<Service> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    for s in services {
        let ns = s.metadata.namespace.clone().unwrap();
        let name = s.metadata.name.clone().unwrap();
        let spec = s.spec.clone().unwrap();
        let Some(selector) = spec.selector.clone() else {
            continue;
        };
        let mut b = slice(&ns, &name);
        for p in spec.ports.iter().flatten() {
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => *n,
                _ => p.port,
            };
            b = b.port(p.name.as_deref().unwrap_or(""), target);
            if let Some(app) = &p.app_protocol {
                b = b.app_protocol(app);
            }
        }
        for (pns, pname, labels, ip) in &pods {
            if *pns == ns && selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                b = b.endpoint(pname, ip);
            }
        }
        objects.push(b.build());
    }
    objects
}

/// An index holding `objects`.
pub fn index(objects: Vec<Object>) -> Index {
    let mut index = Index::new(Settings::default());
    for o in objects {
        index.apply(o);
    }
    index
}
