//! Who is calling: a proxy proves its service account with a token, checked
//! behind one trait by either the Kubernetes TokenReview API (audience
//! `trellis-identity`) or, in the sandbox, a token file the sandbox writes
//! per pod. Tokens are never logged nor kept in memory longer than a call
//! (the file verifier keeps only their SHA-256).
//!
//! The sandbox token file (JSON, mode 0600, replaced atomically by rename):
//!
//! ```json
//! {"tokens": [
//!   {"token": "<opaque>", "namespace": "shop", "serviceAccount": "web",
//!    "expiresAt": "2030-01-01T00:00:00Z"}
//! ]}
//! ```

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;
use trellis_api::contract::IDENTITY_TOKEN_AUDIENCE;
use trellis_policy::SpiffeId;

/// An authenticated caller: the service account its token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
}

impl Caller {
    pub fn new(namespace: &str, service_account: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// The caller's SPIFFE id in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &str) -> Result<SpiffeId, AuthError> {
        let id =
            SpiffeId::for_service_account(trust_domain, &self.namespace, &self.service_account);
        let parsed = SpiffeId::parse(id.as_str())
            .map_err(|e| AuthError::Refused(format!("service account makes no SPIFFE id: {e}")))?;
        // A `/` in either name would shift the path's segments.
        let round_trip = parsed.service_account();
        if round_trip
            .as_ref()
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            != Some((self.namespace.as_str(), self.service_account.as_str()))
        {
            return Err(AuthError::Refused(format!(
                "service account makes no SPIFFE id: {id} does not name it"
            )));
        }
        Ok(parsed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token refused: {0}")]
    Refused(String),
    #[error("token expired")]
    Expired,
    #[error("token could not be checked: {0}")]
    Unavailable(String),
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>>;

/// Turns a bearer token into the caller it belongs to.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// The Kubernetes TokenReview API.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").finish_non_exhaustive()
    }
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![IDENTITY_TOKEN_AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into());
            return Err(if why.contains("expired") {
                AuthError::Expired
            } else {
                AuthError::Refused(why)
            });
        }
        if let Some(audiences) = &status.audiences
            && !audiences.iter().any(|a| a == IDENTITY_TOKEN_AUDIENCE)
        {
            return Err(AuthError::Refused(format!(
                "token is not for audience {IDENTITY_TOKEN_AUDIENCE}"
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account_of(&username)
            .ok_or_else(|| AuthError::Refused(format!("{username:?} is not a service account")))
    }
}

/// `system:serviceaccount:<ns>:<sa>` → the caller.
pub fn service_account_of(username: &str) -> Option<Caller> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then(|| Caller::new(ns, sa))
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.review(token))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path} is readable by others (mode {mode:o}); it must be 0600")]
    Mode { path: PathBuf, mode: u32 },
    #[error("token file {path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileDoc {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    token: String,
    namespace: String,
    service_account: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: time::OffsetDateTime,
}

struct Grant {
    caller: Caller,
    expires: SystemTime,
}

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
struct Loaded {
    stamp: Option<(Option<SystemTime>, u64, u64)>,
    grants: HashMap<Digest32, Grant>,
}

/// The sandbox's token file, re-read whenever it changes (checked at each
/// call: certificate requests are rare).
pub struct TokenFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len(), meta.ino()))
}

fn read(path: &Path) -> Result<HashMap<Digest32, Grant>, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let format = |reason: String| TokenFileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let doc: TokenFileDoc = serde_json::from_slice(&bytes).map_err(|e| {
        format(format!(
            "line {}, column {}: {}",
            e.line(),
            e.column(),
            json_error_kind(&e)
        ))
    })?;
    let mut grants = HashMap::new();
    for (i, entry) in doc.tokens.into_iter().enumerate() {
        if entry.token.is_empty() {
            return Err(format(format!("tokens[{i}]: empty token")));
        }
        let caller = Caller::new(&entry.namespace, &entry.service_account);
        caller
            .spiffe_id(trellis_api::contract::DEFAULT_TRUST_DOMAIN)
            .map_err(|_| {
                format(format!(
                    "tokens[{i}]: namespace or serviceAccount makes no SPIFFE id"
                ))
            })?;
        let expires = SystemTime::from(entry.expires_at);
        if grants
            .insert(digest(&entry.token), Grant { caller, expires })
            .is_some()
        {
            return Err(format(format!("tokens[{i}]: the same token appears twice")));
        }
    }
    Ok(grants)
}

/// What kind of JSON error, without serde_json's message (which can quote
/// a value, and a value may be a token).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "a field is missing, unknown or of the wrong type",
        serde_json::error::Category::Eof => "unexpected end of file",
    }
}

impl TokenFile {
    /// Follows `path`. A missing file is no error yet (the sandbox may write
    /// it after starting identity); every token is refused until it exists.
    pub fn new(path: PathBuf) -> Self {
        let file = Self {
            path,
            loaded: Mutex::new(Loaded::default()),
        };
        file.refresh();
        file
    }

    /// Re-reads the file if it changed; a bad file keeps the last good set.
    fn refresh(&self) {
        let now = stamp(&self.path);
        let mut loaded = self.loaded.lock();
        if now.is_some() && loaded.stamp == now {
            return;
        }
        match read(&self.path) {
            Ok(grants) => {
                tracing::info!(path = %self.path.display(), tokens = grants.len(), "token file loaded");
                *loaded = Loaded { stamp: now, grants };
            }
            Err(error) => {
                if loaded.stamp != now {
                    tracing::warn!(%error, "keeping the previous tokens");
                }
                loaded.stamp = now;
            }
        }
    }

    fn check(&self, token: &str) -> Result<Caller, AuthError> {
        self.refresh();
        let loaded = self.loaded.lock();
        let grant = loaded
            .grants
            .get(&digest(token))
            .ok_or_else(|| AuthError::Refused("unknown token".into()))?;
        if grant.expires <= SystemTime::now() {
            return Err(AuthError::Expired);
        }
        Ok(grant.caller.clone())
    }
}

impl Authenticator for TokenFile {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.check(token)))
    }
}

#[cfg(test)]
mod tests;
