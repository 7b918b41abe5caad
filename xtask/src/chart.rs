//! The Helm chart's tasks:
//!
//! - `cargo xtask chart` lints and renders `charts/trellis` with the real Helm
//!   engine (PyPI `helm-python-sdk`, Helm 4 as a native library: no binary,
//!   no network) for a matrix of values and validates every object; see
//!   `charts/tests/chart_test.py`. `cargo xtask test` runs it after the cargo
//!   tests.
//! - `cargo xtask chart-sync` copies the CRDs the chart installs from where
//!   they are made (`third_party/gateway-api/crds/`, `controller/crds/`)
//!   into `charts/trellis/files/`; the chart test fails while a copy is stale.

use anyhow::{Context, Result, bail};
use std::{fs, path::Path, process::Command};

/// (source under the root, destination under the root, file names to leave
/// out, whether schema descriptions are stripped)
///
/// The Gateway API CRDs lose their `description` texts: with them both
/// channels would make the Helm release (chart files plus manifest, stored in
/// one Secret) larger than the 1 MiB a Secret may hold. Everything else is
/// kept; the chart test compares the copies with the sources field by field.
const COPIES: &[(&str, &str, &[&str], bool)] = &[
    // The safe-upgrades ValidatingAdmissionPolicy would forbid switching
    // channels with `helm upgrade`; the chart manages the channel itself.
    (
        "third_party/gateway-api/crds/standard",
        "charts/trellis/files/gateway-api/standard",
        &["vap_safeupgrades"],
        true,
    ),
    (
        "third_party/gateway-api/crds/experimental",
        "charts/trellis/files/gateway-api/experimental",
        &["vap_safeupgrades"],
        true,
    ),
    (
        "controller/crds",
        "charts/trellis/files/trellis-crds",
        &[],
        false,
    ),
];

/// Runs the chart tests.
pub fn test() -> Result<()> {
    let root = crate::root();
    let python = crate::setup::python();
    eprintln!("xtask: chart tests ({python} charts/tests/chart_test.py)");
    let status = Command::new(&python)
        .arg(root.join("charts/tests/chart_test.py"))
        .arg(&root)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {python} (is `cargo xtask setup` done?)"))?;
    if !status.success() {
        bail!("chart tests failed ({status})");
    }
    Ok(())
}

/// Refreshes the chart's copies of the CRDs.
pub fn sync() -> Result<()> {
    let root = crate::root();
    for (src, dst, skip, strip) in COPIES {
        let (src, dst) = (root.join(src), root.join(dst));
        fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for old in yaml_files(&dst)? {
            fs::remove_file(dst.join(&old)).with_context(|| format!("removing {old}"))?;
        }
        let mut n = 0;
        for name in yaml_files(&src)? {
            if skip.iter().any(|s| name.contains(s)) {
                continue;
            }
            if *strip {
                let text = fs::read_to_string(src.join(&name))
                    .with_context(|| format!("reading {name}"))?;
                fs::write(dst.join(&name), without_descriptions(&text)?)
                    .with_context(|| format!("writing {name} to {}", dst.display()))?;
            } else {
                fs::copy(src.join(&name), dst.join(&name))
                    .with_context(|| format!("copying {name} to {}", dst.display()))?;
            }
            n += 1;
        }
        eprintln!("xtask: {n} files into {}", dst.display());
    }
    Ok(())
}

fn yaml_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The YAML documents of `text` without string-valued `description` fields
/// (a property *named* description is an object and stays).
fn without_descriptions(text: &str) -> Result<String> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, x| !(k == "description" && x.is_string()));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).context("parsing a CRD file")?;
    docs.retain(|d| !d.is_null());
    docs.iter_mut().for_each(strip);
    serde_saphyr::to_string_multiple(&docs).context("writing a CRD file")
}
