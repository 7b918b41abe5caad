//! The CNI 1.0.0 protocol: commands and their environment, `CNI_ARGS`, the
//! versions we speak, and errors in the spec's shape with its well-known
//! codes (plus ours, from 100).

use serde::Serialize;
use std::collections::BTreeMap;

/// The spec version of our own output (VERSION, errors without a config).
pub const CURRENT_VERSION: &str = "1.0.0";
/// The versions with plugin chaining (`prevResult`), which we need.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Error codes: the spec's well-known ones, then ours (100 and above).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The pod's metadata was not found (no file, or the API server says 404).
    pub const POD_NOT_FOUND: u32 = 100;
    /// A `trellis.io/skip-*` annotation of the pod does not parse.
    pub const INVALID_ANNOTATION: u32 = 101;
    /// Installing or removing the capture rules failed.
    pub const RULES_FAILED: u32 = 102;
    /// CHECK found rules that differ from the pod's plan.
    pub const RULES_DIFFER: u32 = 103;
}

/// An error as the spec prints it on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// `{"cniVersion","code","msg","details"}`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{}}}",
                self.code
            )
        })
    }
}

/// The answer to VERSION.
pub fn version_info() -> String {
    serde_json::json!({
        "cniVersion": CURRENT_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn parse(value: Option<&str>) -> Result<Self, CniError> {
        match value {
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("VERSION") => Ok(Command::Version),
            Some(other) => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK or VERSION"),
            )),
            None => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_COMMAND is not set",
            )),
        }
    }
}

/// Reads the process environment, or a map in tests.
pub trait Vars {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessVars;

impl Vars for ProcessVars {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The invocation's environment, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// Empty when a DEL comes after the namespace is gone.
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

impl Invocation {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, CniError> {
        let command = Command::parse(vars.var("CNI_COMMAND").as_deref())?;
        let get = |name: &str| vars.var(name).unwrap_or_default();
        let invocation = Invocation {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: CniArgs::parse(&get("CNI_ARGS"))?,
        };
        let required: &[&str] = match command {
            Command::Version => &[],
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|name| get(name).is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        if command != Command::Version {
            validate_container_id(&invocation.container_id)?;
            validate_ifname(&invocation.ifname)?;
        }
        Ok(invocation)
    }
}

/// Container ids start with an alphanumeric character, then alphanumerics,
/// `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "invalid CNI_CONTAINERID {id:?}: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
            ),
        ))
    }
}

/// Interface names follow Linux' rules: 1 to 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "invalid CNI_IFNAME {name:?}: it must be 1 to 15 characters without '/', ':' or spaces, and not '.' or '..'"
            ),
        ))
    }
}

/// `CNI_ARGS`: `K=V;K=V`. We read the pod's namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut pairs = BTreeMap::new();
        for item in text.split(';').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("invalid CNI_ARGS item {item:?}: expected KEY=VALUE"),
                )
            })?;
            pairs.insert(k.to_string(), v.to_string());
        }
        Ok(Self { pairs })
    }

    /// `(K8S_POD_NAMESPACE, K8S_POD_NAME)` when the runtime gave a pod name.
    pub fn pod(&self) -> Option<(&str, &str)> {
        let name = self.pairs.get("K8S_POD_NAME").filter(|n| !n.is_empty())?;
        let namespace = self
            .pairs
            .get("K8S_POD_NAMESPACE")
            .map(String::as_str)
            .unwrap_or("default");
        Some((namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0",
            ),
        ]
    }

    #[test]
    fn add_reads_its_environment() {
        let inv = Invocation::from_vars(&vars(&add_env())).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.args.pod(), Some(("ns", "web-0")));
    }

    #[test]
    fn missing_and_invalid_variables_are_code_4() {
        for (drop, replace) in [
            ("CNI_NETNS", None),
            ("CNI_PATH", None),
            ("CNI_CONTAINERID", Some("-bad")),
            ("CNI_IFNAME", Some("a-very-long-interface")),
            ("CNI_ARGS", Some("K8S_POD_NAME")),
            ("CNI_COMMAND", Some("GC")),
        ] {
            let mut env: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != drop).collect();
            if let Some(v) = replace {
                env.push((drop, v));
            }
            let err = Invocation::from_vars(&vars(&env)).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENVIRONMENT, "{drop}: {err:?}");
            assert!(
                err.msg.contains(drop) || err.msg.contains(replace.unwrap_or("")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn del_does_not_need_a_netns() {
        let env: Vec<_> = add_env()
            .into_iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert_eq!(Invocation::from_vars(&vars(&env)).unwrap().netns, "");
    }

    #[test]
    fn errors_print_in_the_spec_shape() {
        let e = CniError::new(7, "bad").details("more");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"more"}"#
        );
    }
}
