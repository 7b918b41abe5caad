//! Keeping the webhook trusted, through the API server:
//!
//! ```text
//! Secret trellis-injector-tls ──missing/expiring──► generate ─► create/replace (optimistic)
//!            │                                                        │
//!            └──────────────── every replica serves the same ◄────────┘
//! MutatingWebhookConfiguration trellis-injector: each webhook's caBundle ◄── ca.crt
//! ```
//!
//! Replicas share one certificate through the Secret, so the `caBundle` is
//! the same whichever replica wrote it; a Helm upgrade that re-applies the
//! webhook configuration without a `caBundle` is repaired on the next tick.

use crate::tls::{self, Material};
use json_patch::{AddOperation, Patch as JsonPatch, PatchOperation, TestOperation, jsonptr};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The field manager the injector writes with.
pub const FIELD_MANAGER: &str = "trellis-injector";

/// Where the shared certificate and the webhook configuration live.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
    pub dns_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading or writing {what}: {error}")]
    Api { what: String, error: kube::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("secret {0} kept changing under us")]
    Contended(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let what = what.into();
    move |error| SyncError::Api { what, error }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The certificate every replica serves: the one in the Secret while it is
/// good, else a new one written there (the first writer wins; losers read
/// the winner's).
pub async fn ensure_material(
    client: &Client,
    t: &Target,
    now: OffsetDateTime,
) -> Result<Material, SyncError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &t.namespace);
    let what = format!("secret {}/{}", t.namespace, t.secret);
    for _ in 0..5 {
        let existing = secrets.get_opt(&t.secret).await.map_err(api_err(&what))?;
        let old = existing.as_ref().and_then(material_of);
        if let Some(m) = &old
            && tls::still_good(m, &t.dns_names, now)
        {
            return Ok(m.clone());
        }
        let mut fresh = tls::generate(&t.dns_names, now)?;
        if let Some(old) = &old {
            fresh.ca_pem.push_str(&tls::unexpired_cas(&old.ca_pem, now));
        }
        let mut secret = secret_of(t, &fresh);
        let written = match existing {
            Some(prev) => {
                secret.metadata.resource_version = prev.metadata.resource_version;
                secrets
                    .replace(&t.secret, &PostParams::default(), &secret)
                    .await
            }
            None => secrets.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %what, "wrote a new webhook certificate");
                return Ok(fresh);
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_err(&what)(e)),
        }
    }
    Err(SyncError::Contended(what))
}

/// Sets every webhook's `caBundle` in the configuration to `ca_pem`; returns
/// whether anything changed.
pub async fn sync_ca_bundle(client: &Client, t: &Target, ca_pem: &str) -> Result<bool, SyncError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("mutatingwebhookconfiguration {}", t.webhook_config);
    let mwc = api.get(&t.webhook_config).await.map_err(api_err(&what))?;
    let ops = ca_bundle_patch(&mwc, ca_pem);
    if ops.0.is_empty() {
        return Ok(false);
    }
    api.patch(
        &t.webhook_config,
        &PatchParams::default(),
        &Patch::Json::<()>(ops),
    )
    .await
    .map_err(api_err(&what))?;
    tracing::info!(config = %t.webhook_config, "caBundle updated");
    Ok(true)
}

/// The JSON Patch setting each stale `caBundle`, guarded by a test of the
/// webhook's name so a concurrent reordering fails instead of misapplying.
pub fn ca_bundle_patch(mwc: &MutatingWebhookConfiguration, ca_pem: &str) -> JsonPatch {
    let want = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, w) in mwc.webhooks.iter().flatten().enumerate() {
        if w.client_config.ca_bundle.as_ref() == Some(&want) {
            continue;
        }
        let i = i.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: jsonptr::PointerBuf::from_tokens(["webhooks", &i, "name"]),
            value: serde_json::Value::String(w.name.clone()),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: jsonptr::PointerBuf::from_tokens(["webhooks", &i, "clientConfig", "caBundle"]),
            value: serde_json::to_value(&want).unwrap_or_default(),
        }));
    }
    JsonPatch(ops)
}

fn material_of(s: &Secret) -> Option<Material> {
    let data = s.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    Some(Material {
        ca_pem: get("ca.crt")?,
        cert_pem: get("tls.crt")?,
        key_pem: get("tls.key")?,
    })
}

fn secret_of(t: &Target, m: &Material) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(t.secret.clone()),
            namespace: Some(t.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "trellis".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_string(), bytes(&m.ca_pem)),
            ("tls.crt".to_string(), bytes(&m.cert_pem)),
            ("tls.key".to_string(), bytes(&m.key_pem)),
        ])),
        ..Default::default()
    }
}
