use super::*;
use pretty_assertions::assert_eq;

const MESH: &str = include_str!("../../../third_party/gateway-api/conformance/mesh/manifests.yaml");

#[test]
fn reads_the_conformance_mesh_manifests() {
    let objects = parse(MESH, "mesh").unwrap();
    let kinds: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert!(kinds.contains(&"Namespace gateway-conformance-mesh".to_string()));
    assert!(kinds.contains(&"Deployment gateway-conformance-mesh/echo-v1".to_string()));
    assert!(kinds.contains(&"Service gateway-conformance-mesh/echo".to_string()));
    let deployments: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind() == "Deployment")
        .collect();
    let pods: Vec<PodPlan> = deployments
        .iter()
        .flat_map(|d| pods_of(d).unwrap())
        .collect();
    assert_eq!(pods.len(), deployments.len(), "one replica by default");
    let v1 = &pods[0];
    assert!(v1.name.starts_with("echo-v1-"), "{}", v1.name);
    assert_eq!(v1.labels["app"], "echo");
    assert_eq!(v1.labels["version"], "v1");
    assert_eq!(v1.service_account, "default");
    assert_eq!(v1.containers[0].args[0], "--tcp=9090");
}

#[test]
fn replicas_get_distinct_stable_names() {
    let text = "
kind: Deployment
apiVersion: apps/v1
metadata: {name: web}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: busybox, command: [sleep, '1000'], ports: [{name: http, containerPort: 80}]}]
";
    let objs = parse(text, "t").unwrap();
    assert_eq!(
        objs[0].namespace(),
        "default",
        "namespace defaults like kubectl"
    );
    let a = pods_of(&objs[0]).unwrap();
    let b = pods_of(&objs[0]).unwrap();
    assert_eq!(a, b);
    let names: std::collections::BTreeSet<&str> = a.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(a[0].resolve_port(&Value::from("http")), Some(80));
    assert_eq!(a[0].resolve_port(&Value::from(8080)), Some(8080));
    assert_eq!(a[0].resolve_port(&Value::from("nope")), None);
    assert_eq!(a[0].declared_ports(), vec![80]);
}

#[test]
fn services_select_pods_by_labels_in_their_namespace() {
    let objects = parse(MESH, "mesh").unwrap();
    let svc = |name: &str| {
        Service::from_object(
            objects
                .iter()
                .find(|o| {
                    o.kind() == "Service"
                        && o.name() == name
                        && o.namespace() == "gateway-conformance-mesh"
                })
                .unwrap(),
        )
        .unwrap()
    };
    let pods: Vec<PodPlan> = objects.iter().flat_map(|o| pods_of(o).unwrap()).collect();
    let selected = |s: &Service| -> Vec<String> {
        pods.iter()
            .filter(|p| s.selects(p))
            .map(|p| format!("{}/{}", p.namespace, p.owner))
            .collect()
    };
    assert_eq!(
        selected(&svc("echo")),
        vec![
            "gateway-conformance-mesh/echo-v1",
            "gateway-conformance-mesh/echo-v2"
        ]
    );
    assert_eq!(
        selected(&svc("echo-v1")),
        vec!["gateway-conformance-mesh/echo-v1"]
    );
    let echo = svc("echo");
    let http = echo
        .ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(http.target(), Value::from(8080));
    let alt = echo
        .ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http-alt"))
        .unwrap();
    assert_eq!(
        alt.target(),
        Value::from(8080),
        "targetPort defaults to port"
    );
}

#[test]
fn bad_manifests_name_what_is_wrong() {
    let err = parse("kind: Service\nmetadata: {}\n", "x.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest x.yaml: document 0 has no metadata.name"
    );
    let err = parse("metadata: {name: a}\n", "x.yaml").unwrap_err();
    assert_eq!(err.to_string(), "manifest x.yaml: document 0 has no kind");
    let err = parse("kind: [\n", "x.yaml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("manifest x.yaml is not valid YAML"),
        "{err}"
    );
    let objs = parse(
        "kind: Deployment\nmetadata: {name: d}\nspec: {replicas: many, template: {spec: {containers: [{name: a}]}}}\n",
        "x",
    )
    .unwrap();
    let err = pods_of(&objs[0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment default/d: bad spec.replicas \"many\""
    );
}
