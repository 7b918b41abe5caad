//! The verbs: list, watch, get, create, replace, patch (JSON Patch, merge,
//! apply) and delete, on the store of [`crate::Shared`].

use crate::{Event, Shared, Target, label_match, ok, put, status};
use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures::StreamExt;
use serde_json::{Value, json};
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::broadcast;

pub(crate) fn list(shared: &Shared, t: &Target, params: &BTreeMap<String, String>) -> Response {
    let store = shared.store.lock();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|(k, o)| t.matches(k) && label_match(o, params.get("labelSelector")))
        .map(|(_, o)| o.clone())
        .collect();
    ok(
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": store.version.to_string()}, "items": items}),
    )
}

pub(crate) fn watch(
    shared: &Arc<Shared>,
    t: &Target,
    params: &BTreeMap<String, String>,
) -> Response {
    let rx = shared.events.subscribe();
    let t = t.clone();
    let selector = params.get("labelSelector").cloned();
    let stream = tokio_stream_from(rx).filter_map(move |ev| {
        let keep =
            t.matches(&format!("{}/x", ev.prefix)) && label_match(&ev.object, selector.as_ref());
        async move {
            keep.then(|| {
                let mut line = serde_json::to_vec(&json!({"type": ev.kind, "object": ev.object}))
                    .unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::io::Error>(Bytes::from(line))
            })
        }
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })
}

pub(crate) fn tokio_stream_from(
    rx: broadcast::Receiver<Event>,
) -> impl futures::Stream<Item = Event> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

pub(crate) fn get(shared: &Shared, t: &Target) -> Response {
    let key = t.key().unwrap_or_default();
    match shared.store.lock().objects.get(&key) {
        Some(o) => ok(StatusCode::OK, o.clone()),
        None => not_found(t),
    }
}

pub(crate) fn not_found(t: &Target) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "{} \"{}\" not found",
            t.resource,
            t.name.as_deref().unwrap_or("")
        ),
    )
}

pub(crate) fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice::<Value>(body))
        .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", format!("body: {e}")))
}

pub(crate) fn with_identity(mut obj: Value, t: &Target, name: &str) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("name".into(), json!(name));
        if let Some(ns) = &t.namespace {
            meta.insert("namespace".into(), json!(ns));
        }
    }
    obj
}

pub(crate) fn create(shared: &Shared, t: &Target, body: &[u8]) -> Response {
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(name) = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value".into(),
        );
    };
    let named = Target {
        name: Some(name.clone()),
        ..t.clone()
    };
    if shared
        .store
        .lock()
        .objects
        .contains_key(&named.key().unwrap_or_default())
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.resource),
        );
    }
    let obj = with_identity(obj, t, &name);
    put(shared, obj);
    stored(shared, &named, StatusCode::CREATED)
}

pub(crate) fn stored(shared: &Shared, t: &Target, code: StatusCode) -> Response {
    match shared
        .store
        .lock()
        .objects
        .get(&t.key().unwrap_or_default())
    {
        Some(o) => ok(code, o.clone()),
        None => not_found(t),
    }
}

pub(crate) fn replace(shared: &Shared, t: &Target, body: &[u8]) -> Response {
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let key = t.key().unwrap_or_default();
    let current = shared.store.lock().objects.get(&key).cloned();
    let Some(current) = current else {
        return not_found(t);
    };
    let want_rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    let have_rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if want_rv.is_some() && want_rv != have_rv {
        return status(StatusCode::CONFLICT, "Conflict", "the object has been modified; please apply your changes to the latest version and try again".into());
    }
    let mut obj = with_identity(obj, t, t.name.as_deref().unwrap_or(""));
    if t.status {
        let mut merged = current;
        merged["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        obj = merged;
    }
    put(shared, obj);
    stored(shared, t, StatusCode::OK)
}

pub(crate) fn patch(
    shared: &Shared,
    t: &Target,
    headers: &HeaderMap,
    body: &[u8],
    params: &BTreeMap<String, String>,
) -> Response {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let key = t.key().unwrap_or_default();
    let current = shared.store.lock().objects.get(&key).cloned();
    let apply = ct.starts_with("application/apply-patch");
    if apply && params.get("fieldManager").is_none_or(String::is_empty) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "fieldManager is required for apply patch".into(),
        );
    }
    let mut doc = match (current, apply) {
        (Some(c), _) => c,
        (None, true) => json!({"metadata": {}}),
        (None, false) => return not_found(t),
    };
    let incoming = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if ct.starts_with("application/json-patch") {
        let ops: json_patch::Patch = match serde_json::from_value(incoming) {
            Ok(p) => p,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("json patch: {e}"),
                );
            }
        };
        if let Err(e) = json_patch::patch(&mut doc, &ops) {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("json patch: {e}"),
            );
        }
    } else if apply {
        apply_merge(&mut doc, &incoming);
    } else {
        json_patch::merge(&mut doc, &incoming);
    }
    let doc = with_identity(doc, t, t.name.as_deref().unwrap_or(""));
    put(shared, doc);
    stored(shared, t, StatusCode::OK)
}

/// Server-side apply, approximated: objects merge field by field; lists of
/// objects that carry a `name` merge by name (as the built-in list-map types
/// do); other lists are replaced.
pub(crate) fn apply_merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                match d.get_mut(k) {
                    Some(existing) => apply_merge(existing, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(p))
            if p.iter().all(|i| i.get("name").is_some())
                && d.iter().all(|i| i.get("name").is_some()) =>
        {
            for item in p {
                match d.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => apply_merge(existing, item),
                    None => d.push(item.clone()),
                }
            }
        }
        (d, p) => *d = p.clone(),
    }
}

pub(crate) fn delete(shared: &Shared, t: &Target) -> Response {
    let key = t.key().unwrap_or_default();
    let removed = shared.store.lock().objects.remove(&key);
    match removed {
        Some(o) => {
            let prefix = key
                .rsplit_once('/')
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            let _ = shared.events.send(Event {
                prefix,
                kind: "DELETED",
                object: o.clone(),
            });
            ok(StatusCode::OK, o)
        }
        None => not_found(t),
    }
}
