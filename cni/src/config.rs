//! The network configuration on stdin: the CNI fields, `prevResult` (kept as
//! the exact bytes the runtime sent, so ADD can hand it back unchanged) and
//! our own fields (docs/decisions.md, "CNI and capture").

use crate::spec::{CniError, SUPPORTED_VERSIONS, code};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::PathBuf;
use trellis_capture::{Backend, CaptureConfig, Families};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    prev_result: Option<Box<RawValue>>,
    pod_metadata_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    backend: Option<String>,
    #[serde(default)]
    skip_inbound_ports: String,
    #[serde(default)]
    skip_outbound_ports: String,
    #[serde(default)]
    skip_outbound_cidrs: String,
    ipv6: Option<bool>,
    log_level: Option<String>,
}

/// Where pod metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    /// `<dir>/<namespace>/<name>.json` (the sandbox).
    Dir(PathBuf),
    /// The API server named by a kubeconfig file.
    Kubeconfig(PathBuf),
}

/// A validated configuration.
#[derive(Debug)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub prev_result: Option<Box<RawValue>>,
    pub source: MetadataSource,
    pub backend: Backend,
    /// The plugin-wide capture settings; a pod's annotations add to them.
    pub capture: CaptureConfig,
    pub log_level: String,
}

/// The `cniVersion` of a configuration, if it has one, for error output
/// when the rest of it is invalid.
pub fn version_of(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<V>(stdin).ok()?.cni_version
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let raw: Raw = serde_json::from_slice(stdin).map_err(|e| {
            let c = if e.is_data() {
                code::INVALID_CONFIG
            } else {
                code::DECODE
            };
            CniError::new(c, format!("invalid network configuration: {e}"))
        })?;
        let invalid = |msg: String| CniError::new(code::INVALID_CONFIG, msg);
        let cni_version = raw
            .cni_version
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid("network configuration has no cniVersion".into()))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("incompatible CNI version {cni_version:?}"),
            )
            .details(format!(
                "trellis-cni supports {}",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let name = raw
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("network configuration has no name".into()))?;
        if raw.kind.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("network configuration has no type".into()));
        }
        let source = match (raw.pod_metadata_dir, raw.kubeconfig) {
            (Some(dir), None) => MetadataSource::Dir(dir),
            (None, Some(path)) => MetadataSource::Kubeconfig(path),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "podMetadataDir and kubeconfig are both set: give one source of pod metadata"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "neither podMetadataDir nor kubeconfig is set: trellis-cni needs one to read pod annotations"
                        .into(),
                ));
            }
        };
        let backend = match raw.backend.as_deref() {
            None => Backend::default(),
            Some(b) => b
                .parse()
                .map_err(|e: String| invalid(format!("backend: {e}")))?,
        };
        let families = match raw.ipv6 {
            None => Families::host(),
            Some(ipv6) => Families { ipv4: true, ipv6 },
        };
        let capture = CaptureConfig::default()
            .families(families)
            .skip_inbound(&raw.skip_inbound_ports)
            .and_then(|c| c.skip_outbound(&raw.skip_outbound_ports))
            .and_then(|c| c.skip_cidrs(&raw.skip_outbound_cidrs))
            .map_err(|e| invalid(format!("skip lists: {e}")))?;
        Ok(NetConf {
            cni_version,
            name,
            prev_result: raw.prev_result,
            source,
            backend,
            capture,
            log_level: raw.log_level.unwrap_or_else(|| "warn".into()),
        })
    }

    /// CHECK arrived with spec 0.4.0.
    pub fn supports_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetConf, CniError> {
        NetConf::parse(json.as_bytes())
    }

    #[test]
    fn full_configuration() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"trellis-cni","podMetadataDir":"/p",
                "backend":"nft","skipInboundPorts":"22","skipOutboundCidrs":"10.0.0.0/8","ipv6":false,
                "prevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.source, MetadataSource::Dir("/p".into()));
        assert_eq!(c.backend, Backend::Nft);
        assert_eq!(c.capture.families, Families::IPV4);
        assert_eq!(c.capture.skip_inbound_ports.len(), 1);
        assert_eq!(
            c.prev_result.unwrap().get(),
            r#"{"cniVersion":"1.0.0","ips":[]}"#
        );
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        for (json, code, word) in [
            (
                r#"{"name":"n","type":"t","podMetadataDir":"/p"}"#,
                7,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","type":"t","podMetadataDir":"/p"}"#,
                1,
                "0.2.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t""#,
                6,
                "invalid",
            ),
            (r#"{"cniVersion":1,"name":"n","type":"t"}"#, 7, "invalid"),
            (
                r#"{"cniVersion":"1.0.0","type":"t","podMetadataDir":"/p"}"#,
                7,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
                7,
                "podMetadataDir",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","podMetadataDir":"/p","kubeconfig":"/k"}"#,
                7,
                "both",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","podMetadataDir":"/p","backend":"pf"}"#,
                7,
                "pf",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","podMetadataDir":"/p","skipInboundPorts":"ssh"}"#,
                7,
                "ssh",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert_eq!(err.code, code, "{json}: {err:?}");
            assert!(
                format!("{} {}", err.msg, err.details).contains(word),
                "{json}: {err:?}"
            );
        }
    }
}
