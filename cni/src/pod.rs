//! What the plugin needs to know about a pod: whether it is meshed and which
//! of its traffic the proxy must leave alone. Read from the Pod object (the
//! API server's or a file's); only annotations and container names matter.

use crate::spec::{CniError, code};
use serde::Deserialize;
use std::collections::BTreeMap;
use trellis_api::contract::{INJECT_DISABLED, PROXY_CONTAINER_NAME, key};
use trellis_capture::CaptureConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub annotations: BTreeMap<String, String>,
    /// Names of the containers and init containers (a native sidecar is an
    /// init container).
    pub containers: Vec<String>,
}

impl PodInfo {
    /// Reads a Pod object in JSON; absent fields are empty.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Pod {
            metadata: Option<Meta>,
            spec: Option<Spec>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spec {
            containers: Option<Vec<Named>>,
            init_containers: Option<Vec<Named>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Named {
            name: String,
        }
        let pod: Pod = serde_json::from_slice(bytes)?;
        let (metadata, spec) = (
            pod.metadata.unwrap_or_default(),
            pod.spec.unwrap_or_default(),
        );
        Ok(PodInfo {
            annotations: metadata.annotations.unwrap_or_default(),
            containers: [spec.containers, spec.init_containers]
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.name)
                .collect(),
        })
    }

    /// Meshed: injected (annotation or a `trellis-proxy` container) and not
    /// opted out with `trellis.io/inject: disabled`.
    pub fn is_meshed(&self) -> bool {
        let opted_out =
            self.annotations.get(key::INJECT).map(String::as_str) == Some(INJECT_DISABLED);
        let annotated = self
            .annotations
            .get(key::INJECTED)
            .is_some_and(|v| v != "false");
        let has_proxy = self.containers.iter().any(|c| c == PROXY_CONTAINER_NAME);
        (annotated || has_proxy) && !opted_out
    }

    /// The plugin's capture settings plus the pod's skip annotations.
    pub fn capture_config(&self, base: &CaptureConfig) -> Result<CaptureConfig, CniError> {
        let mut config = base.clone();
        for (annotation, add) in [
            (
                key::SKIP_INBOUND_PORTS,
                CaptureConfig::skip_inbound as fn(CaptureConfig, &str) -> _,
            ),
            (key::SKIP_OUTBOUND_PORTS, CaptureConfig::skip_outbound),
            (key::SKIP_OUTBOUND_CIDRS, CaptureConfig::skip_cidrs),
        ] {
            if let Some(value) = self.annotations.get(annotation) {
                config = add(config, value).map_err(|e| {
                    CniError::new(
                        code::INVALID_ANNOTATION,
                        format!("annotation {annotation}: {e}"),
                    )
                })?;
            }
        }
        Ok(config)
    }
}

impl From<&k8s_openapi::api::core::v1::Pod> for PodInfo {
    fn from(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let spec = pod.spec.as_ref();
        PodInfo {
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            containers: spec
                .map(|s| s.containers.iter())
                .into_iter()
                .flatten()
                .chain(
                    spec.and_then(|s| s.init_containers.as_ref())
                        .into_iter()
                        .flatten(),
                )
                .map(|c| c.name.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
