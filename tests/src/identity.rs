//! Mesh identity in the sandbox: `trellis-identity` runs in the node
//! namespace with its CA in the sandbox's state directory, publishes the
//! trust bundle to a file, and authenticates sidecars with tokens the
//! sandbox issues per pod — what the kubelet's projected service-account
//! tokens and TokenReview do on a cluster.
//!
//! ```text
//! <state dir>/identity/            the CA (trellis-identity --state-dir; 0700, files 0600)
//! <state dir>/trust-bundle.pem     the bundle identity publishes (0644); every sidecar follows it
//! <state dir>/identity-tokens.json every pod's token for identity (0600, replaced by rename)
//! <state dir>/tokens/<ns>/<pod>    that pod's token, readable only by the proxy's uid
//! ```
//!
//! A pod's token is made before its sidecar starts and removed with the pod;
//! the tokens file is rewritten (by rename) whenever the set of meshed pods
//! changes, and identity re-reads it at its next request.

use crate::spawn;
use crate::state::{self, Dir, PodState, State};
use serde::Serialize;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use trellis_api::contract;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::Error),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// How long a sandbox token is valid: far longer than any sandbox lives,
/// since pods never outlive their sandbox.
const TOKEN_VALIDITY: time::Duration = time::Duration::days(365);

/// One entry of the tokens file, in the format `trellis-identity
/// --tokens-file` documents.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    token: String,
    namespace: String,
    service_account: String,
    expires_at: String,
}

#[derive(Debug, Serialize)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

/// The token file of a pod.
pub fn token_path(dir: &Dir, pod: &PodState) -> PathBuf {
    dir.tokens().join(&pod.plan.namespace).join(&pod.plan.name)
}

/// 32 random bytes from the kernel, hex: an opaque bearer token.
fn random_token() -> Result<String, Error> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read", path))?;
    Ok(hex::encode(bytes))
}

/// Gives a pod a token, unless it has one: a file only the proxy's uid can
/// read (written by rename).
pub fn issue(dir: &Dir, pod: &PodState) -> Result<(), Error> {
    issue_file(&token_path(dir, pod))
}

/// Writes a new token to `path` unless there is one (readable only by the
/// proxy's uid, written by rename).
pub fn issue_file(path: &Path) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = parent.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, random_token()?).map_err(io("write", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400))
        .map_err(io("chmod", &tmp))?;
    chown(&tmp, Some(contract::PROXY_UID), Some(contract::PROXY_UID)).map_err(io("chown", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

/// Removes a pod's token (the pod is gone).
pub fn revoke(dir: &Dir, pod: &PodState) {
    let _ = std::fs::remove_file(token_path(dir, pod));
}

/// Writes the tokens file identity reads: every meshed pod's, gateway
/// proxy's and the controller's token with its namespace and service
/// account (0600, replaced by rename, unchanged when
/// its content would be the same).
pub fn write_tokens_file(dir: &Dir, st: &State) -> Result<(), Error> {
    let expires_at = (time::OffsetDateTime::now_utc() + TOKEN_VALIDITY)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc() + TOKEN_VALIDITY)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let path = dir.tokens_file();
    // Keep the expiry of tokens already listed, so an unchanged set of pods
    // leaves the file alone.
    let old: Option<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let old_expiry = |token: &str| {
        old.as_ref()?["tokens"]
            .as_array()?
            .iter()
            .find(|e| e["token"] == token)?["expiresAt"]
            .as_str()
            .map(str::to_string)
    };
    let mut tokens = Vec::new();
    let controller = (
        spawn::CONTROLLER_NAMESPACE.to_string(),
        spawn::CONTROLLER_SERVICE_ACCOUNT.to_string(),
    );
    let holders = st
        .pods
        .values()
        .filter(|p| p.meshed)
        .map(|p| {
            (
                token_path(dir, p),
                &p.plan.namespace,
                &p.plan.service_account,
            )
        })
        .chain(st.gateways.values().map(|g| {
            (
                crate::gateway::token_path(dir, g),
                &g.namespace,
                &g.service_account,
            )
        }))
        .chain(std::iter::once((
            spawn::controller_token(dir),
            &controller.0,
            &controller.1,
        )));
    for (token_file, namespace, service_account) in holders {
        let Ok(token) = std::fs::read_to_string(&token_file) else {
            continue;
        };
        tokens.push(TokenEntry {
            expires_at: old_expiry(&token).unwrap_or_else(|| expires_at.clone()),
            token,
            namespace: namespace.clone(),
            service_account: service_account.clone(),
        });
    }
    let body = serde_json::to_string_pretty(&TokensFile { tokens }).unwrap_or_default();
    if std::fs::read_to_string(&path).ok().as_deref() == Some(body.as_str()) {
        return Ok(());
    }
    let tmp = path.with_file_name(".identity-tokens.json.tmp");
    std::fs::write(&tmp, &body).map_err(io("write", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_hex() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_tokens_file_lists_meshed_pods_in_the_documented_format() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir {
            root: tmp.path().to_path_buf(),
        };
        let mut st: State = serde_json::from_value(serde_json::json!({
            "name": "t", "mesh_all": true, "bin_dir": "/x", "objects": [],
            "cluster_ips": {}, "pods": {}, "controller": null, "netns": []
        }))
        .unwrap();
        for (name, meshed) in [("web-0", true), ("plain-0", false)] {
            let pod: PodState = serde_json::from_value(serde_json::json!({
                "plan": {"namespace": "shop", "name": name, "owner": "", "service_account": "web",
                         "labels": {}, "annotations": {}, "containers": [], "template": {}},
                "netns": "n", "meshed": meshed, "container_id": "c", "uid": "u",
                "ip": null, "cni_result": null, "procs": [], "ready": false
            }))
            .unwrap();
            // Writing a token as root and chown to the proxy works in CI (root);
            // here only the file format is checked, so write it directly.
            let path = token_path(&dir, &pod);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("token-of-{name}")).unwrap();
            st.pods.insert(format!("shop/{name}"), pod);
        }
        write_tokens_file(&dir, &st).unwrap();
        let text = std::fs::read_to_string(dir.tokens_file()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entries = v["tokens"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "only meshed pods: {text}");
        let e = &entries[0];
        assert_eq!(e["token"], "token-of-web-0");
        assert_eq!(e["namespace"], "shop");
        assert_eq!(e["serviceAccount"], "web");
        let expires = e["expiresAt"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{expires}"
        );
        assert_eq!(e.as_object().unwrap().len(), 4, "no other fields");
        let mode = std::fs::metadata(dir.tokens_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Rewriting an unchanged set keeps the file (same inode).
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&dir.tokens_file());
        write_tokens_file(&dir, &st).unwrap();
        assert_eq!(inode(&dir.tokens_file()), before);
    }
}
