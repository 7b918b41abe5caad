//! A directory of manifests as the source of objects, for the sandbox and
//! tests: multi-document YAML (or JSON) files, read recursively. The
//! directory is polled; a file added, changed or removed is picked up within
//! [`POLL_INTERVAL`]. Writers should write-then-rename: files whose name
//! starts with `.` are ignored, so a half-written temporary never counts.
//!
//! An unparsable document is reported with its file and line and skipped;
//! the rest of the file and of the directory still apply.

use super::{Source, SourceError};
use crate::index::SharedIndex;
use crate::objects::{Kind, Object};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the directories are scanned.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A document that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct ParseError {
    pub file: PathBuf,
    /// 1-based line where the document (or the error in it) is.
    pub line: usize,
    pub message: String,
}

/// Splits a multi-document YAML text into documents with their first line.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_separator || line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if let Some(rest) = line.strip_prefix("---").filter(|r| !r.trim().is_empty()) {
                current.push_str(rest.trim_start());
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Parses one file's text into objects; bad documents become errors and are
/// skipped. Kinds the controller does not read are skipped silently.
pub fn parse(file: &Path, text: &str) -> (Vec<Object>, Vec<ParseError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (start, doc) in documents(text) {
        let err = |line: usize, message: String| ParseError {
            file: file.to_path_buf(),
            line,
            message,
        };
        let value: serde_json::Value = match serde_saphyr::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map_or(start, |l| {
                    start + usize::try_from(l.line()).unwrap_or(1).max(1) - 1
                });
                errors.push(err(line, format!("invalid YAML: {e}")));
                continue;
            }
        };
        let items = match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") => value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default(),
            _ => vec![value],
        };
        for item in items {
            match Object::from_value(item) {
                Ok(Some(obj)) => objects.push(obj),
                Ok(None) => {}
                Err(e) => errors.push(err(start, e.to_string())),
            }
        }
    }
    (objects, errors)
}

/// The manifest files under `dirs` (recursively), sorted.
fn files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        if d.is_file() {
            out.push(d.clone());
        } else {
            walk(d, &mut out);
        }
    }
    out.sort();
    out
}

/// Every object of `dirs`, and the errors met on the way.
pub fn load(dirs: &[PathBuf]) -> (Vec<Object>, Vec<ParseError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for f in files(dirs) {
        match std::fs::read_to_string(&f) {
            Ok(text) => {
                let (o, e) = parse(&f, &text);
                objects.extend(o);
                errors.extend(e);
            }
            Err(e) => errors.push(ParseError {
                file: f.clone(),
                line: 0,
                message: format!("unreadable: {e}"),
            }),
        }
    }
    (objects, errors)
}

/// Replaces the index's view of every kind with `objects`.
///
/// A directory has no gateway deployer; whoever runs the gateway proxies
/// (the sandbox) plays it and writes a Gateway's `status.addresses` once its
/// proxy is ready, as the deployer does. Those addresses mark the Gateway
/// programmed ([`crate::index::Index::set_programmed`]).
pub fn reset_all(index: &SharedIndex, objects: Vec<Object>) {
    let mut by_kind: BTreeMap<Kind, Vec<Object>> =
        Kind::ALL.iter().map(|k| (*k, Vec::new())).collect();
    let mut programmed = Vec::new();
    for o in objects {
        if let Object::Gateway(gw) = &o {
            let ready = gw
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| !a.is_empty());
            programmed.push((
                trellis_policy::ResourceRef::new(
                    gw.metadata.namespace.clone().unwrap_or_default(),
                    gw.metadata.name.clone().unwrap_or_default(),
                ),
                ready,
            ));
        }
        by_kind.entry(o.kind()).or_default().push(o);
    }
    let mut index = index.lock();
    for (kind, objs) in by_kind {
        index.reset(kind, objs);
    }
    for (gw, ready) in programmed {
        index.set_programmed(gw, ready);
    }
}

/// A file's identity for change detection: a rename-over changes the
/// inode even when size and modification time happen to match.
type Stamp = (Option<SystemTime>, u64, u64);

/// The manifest directory source.
#[derive(Debug)]
pub struct Directory {
    dirs: Vec<PathBuf>,
    /// Per file: its stamp and what it parsed to.
    cache: HashMap<PathBuf, (Stamp, Vec<Object>, Vec<ParseError>)>,
}

impl Directory {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            cache: HashMap::new(),
        }
    }

    /// Rescans; `Some(objects)` when anything changed since the last scan.
    fn scan(&mut self) -> Option<Vec<Object>> {
        let current = files(&self.dirs);
        let mut changed = current.len() != self.cache.len();
        let mut next = HashMap::with_capacity(current.len());
        for f in current {
            let stamp = std::fs::metadata(&f)
                .map(|m| (m.modified().ok(), m.len(), m.ino()))
                .unwrap_or((None, 0, 0));
            match self.cache.remove(&f) {
                Some(entry) if entry.0 == stamp => {
                    next.insert(f, entry);
                }
                _ => {
                    changed = true;
                    let (objects, errors) = match std::fs::read_to_string(&f) {
                        Ok(text) => parse(&f, &text),
                        Err(e) => (
                            Vec::new(),
                            vec![ParseError {
                                file: f.clone(),
                                line: 0,
                                message: format!("unreadable: {e}"),
                            }],
                        ),
                    };
                    for e in &errors {
                        tracing::warn!("skipping manifest document: {e}");
                    }
                    next.insert(f, (stamp, objects, errors));
                }
            }
        }
        changed |= !self.cache.is_empty();
        self.cache = next;
        if !changed {
            return None;
        }
        let mut paths: Vec<&PathBuf> = self.cache.keys().collect();
        paths.sort();
        Some(
            paths
                .into_iter()
                .flat_map(|p| self.cache[p].1.iter().cloned())
                .collect(),
        )
    }
}

impl Source for Directory {
    fn run(
        mut self: Box<Self>,
        index: SharedIndex,
        ready: watch::Sender<bool>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Reading files blocks: do it off the async workers.
                let (dir, scanned) = match tokio::task::spawn_blocking(move || {
                    let scanned = self.scan();
                    (self, scanned)
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("manifest scan failed: {e}");
                        return Ok(());
                    }
                };
                self = dir;
                if let Some(objects) = scanned {
                    tracing::info!(objects = objects.len(), "manifests changed");
                    reset_all(&index, objects);
                }
                ready.send_if_modified(|r| !std::mem::replace(r, true));
            }
        })
    }
}
