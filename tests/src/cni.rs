//! Invokes CNI plugins exactly as a container runtime does (CNI spec 1.0):
//! one process per plugin, the command and pod in environment variables, the
//! network configuration on stdin, each plugin of a list given the previous
//! one's result as `prevResult`; DEL in reverse order with the cached ADD
//! result. Plugins run in the sandbox's node namespace, so the bridge and the
//! host ends of the pod links live there and never in the host's namespace.

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The Debian package that provides them.
pub const SYSTEM_PLUGIN_PACKAGE: &str = "containernetworking-plugins";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI {command} of {plugin} for pod {pod} failed (code {code}): {msg}{details}")]
    Plugin {
        command: &'static str,
        plugin: String,
        pod: String,
        code: i64,
        msg: String,
        details: String,
    },
    #[error("CNI {command} of {plugin} for pod {pod} printed no valid result: {output:?}")]
    Output {
        command: &'static str,
        plugin: String,
        pod: String,
        output: String,
    },
}

/// The pod a CNI call is about (what a runtime puts in the environment).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub node_netns: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    /// Directories searched for plugins (`CNI_PATH`).
    pub path: &'a [PathBuf],
}

/// The `trellis-cni` entry of the network list. Its pod metadata comes from
/// the sandbox's `pods/` directory (see docs/decisions.md, "CNI and capture").
pub fn trellis_plugin_config(state_dir: &Path) -> Value {
    json!({
        "type": "trellis-cni",
        "podMetadataDir": state_dir.join("pods").display().to_string(),
        // Sandbox pods only have IPv4 addresses.
        "ipv6": false,
        "logLevel": "warn",
    })
}

/// The loopback network a runtime sets up before the pod network.
pub fn loopback_config() -> Value {
    json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"})
}

/// ADD of a network list: returns the final result.
pub fn add(list: &Value, t: &Target<'_>) -> Result<Value, Error> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(list) {
        let conf = plugin_conf(list, &plugin, prev.as_ref());
        let result = invoke("ADD", &conf, t)?;
        prev = Some(result.unwrap_or_else(|| prev.clone().unwrap_or(json!({}))));
    }
    Ok(prev.unwrap_or(json!({})))
}

/// CHECK of a network list against the cached ADD result.
pub fn check(list: &Value, t: &Target<'_>, cached: &Value) -> Result<(), Error> {
    for plugin in plugins(list) {
        invoke("CHECK", &plugin_conf(list, &plugin, Some(cached)), t)?;
    }
    Ok(())
}

/// DEL of a network list, last plugin first; every plugin is called even if
/// one fails (the first error is returned), so that a half-made pod is still
/// cleaned up.
pub fn del(list: &Value, t: &Target<'_>, cached: Option<&Value>) -> Result<(), Error> {
    let mut first = None;
    for plugin in plugins(list).into_iter().rev() {
        if let Err(e) = invoke("DEL", &plugin_conf(list, &plugin, cached), t) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn plugins(list: &Value) -> Vec<Value> {
    match list.get("plugins").and_then(Value::as_array) {
        Some(p) => p.clone(),
        None => vec![list.clone()],
    }
}

/// The configuration one plugin gets on stdin: its own entry plus the list's
/// `cniVersion` and `name`, and `prevResult` when there is one.
fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    conf
}

fn invoke(command: &'static str, conf: &Value, t: &Target<'_>) -> Result<Option<Value>, Error> {
    let plugin = conf["type"].as_str().unwrap_or_default().to_string();
    let binary = t
        .path
        .iter()
        .map(|d| d.join(&plugin))
        .find(|p| p.exists())
        .ok_or_else(|| Error::Spawn {
            plugin: plugin.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "not found in {}",
                    t.path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            ),
        })?;
    let cni_path = std::env::join_paths(t.path).unwrap_or_default();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        t.namespace, t.pod, t.container_id, t.pod_uid
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", t.node_netns])
        .arg(&binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", t.container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", t.netns))
        .env("CNI_IFNAME", t.ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            plugin: plugin.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its stdin is reported by its
        // exit status below, not by this write.
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        plugin: plugin.clone(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let pod = format!("{}/{}", t.namespace, t.pod);
    if !out.status.success() {
        let err: Value = serde_json::from_str(&stdout).unwrap_or(json!({}));
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Error::Plugin {
            command,
            plugin,
            pod,
            code: err["code"].as_i64().unwrap_or(-1),
            msg: err["msg"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("exit {}", out.status)),
            details: [err["details"].as_str().unwrap_or_default(), &stderr]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| format!("; {s}"))
                .collect(),
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_str(&stdout)
        .map(Some)
        .map_err(|_| Error::Output {
            command,
            plugin,
            pod,
            output: stdout,
        })
}

/// The pod's IPv4 address from a CNI result.
pub fn result_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        ip["address"]
            .as_str()?
            .split('/')
            .next()?
            .parse::<std::net::Ipv4Addr>()
            .ok()
    })
}
