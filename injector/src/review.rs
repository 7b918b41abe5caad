//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out. Every body
//! gets an answer (never a bare HTTP error or a dropped request):
//!
//! - a review we cannot read at all → `allowed: false` with the reason (there
//!   is no pod to let through);
//! - a review for something that is not a pod, or not a create → `allowed:
//!   true` with a warning, unchanged;
//! - a pod we cannot decode → `allowed: true` with a warning when the raw
//!   object shows it needs no sidecar (host network, opted out, injected),
//!   else `allowed: false`: its namespace asks for injection and an
//!   unmeshed pod there would be a silent hole;
//! - a pod with an annotation we cannot honour → `allowed: false` naming it;
//! - otherwise `allowed: true` with the patch of [`crate::patch::plan`].

use crate::config::InjectConfig;
use crate::patch::{self, Plan};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;
use trellis_api::contract::{self, key};

/// The answer to one request body, as the JSON sent back.
///
/// `patch` is a base64 string, as Kubernetes' own Go types encode `[]byte`
/// (kube-core's type would write an array of numbers).
pub fn respond(body: &[u8], cfg: &InjectConfig) -> Value {
    let review = decide(body, cfg);
    let mut out = serde_json::to_value(&review).unwrap_or_else(|e| {
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false, "status": {"message": format!("trellis-injector: {e}")}}})
    });
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        use base64::Engine as _;
        out["response"]["patch"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    out
}

/// The AdmissionReview answering one request body.
pub fn decide(body: &[u8], cfg: &InjectConfig) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return AdmissionResponse::invalid(format!(
                "trellis-injector: the body is not an admission.k8s.io/v1 AdmissionReview: {e}"
            ))
            .into_review();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return AdmissionResponse::invalid(
                "trellis-injector: the AdmissionReview has no request",
            )
            .into_review();
        }
    };
    answer(&request, cfg).into_review()
}

fn answer(req: &AdmissionRequest<DynamicObject>, cfg: &InjectConfig) -> AdmissionResponse {
    let ok = AdmissionResponse::from(req);
    let warn = |ok: AdmissionResponse, w: String| {
        tracing::warn!(uid = %req.uid, "{w}");
        with_warning(ok, w)
    };
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        return warn(
            ok,
            format!(
                "trellis-injector only mutates pods; {} {}/{} left unchanged",
                req.kind.kind,
                req.namespace.as_deref().unwrap_or(""),
                req.name
            ),
        );
    }
    if req.operation != Operation::Create {
        return ok;
    }
    let Some(object) = req.object.as_ref() else {
        return warn(
            ok,
            "trellis-injector: the pod creation carries no object; left unchanged".into(),
        );
    };
    let raw = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return ok.deny(format!("trellis-injector: cannot read the pod: {e}")),
    };
    let pod: Pod = match serde_json::from_value(raw.clone()) {
        Ok(p) => p,
        Err(e) => {
            let what = format!("trellis-injector: cannot read the pod: {e}");
            return if raw_needs_no_sidecar(&raw) {
                warn(
                    ok,
                    format!("{what}; it needs no sidecar and is left unchanged"),
                )
            } else {
                ok.deny(format!(
                    "{what}; namespace {} requires the trellis-proxy sidecar",
                    req.namespace.as_deref().unwrap_or("")
                ))
            };
        }
    };
    match patch::plan(&pod, cfg) {
        Ok(Plan::Skip(why)) => {
            tracing::debug!(uid = %req.uid, "not injected: {why}");
            ok
        }
        Ok(Plan::Inject(p)) => {
            let len = p.0.len();
            match ok.clone().with_patch(p) {
                Ok(r) => {
                    tracing::info!(uid = %req.uid, namespace = req.namespace.as_deref().unwrap_or(""), ops = len, "injected");
                    r
                }
                Err(e) => ok.deny(format!("trellis-injector: {e}")),
            }
        }
        Err(e) => {
            tracing::info!(uid = %req.uid, "refused: {e}");
            ok.deny(format!("trellis-injector: {e}"))
        }
    }
}

/// The skip conditions of [`patch::skip`] on an object that does not decode.
fn raw_needs_no_sidecar(raw: &Value) -> bool {
    let host_network = raw.pointer("/spec/hostNetwork") == Some(&Value::Bool(true));
    let annotations = raw.pointer("/metadata/annotations");
    let opted_out = annotations
        .and_then(|a| a.get(key::INJECT))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim() == contract::INJECT_DISABLED);
    let injected = annotations.and_then(|a| a.get(key::INJECTED)).is_some();
    host_network || opted_out || injected
}

fn with_warning(mut r: AdmissionResponse, w: String) -> AdmissionResponse {
    r.warnings.get_or_insert_with(Vec::new).push(w);
    r
}
