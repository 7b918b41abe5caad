//! Spec conformance: the built plugin driven exactly as a runtime drives it
//! (environment + configuration on stdin, CNI 1.0.0), for ADD, CHECK, DEL and
//! VERSION with a chained `prevResult`, and every error in the spec's shape
//! with the spec's code. Tests that enter a namespace need root.

mod support;

use pretty_assertions::assert_eq;
use serde_json::json;
use support::{Call, Netns, PodDir, default_rules};

/// A `bridge` result, spaced and ordered unlike serde_json would, so passing
/// it through "unchanged" means byte for byte.
const PREV: &str = r#"{ "cniVersion":"1.0.0", "interfaces":[{"name":"eth0","mac":"0a:58:c6:12:00:05","sandbox":"/run/netns/x"}],"ips":[{"interface":0,"address":"198.18.0.5/16","gateway":"198.18.0.1"}], "dns":{} }"#;

fn conf(pods: &PodDir, extra: serde_json::Value) -> String {
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "trellis-test",
        "type": "trellis-cni",
        "podMetadataDir": pods.path(),
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    let text = conf.to_string();
    // Splice prevResult in as raw text so its bytes stay ours.
    format!("{},\"prevResult\":{PREV}}}", &text[..text.len() - 1])
}

#[test]
fn version_lists_the_chaining_versions() {
    for stdin in [r#"{"cniVersion":"1.0.0"}"#, ""] {
        let out = Call::new("VERSION")
            .without("CNI_NETNS")
            .without("CNI_PATH")
            .run(stdin);
        out.ok();
        assert_eq!(
            out.json(),
            json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
        );
    }
}

#[test]
fn add_passes_an_unmeshed_pod_through_unchanged() {
    let pods = PodDir::new();
    pods.pod("shop", "web-0", &[], &["app"]);
    let out = Call::new("ADD")
        .pod("shop", "web-0")
        .run(&conf(&pods, json!({})));
    assert_eq!(out.ok().stdout, PREV);
}

#[test]
fn add_passes_through_an_invocation_without_a_pod() {
    let pods = PodDir::new();
    let out = Call::new("ADD").run(&conf(&pods, json!({})));
    assert_eq!(out.ok().stdout, PREV);
}

#[test]
fn opted_out_pods_are_left_alone() {
    let pods = PodDir::new();
    pods.pod(
        "shop",
        "web-0",
        &[("trellis.io/inject", "disabled")],
        &["app", "trellis-proxy"],
    );
    let out = Call::new("ADD")
        .pod("shop", "web-0")
        .run(&conf(&pods, json!({})));
    assert_eq!(out.ok().stdout, PREV);
}

#[test]
fn add_check_del_for_a_meshed_pod() {
    let ns = Netns::new("spec");
    let pods = PodDir::new();
    pods.meshed("shop", "web-0");
    let config = conf(&pods, json!({}));
    let call = |command: &str| Call::new(command).pod("shop", "web-0").netns(&ns);

    let out = call("ADD").run(&config);
    assert_eq!(out.ok().stdout, PREV, "ADD hands prevResult back unchanged");
    assert_eq!(ns.capture_rules(), default_rules());
    call("ADD").run(&config).ok();
    assert_eq!(ns.capture_rules(), default_rules(), "ADD is idempotent");

    let out = call("CHECK").run(&config);
    assert_eq!(out.ok().stdout, "", "CHECK prints nothing on success");

    let out = call("DEL").run(&config);
    assert_eq!(out.ok().stdout, "");
    assert_eq!(ns.capture_rules(), Vec::<String>::new());
    call("DEL").run(&config).ok();

    let msg = call("CHECK").run(&config).error_code(103);
    assert!(
        msg.contains("TRELLIS") || msg.contains("PREROUTING"),
        "{msg}"
    );
}

#[test]
fn annotations_change_the_rules() {
    let ns = Netns::new("annot");
    let pods = PodDir::new();
    pods.pod(
        "shop",
        "web-0",
        &[
            ("trellis.io/injected", "true"),
            ("trellis.io/skip-inbound-ports", "2222"),
        ],
        &["app"],
    );
    let config = conf(&pods, json!({"skipOutboundCidrs": "10.0.0.0/8"}));
    Call::new("ADD")
        .pod("shop", "web-0")
        .netns(&ns)
        .run(&config)
        .ok();
    let rules = ns.capture_rules();
    assert!(
        rules.contains(&"-A TRELLIS_INBOUND -p tcp -m tcp --dport 2222 -j RETURN".to_string()),
        "{rules:#?}"
    );
    assert!(
        rules.contains(&"-A TRELLIS_OUTPUT -d 10.0.0.0/8 -j RETURN".to_string()),
        "{rules:#?}"
    );
    Call::new("CHECK")
        .pod("shop", "web-0")
        .netns(&ns)
        .run(&config)
        .ok();
}

#[test]
fn nft_backend_installs_a_table() {
    let ns = Netns::new("nft");
    let pods = PodDir::new();
    pods.meshed("shop", "web-0");
    let config = conf(&pods, json!({"backend": "nft"}));
    let call = |command: &str| Call::new(command).pod("shop", "web-0").netns(&ns);
    call("ADD").run(&config).ok();
    assert!(ns.exec(&["nft", "list", "tables"]).contains("trellis"));
    call("CHECK").run(&config).ok();
    call("DEL").run(&config).ok();
    assert!(!ns.exec(&["nft", "list", "tables"]).contains("trellis"));
}

#[test]
fn del_succeeds_when_the_namespace_is_gone() {
    let pods = PodDir::new();
    let config = conf(&pods, json!({}));
    Call::new("DEL").pod("shop", "gone").run(&config).ok();
    Call::new("DEL").without("CNI_NETNS").run(&config).ok();
    Call::new("DEL").env("CNI_NETNS", "").run(&config).ok();
}

#[test]
fn malformed_configuration_is_code_6() {
    Call::new("ADD")
        .run(r#"{"cniVersion":"1.0.0","name":"#)
        .error_code(6);
    Call::new("ADD").run("not json").error_code(6);
}

#[test]
fn missing_cni_version_is_code_7() {
    let pods = PodDir::new();
    let stdin = conf(&pods, json!({})).replace(r#""cniVersion":"1.0.0","name""#, r#""name""#);
    let msg = Call::new("ADD").run(&stdin).error_code(7);
    assert!(msg.contains("cniVersion"), "{msg}");
}

#[test]
fn unsupported_versions_are_code_1() {
    let pods = PodDir::new();
    for version in ["0.2.0", "2.0.0"] {
        let msg = Call::new("ADD")
            .run(&conf(&pods, json!({"cniVersion": version})))
            .error_code(1);
        assert!(msg.contains(version), "{msg}");
    }
    let msg = Call::new("CHECK")
        .pod("shop", "web-0")
        .run(&conf(&pods, json!({"cniVersion": "0.3.1"})))
        .error_code(1);
    assert!(msg.contains("CHECK"), "{msg}");
}

#[test]
fn errors_answer_in_the_configuration_version() {
    let pods = PodDir::new();
    let out = Call::new("ADD").run(&conf(
        &pods,
        json!({"cniVersion": "0.4.0", "backend": "pf"}),
    ));
    out.error_code(7);
    assert_eq!(out.json()["cniVersion"], "0.4.0");
}

#[test]
fn missing_environment_is_code_4() {
    let pods = PodDir::new();
    let config = conf(&pods, json!({}));
    for (command, var) in [
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_CONTAINERID"),
        ("CHECK", "CNI_IFNAME"),
        ("DEL", "CNI_PATH"),
    ] {
        let msg = Call::new(command).without(var).run(&config).error_code(4);
        assert!(msg.contains(var), "{command} without {var}: {msg}");
    }
    let msg = Call::new("ADD")
        .env("CNI_ARGS", "K8S_POD_NAME")
        .run(&config)
        .error_code(4);
    assert!(msg.contains("CNI_ARGS"), "{msg}");
}

#[test]
fn unknown_commands_are_code_4() {
    let pods = PodDir::new();
    for command in ["GC", "STATUS", "add", ""] {
        let msg = Call::new(command)
            .run(&conf(&pods, json!({})))
            .error_code(4);
        assert!(msg.contains("CNI_COMMAND"), "{command:?}: {msg}");
    }
    Call::new("ADD")
        .without("CNI_COMMAND")
        .run("{}")
        .error_code(4);
}

#[test]
fn add_without_prev_result_is_code_7() {
    let pods = PodDir::new();
    let stdin = json!({"cniVersion": "1.0.0", "name": "n", "type": "trellis-cni", "podMetadataDir": pods.path()});
    let msg = Call::new("ADD").run(&stdin.to_string()).error_code(7);
    assert!(msg.contains("prevResult"), "{msg}");
}

#[test]
fn a_pod_without_metadata_is_code_100() {
    let pods = PodDir::new();
    let msg = Call::new("ADD")
        .pod("shop", "nobody")
        .run(&conf(&pods, json!({})))
        .error_code(100);
    assert!(msg.contains("shop/nobody"), "{msg}");
}

#[test]
fn a_bad_annotation_is_code_101() {
    let pods = PodDir::new();
    pods.pod(
        "shop",
        "web-0",
        &[
            ("trellis.io/injected", "true"),
            ("trellis.io/skip-outbound-ports", "smtp"),
        ],
        &["app"],
    );
    let msg = Call::new("ADD")
        .pod("shop", "web-0")
        .run(&conf(&pods, json!({})))
        .error_code(101);
    assert!(
        msg.contains("skip-outbound-ports") && msg.contains("smtp"),
        "{msg}"
    );
}

#[test]
fn a_meshed_pod_in_a_missing_namespace_is_code_3() {
    let pods = PodDir::new();
    pods.meshed("shop", "web-0");
    let msg = Call::new("ADD")
        .pod("shop", "web-0")
        .run(&conf(&pods, json!({})))
        .error_code(3);
    assert!(msg.contains("trl-cni-absent"), "{msg}");
}

#[test]
fn arguments_are_a_usage_error() {
    let out = std::process::Command::new(support::PLUGIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
