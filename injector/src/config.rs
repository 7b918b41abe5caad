//! What the injector puts into a pod: the proxy image, where the control
//! plane lives, the trust bundle, resources. The chart renders it as a YAML
//! file (`injector.yaml` in the `trellis-injector` ConfigMap); the trust
//! bundle comes from its own file, mounted from identity's ConfigMap.

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::{Deserialize, Serialize};
use std::path::Path;
use trellis_api::contract;
use trellis_policy::SpiffeId;

/// Everything [`crate::patch`] needs besides the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectConfig {
    /// The `trellis-proxy` image, `repository:tag` or `repository@digest`.
    pub proxy_image: String,
    /// The image of `trellis-init` (the proxy binary with iptables and
    /// nftables); empty means `proxy_image`.
    #[serde(default)]
    pub init_image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// When the CNI plugin installs the capture rules no `trellis-init`
    /// container is added.
    #[serde(default = "yes")]
    pub cni_enabled: bool,
    /// `host:port` of the controller's discovery service.
    pub controller_addr: String,
    /// The controller's SPIFFE id. When set, proxies reach the controller
    /// over mTLS and accept no other server; left out, they dial it in
    /// plaintext (the chart's `controller.mtls: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_identity: Option<SpiffeId>,
    /// `host:port` of the identity service.
    pub identity_addr: String,
    /// The DNS name on the identity service's certificate.
    pub identity_name: String,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// PEM of the trust anchors. Usually left out of the file and read from
    /// `--trust-bundle`.
    #[serde(default)]
    pub trust_bundle: String,
    /// The proxy's default log filter; the pod annotation
    /// `trellis.io/proxy-log-level` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Requests and limits of the `trellis-proxy` container.
    #[serde(default)]
    pub proxy_resources: ResourceRequirements,
    /// Requests and limits of the `trellis-init` container.
    #[serde(default)]
    pub init_resources: ResourceRequirements,
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn yes() -> bool {
    true
}
fn default_trust_domain() -> String {
    contract::DEFAULT_TRUST_DOMAIN.into()
}
fn default_cluster_domain() -> String {
    contract::DEFAULT_CLUSTER_DOMAIN.into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "json".into()
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a valid injector configuration: {message}")]
    Parse { path: String, message: String },
    #[error("{path} holds no PEM certificate")]
    EmptyBundle { path: String },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
}

impl InjectConfig {
    /// Reads the YAML configuration and, when given, the trust bundle file.
    pub fn load(config: &Path, trust_bundle: Option<&Path>) -> Result<Self, ConfigError> {
        let text = read(config)?;
        let mut cfg: InjectConfig =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
                path: config.display().to_string(),
                message: e.to_string(),
            })?;
        if let Some(path) = trust_bundle {
            let pem = read(path)?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::EmptyBundle {
                    path: path.display().to_string(),
                });
            }
            cfg.trust_bundle = pem;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The fields a pod cannot do without.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("proxyImage", &self.proxy_image),
            ("controllerAddr", &self.controller_addr),
            ("identityAddr", &self.identity_addr),
            ("identityName", &self.identity_name),
            ("trustBundle", &self.trust_bundle),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { field });
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHART: &str = "proxyImage: ghcr.io/trellis-mesh/trellis-proxy:0.1.0\n\
        controllerAddr: trellis-controller.trellis.svc.cluster.local:8090\n\
        identityAddr: trellis-identity.trellis.svc.cluster.local:8083\n\
        identityName: trellis-identity.trellis.svc\n";
    const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

    fn load(yaml: &str) -> Result<InjectConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let (config, bundle) = (dir.path().join("injector.yaml"), dir.path().join("ca.crt"));
        std::fs::write(&config, yaml).unwrap();
        std::fs::write(&bundle, BUNDLE).unwrap();
        InjectConfig::load(&config, Some(&bundle))
    }

    #[test]
    fn controller_identity_is_optional() {
        assert_eq!(load(CHART).unwrap().controller_identity, None);
        let id = "spiffe://cluster.local/ns/trellis/sa/trellis-controller";
        let cfg = load(&format!("{CHART}controllerIdentity: {id}\n")).unwrap();
        assert_eq!(cfg.controller_identity.unwrap().as_str(), id);
    }

    #[test]
    fn a_controller_identity_that_is_no_spiffe_id_is_refused_by_value() {
        for bad in ["trellis-controller", "spiffe://Cluster.Local/ns/x", "\"\""] {
            let err = load(&format!("{CHART}controllerIdentity: {bad}\n")).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{bad}: {err}");
            let shown = bad.trim_matches('"');
            assert!(err.to_string().contains(&format!("{shown:?}")), "{err}");
        }
    }
}
