//! The upstream `ConformanceReport` (apiVersion `gateway.networking.k8s.io/v1`)
//! built from test outcomes: profiles MESH-HTTP and MESH-GRPC (the mesh run)
//! or GATEWAY-HTTP (the gateway run), each with core and extended results,
//! statistics, failed and skipped tests and the features claimed.

use serde_json::{Value, json};
use std::collections::BTreeSet;

pub const GATEWAY_API_VERSION: &str = "v1.6.1";

/// How one test ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub name: String,
    pub features: Vec<String>,
    pub provisional: bool,
    pub result: TestResult,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestResult {
    Passed,
    Failed(String),
    Skipped(String),
}

/// A conformance profile: its core features and the feature that puts a
/// test in it (besides `Mesh` or `Gateway`).
struct Profile {
    name: &'static str,
    core: &'static [&'static str],
    route: &'static str,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "MESH-HTTP",
        core: &["Mesh", "HTTPRoute"],
        route: "HTTPRoute",
    },
    Profile {
        name: "MESH-GRPC",
        core: &["Mesh", "GRPCRoute"],
        route: "GRPCRoute",
    },
    Profile {
        name: "GATEWAY-HTTP",
        core: &["Gateway", "HTTPRoute", "ReferenceGrant"],
        route: "HTTPRoute",
    },
];

/// The profiles of a mesh run.
pub const MESH_PROFILES: &[&str] = &["MESH-HTTP", "MESH-GRPC"];
/// The profile of a gateway run.
pub const GATEWAY_PROFILES: &[&str] = &["GATEWAY-HTTP"];

/// Whether a test belongs to a profile: it needs only `Mesh`, or the
/// profile's route kind and no other route kind.
fn in_profile(p: &Profile, features: &[String]) -> bool {
    let routes: Vec<&String> = features
        .iter()
        .filter(|f| f.as_str() == "HTTPRoute" || f.as_str() == "GRPCRoute")
        .collect();
    routes.is_empty() || routes.iter().all(|r| r.as_str() == p.route)
}

fn section(outcomes: &[&Outcome], features: Option<Vec<String>>) -> Value {
    let passed = outcomes
        .iter()
        .filter(|o| o.result == TestResult::Passed)
        .count();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| matches!(o.result, TestResult::Failed(_)))
        .map(|o| o.name.as_str())
        .collect();
    let skipped: Vec<&str> = outcomes
        .iter()
        .filter(|o| matches!(o.result, TestResult::Skipped(_)))
        .map(|o| o.name.as_str())
        .collect();
    let result = if !failed.is_empty() {
        "failure"
    } else if !skipped.is_empty() {
        "partial"
    } else {
        "success"
    };
    let mut v = json!({
        "result": result,
        "statistics": {"Passed": passed, "Failed": failed.len(), "Skipped": skipped.len()},
    });
    if !failed.is_empty() {
        v["failedTests"] = json!(failed);
    }
    if !skipped.is_empty() {
        v["skippedTests"] = json!(skipped);
    }
    if let Some(f) = features {
        v["supportedFeatures"] = json!(f);
        v["unsupportedFeatures"] = json!([]);
    }
    v
}

fn summary(kind: &str, s: &Value) -> String {
    let failed = s["statistics"]["Failed"].as_u64().unwrap_or(0);
    match s["result"].as_str() {
        Some("success") => format!("{kind} tests succeeded."),
        Some("partial") => format!("{kind} tests partially succeeded with skipped tests."),
        _ => format!("{kind} tests failed with {failed} test failures."),
    }
}

/// The report. `date` is RFC 3339; `version` the implementation's.
pub fn build(outcomes: &[Outcome], version: &str, date: &str) -> Value {
    build_profiles(MESH_PROFILES, outcomes, version, date)
}

/// The report over the named profiles.
pub fn build_profiles(names: &[&str], outcomes: &[Outcome], version: &str, date: &str) -> Value {
    let profiles: Vec<Value> = PROFILES
        .iter()
        .filter(|p| names.contains(&p.name))
        .map(|p| {
            let mine: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| in_profile(p, &o.features))
                .collect();
            let is_core = |o: &&&Outcome| o.features.iter().all(|f| p.core.contains(&f.as_str()));
            let core: Vec<&Outcome> = mine.iter().filter(is_core).copied().collect();
            let extended: Vec<&Outcome> = mine.iter().filter(|o| !is_core(o)).copied().collect();
            let ext_features: BTreeSet<String> = extended
                .iter()
                .flat_map(|o| o.features.iter())
                .filter(|f| !p.core.contains(&f.as_str()))
                .cloned()
                .collect();
            let core_v = section(&core, None);
            let mut v = json!({"name": p.name, "core": core_v});
            let mut text = summary("Core", &v["core"]);
            if !extended.is_empty() {
                let ext = section(&extended, Some(ext_features.into_iter().collect()));
                text.push(' ');
                text.push_str(&summary("Extended", &ext));
                v["extended"] = ext;
            }
            v["summary"] = json!(text);
            v
        })
        .collect();
    let provisional: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.provisional && o.result == TestResult::Passed)
        .map(|o| o.name.as_str())
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ConformanceReport",
        "date": date,
        "gatewayAPIVersion": GATEWAY_API_VERSION,
        "gatewayAPIChannel": "experimental",
        "implementation": {
            "organization": "trellis-mesh",
            "project": "trellis",
            "url": "https://github.com/trellis-mesh/trellis",
            "version": version,
            "contact": ["https://github.com/trellis-mesh/trellis/issues"],
        },
        "mode": "default",
        "profiles": profiles,
        "succeededProvisionalTests": provisional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str, features: &[&str], result: TestResult) -> Outcome {
        Outcome {
            name: name.into(),
            features: features.iter().map(|s| s.to_string()).collect(),
            provisional: false,
            result,
        }
    }

    #[test]
    fn tests_land_in_their_profile_and_level() {
        let outcomes = vec![
            o("MeshBasic", &["Mesh"], TestResult::Passed),
            o(
                "MeshTrafficSplit",
                &["Mesh", "HTTPRoute"],
                TestResult::Passed,
            ),
            o(
                "MeshConsumerRoute",
                &["Mesh", "MeshConsumerRoute", "HTTPRoute"],
                TestResult::Failed("no header".into()),
            ),
            o(
                "MeshGRPCRouteWeight",
                &["Mesh", "GRPCRoute"],
                TestResult::Skipped("x".into()),
            ),
        ];
        let r = build(&outcomes, "v0.1.0", "2025-01-01T00:00:00Z");
        assert_eq!(r["kind"], "ConformanceReport");
        assert_eq!(r["gatewayAPIVersion"], "v1.6.1");
        let http = &r["profiles"][0];
        assert_eq!(http["name"], "MESH-HTTP");
        assert_eq!(http["core"]["result"], "success");
        assert_eq!(http["core"]["statistics"]["Passed"], 2);
        assert_eq!(http["extended"]["result"], "failure");
        assert_eq!(http["extended"]["failedTests"][0], "MeshConsumerRoute");
        assert_eq!(
            http["extended"]["supportedFeatures"],
            json!(["MeshConsumerRoute"])
        );
        assert_eq!(
            http["summary"],
            "Core tests succeeded. Extended tests failed with 1 test failures."
        );
        let grpc = &r["profiles"][1];
        assert_eq!(grpc["name"], "MESH-GRPC");
        assert_eq!(grpc["core"]["result"], "partial");
        assert_eq!(
            grpc["core"]["statistics"]["Passed"], 1,
            "MeshBasic counts in both"
        );
        assert_eq!(grpc["core"]["skippedTests"][0], "MeshGRPCRouteWeight");
    }
}
