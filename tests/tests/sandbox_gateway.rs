//! Tier 2: a Gateway of class `trellis` with an HTTPRoute in front of two
//! meshed echo backends (`tests/fixtures/gateway/echo.yaml`, shaped like the
//! upstream base manifests), driven through `trellisctl`: `up` waits for the
//! gateway proxy and prints its address; pods reach it by address and by
//! the deployer's Service name, over HTTP and HTTPS (the certificate of a
//! Secret made here, as the upstream suite makes its own); the host reaches
//! it with `ip netns exec trl-<name>-node`; the backends see the gateway's
//! own SPIFFE id (mTLS); the Gateway is programmed with its address; a
//! listener added by `apply` is served when `apply` returns; `down` leaves
//! no namespace or process behind.

mod common;

use common::*;
use std::process::Command;
use trellis_sandbox::{Sandbox, gateway};

const NAME: &str = "it-gateway";
const GATEWAY: &str = "gateway-demo/edge";
const CLIENT: &str = "gateway-demo/infra-backend-v1";

fn fixture() -> std::path::PathBuf {
    root().join("tests/fixtures/gateway/echo.yaml")
}

/// Runs curl in the client pod through `trellisctl sandbox exec`; stdout.
fn curl_in_pod(args: &[&str]) -> String {
    let mut all = vec![
        "sandbox", "exec", "--name", NAME, CLIENT, "--", "curl", "-s", "-m", "10",
    ];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(&all);
    assert_eq!(code, 0, "curl {args:?} failed:\n{out}\n{err}");
    out
}

fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not echo JSON ({e}): {body:?}"))
}

#[test]
fn a_gateway_serves_http_and_https_to_pods_and_the_host() {
    require_root();
    fresh(NAME);
    let tmp = tempfile::tempdir().unwrap();
    let (secret, cert) =
        gateway::tls_secret("gateway-demo", "echo-example-com", &["*.example.com"]).unwrap();
    let secret_file = tmp.path().join("secret.json");
    std::fs::write(&secret_file, secret.to_string()).unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();

    let (code, out, err) = ctl(&[
        "sandbox",
        "up",
        "--name",
        NAME,
        "-f",
        fixture().to_str().unwrap(),
        "-f",
        secret_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "sandbox up failed:\n{out}\n{err}");
    let st = Sandbox::open(NAME).unwrap().state().unwrap();
    let gw = st
        .gateways
        .get(GATEWAY)
        .expect("a proxy for the Gateway")
        .clone();
    assert!(gw.ready);
    let addr = gw.address.to_string();
    assert!(
        out.contains(&format!("{GATEWAY}  {addr}")),
        "up prints the address:\n{out}"
    );
    assert_eq!(
        gw.address.octets()[..2],
        [198, 19],
        "from the Service range"
    );

    // From a pod, by address: routed by path; the backend (meshed) learns
    // the gateway's own identity from its mTLS certificate.
    let v2 = echo(&curl_in_pod(&[
        "-H",
        "Host: echo.example.com",
        &format!("http://{addr}/v2/x"),
    ]));
    assert!(
        v2["pod"].as_str().unwrap().starts_with("infra-backend-v2"),
        "{v2}"
    );
    assert_eq!(v2["path"], "/v2/x");
    assert_eq!(
        v2["headers"]["X-Trellis-Client-Id"][0],
        "spiffe://cluster.local/ns/gateway-demo/sa/edge-trellis"
    );
    // By the name of the deployer's Service.
    let v1 = echo(&curl_in_pod(&[
        "-H",
        "Host: echo.example.com",
        "http://edge-trellis.gateway-demo/",
    ]));
    assert!(
        v1["pod"].as_str().unwrap().starts_with("infra-backend-v1"),
        "{v1}"
    );
    // A host no route serves.
    let status = curl_in_pod(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: nope.example.org",
        &format!("http://{addr}/"),
    ]);
    assert_eq!(status, "404");
    // HTTPS, terminated with the Secret's certificate.
    let ca_arg = ca.to_str().unwrap();
    let resolve = format!("echo.example.com:443:{addr}");
    let https = echo(&curl_in_pod(&[
        "--cacert",
        ca_arg,
        "--resolve",
        &resolve,
        "https://echo.example.com/secure",
    ]));
    assert!(
        https["pod"]
            .as_str()
            .unwrap()
            .starts_with("infra-backend-v1"),
        "{https}"
    );
    assert_eq!(https["path"], "/secure");

    // From the host, in the node namespace.
    let node = format!("trl-{NAME}-node");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node,
            "curl",
            "-s",
            "-m",
            "10",
            "-H",
            "Host: echo.example.com",
            &format!("http://{addr}/v2"),
        ])
        .output()
        .unwrap();
    let host = echo(&String::from_utf8_lossy(&out.stdout));
    assert!(
        host["pod"]
            .as_str()
            .unwrap()
            .starts_with("infra-backend-v2"),
        "{host}"
    );

    // The controller's view: addresses written, the Gateway programmed.
    let manifest = Sandbox::open(NAME)
        .unwrap()
        .dir
        .manifests()
        .join("gateway-gateway-demo-edge.yaml");
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(
        text.contains(&addr),
        "status.addresses in the controller's directory:\n{text}"
    );
    let (status, body) = trellis_sandbox::probe::http_get(
        &node,
        trellis_sandbox::spawn::controller_admin(),
        "/status",
    )
    .unwrap();
    assert_eq!(status, 200);
    let statuses: serde_json::Value = serde_json::from_str(&body).unwrap();
    let gw_status = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Gateway")
        .unwrap();
    assert!(
        gw_status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True"),
        "{gw_status}"
    );
    let (_, metrics) =
        trellis_sandbox::probe::http_get(&node, gateway::admin_addr(&gw), "/metrics").unwrap();
    assert!(
        metrics.contains(r#"direction="gateway",service="gateway-demo/edge/http",route="HTTPRoute gateway-demo/echo rule 0""#),
        "{metrics}"
    );

    // A listener added by `apply` is served once `apply` returns.
    let mut gw_obj = trellis_sandbox::manifest::read_paths(&[fixture()])
        .unwrap()
        .into_iter()
        .find(|o| o.kind() == "Gateway")
        .unwrap()
        .0;
    gw_obj["spec"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "alt", "port": 8080, "protocol": "HTTP"}));
    let changed = tmp.path().join("gateway.json");
    std::fs::write(&changed, gw_obj.to_string()).unwrap();
    let (code, out, err) = ctl(&[
        "sandbox",
        "apply",
        "--name",
        NAME,
        "-f",
        changed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    let alt = echo(&curl_in_pod(&[
        "-H",
        "Host: echo.example.com",
        &format!("http://{addr}:8080/"),
    ]));
    assert!(
        alt["pod"].as_str().unwrap().starts_with("infra-backend-v1"),
        "{alt}"
    );

    let (code, out, err) = ctl(&["sandbox", "down", "--name", NAME]);
    assert_eq!(code, 0, "down failed:\n{out}\n{err}");
    assert!(namespaces(&format!("trl-{NAME}-")).is_empty());
    let proxy = gw.proc.as_ref().unwrap();
    assert!(
        !trellis_sandbox::netns::alive(proxy),
        "no gateway proxy left"
    );
}
