use super::*;
use trellis_capture::PortRange;

/// A pod builder that reads like a sentence.
fn pod() -> PodInfo {
    PodInfo {
        containers: vec!["app".into()],
        ..PodInfo::default()
    }
}

impl PodInfo {
    fn annotated(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    fn container(mut self, name: &str) -> Self {
        self.containers.push(name.into());
        self
    }
}

#[test]
fn meshed_means_injected_and_not_opted_out() {
    assert!(!pod().is_meshed());
    assert!(pod().annotated(key::INJECTED, "true").is_meshed());
    assert!(!pod().annotated(key::INJECTED, "false").is_meshed());
    assert!(pod().container("trellis-proxy").is_meshed());
    assert!(
        !pod()
            .container("trellis-proxy")
            .annotated(key::INJECT, "disabled")
            .is_meshed()
    );
    assert!(
        pod()
            .container("trellis-proxy")
            .annotated(key::INJECT, "enabled")
            .is_meshed()
    );
}

#[test]
fn pod_json_reads_annotations_and_all_container_names() {
    let info = PodInfo::from_json(
        br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"b"}},
             "spec":{"containers":[{"name":"app","image":"x"}],"initContainers":[{"name":"trellis-proxy"}]}}"#,
    )
    .unwrap();
    assert_eq!(info.containers, ["app", "trellis-proxy"]);
    assert!(info.is_meshed());
    assert_eq!(PodInfo::from_json(b"{}").unwrap(), PodInfo::default());
    assert_eq!(
        PodInfo::from_json(br#"{"metadata":{"annotations":null},"spec":null}"#).unwrap(),
        PodInfo::default()
    );
}

#[test]
fn annotations_add_to_the_plugin_skips() {
    let base = CaptureConfig::default().skip_inbound("22").unwrap();
    let config = pod()
        .annotated(key::SKIP_INBOUND_PORTS, "8081, 9000-9001")
        .annotated(key::SKIP_OUTBOUND_CIDRS, "10.0.0.0/8")
        .capture_config(&base)
        .unwrap();
    assert_eq!(
        config.skip_inbound_ports,
        [
            PortRange::one(22),
            PortRange::one(8081),
            PortRange::new(9000, 9001).unwrap()
        ]
    );
    assert_eq!(config.skip_outbound_cidrs.len(), 1);
}

#[test]
fn a_bad_annotation_is_named() {
    let err = pod()
        .annotated(key::SKIP_OUTBOUND_PORTS, "smtp")
        .capture_config(&CaptureConfig::default())
        .unwrap_err();
    assert_eq!(err.code, code::INVALID_ANNOTATION);
    assert!(
        err.msg.contains("trellis.io/skip-outbound-ports"),
        "{err:?}"
    );
    assert!(err.msg.contains("smtp"), "{err:?}");
}

#[test]
fn kubernetes_pods_convert() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata":{"annotations":{"trellis.io/injected":"true"}},
            "spec":{"containers":[{"name":"app"}]}}"#,
    )
    .unwrap();
    let info = PodInfo::from(&pod);
    assert!(info.is_meshed());
    assert_eq!(info.containers, ["app"]);
}
