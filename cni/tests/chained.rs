//! Tier 2: `trellis-cni` chained after Debian's reference plugins, invoked
//! exactly as a container runtime invokes them (CNI 1.0.0: one process per
//! plugin, environment + configuration on stdin, each plugin given the
//! previous result as `prevResult`, DEL in reverse order), in a node
//! namespace with two pods on a bridge. The meshed pod gets the capture
//! rules and its traffic really goes through the proxy's ports; the
//! unmeshed one is left alone; CHECK passes; DEL undoes everything.

mod support;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use std::{net::SocketAddr, path::PathBuf};
use support::{Call, Netns, Output, PodDir, cni_path, default_rules, landed, listen};

/// A container runtime's CNI side: the network list and the node
/// namespace its plugins run in.
struct Runtime {
    node: Netns,
    list: Value,
    _ipam: tempfile::TempDir,
}

const LOOPBACK: &str = r#"{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}"#;

impl Runtime {
    fn new(pods: &PodDir) -> Self {
        let node = Netns::new("node");
        node.exec(&["ip", "link", "set", "lo", "up"]);
        let ipam = tempfile::tempdir().unwrap();
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "trellis-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "trl-test0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "198.18.0.0/24"}]],
                        "dataDir": ipam.path(),
                    },
                },
                {"type": "trellis-cni", "podMetadataDir": pods.path()},
            ],
        });
        Self {
            node,
            list,
            _ipam: ipam,
        }
    }

    fn binary(kind: &str) -> PathBuf {
        std::env::split_paths(&cni_path())
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "plugin {kind} not in {} (install containernetworking-plugins)",
                    cni_path()
                )
            })
    }

    /// One plugin call, run from the node namespace.
    fn call(
        &self,
        command: &str,
        conf: &Value,
        pod: &Netns,
        id: &str,
        ifname: &str,
        (ns, name): (&str, &str),
    ) -> Output {
        let kind = conf["type"].as_str().unwrap().to_string();
        let call = Call::of(&Self::binary(&kind), command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .netns(pod)
            .pod(ns, name);
        let stdin = conf.to_string();
        self.node.run(|| call.run(&stdin))
    }

    /// The configuration one plugin of the list gets.
    fn conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = self.list["cniVersion"].clone();
        conf["name"] = self.list["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().unwrap().clone()
    }

    /// Loopback, then the list; returns each plugin's result.
    fn add(&self, pod: &Netns, id: &str, who: (&str, &str)) -> Vec<Value> {
        let lo: Value = serde_json::from_str(LOOPBACK).unwrap();
        self.call("ADD", &lo, pod, id, "lo", who).ok();
        let mut results: Vec<Value> = Vec::new();
        for plugin in self.plugins() {
            let out = self.call(
                "ADD",
                &self.conf(&plugin, results.last()),
                pod,
                id,
                "eth0",
                who,
            );
            results.push(out.ok().json());
        }
        results
    }

    fn check(&self, pod: &Netns, id: &str, who: (&str, &str), cached: &Value) {
        for plugin in self.plugins() {
            let out = self.call(
                "CHECK",
                &self.conf(&plugin, Some(cached)),
                pod,
                id,
                "eth0",
                who,
            );
            assert_eq!(out.ok().stdout, "", "{plugin}");
        }
    }

    fn del(&self, pod: &Netns, id: &str, who: (&str, &str), cached: &Value) {
        for plugin in self.plugins().iter().rev() {
            self.call(
                "DEL",
                &self.conf(plugin, Some(cached)),
                pod,
                id,
                "eth0",
                who,
            )
            .ok();
        }
        let lo: Value = serde_json::from_str(LOOPBACK).unwrap();
        self.call("DEL", &lo, pod, id, "lo", who).ok();
    }
}

fn ip_of(result: &Value) -> std::net::Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address in {result}"))
}

#[test]
fn chained_after_bridge_it_captures_meshed_pods_only() {
    let pods = PodDir::new();
    pods.meshed("shop", "app-0");
    pods.pod("shop", "peer-0", &[], &["app"]);
    let runtime = Runtime::new(&pods);
    let app = Netns::new("app");
    let peer = Netns::new("peer");
    let app_who = ("shop", "app-0");
    let peer_who = ("shop", "peer-0");

    let app_results = runtime.add(&app, "app-0-id", app_who);
    let peer_results = runtime.add(&peer, "peer-0-id", peer_who);
    assert_eq!(
        app_results[1], app_results[0],
        "trellis-cni passes the bridge result through"
    );
    assert_eq!(peer_results[1], peer_results[0]);
    let app_result = app_results.last().unwrap().clone();
    let (app_ip, peer_ip) = (ip_of(&app_result), ip_of(peer_results.last().unwrap()));

    assert_eq!(
        app.capture_rules(),
        default_rules(),
        "the meshed pod is captured"
    );
    assert_eq!(
        peer.capture_rules(),
        Vec::<String>::new(),
        "the other pod is not"
    );

    let outbound = listen(&app, "0.0.0.0:15101");
    let inbound = listen(&app, "0.0.0.0:15106");
    let app_port = listen(&app, "0.0.0.0:8080");
    let peer_port = listen(&peer, "0.0.0.0:8080");
    let all = [
        ("outbound", &outbound),
        ("inbound", &inbound),
        ("app", &app_port),
        ("peer", &peer_port),
    ];
    let to_peer = SocketAddr::from((peer_ip, 8080));
    let to_app = SocketAddr::from((app_ip, 8080));
    for (from, uid, to, expected, original) in [
        (&app, 1000, to_peer, "outbound", to_peer),
        (&app, 2102, to_peer, "peer", to_peer),
        (&peer, 1000, to_app, "inbound", to_app),
        (&app, 1000, to_app, "app", to_app),
    ] {
        let _conn = from.connect_as(uid, to);
        assert_eq!(
            landed(&all),
            (expected.to_string(), original),
            "uid {uid} in {} to {to}",
            from.name
        );
    }

    runtime.check(&app, "app-0-id", app_who, &app_result);

    runtime.del(&app, "app-0-id", app_who, &app_result);
    assert_eq!(app.capture_rules(), Vec::<String>::new());
    let ipam = runtime.list["plugins"][0]["ipam"]["dataDir"]
        .as_str()
        .unwrap()
        .to_string();
    let leases = PathBuf::from(ipam).join("trellis-test");
    assert!(
        !leases.join(app_ip.to_string()).exists(),
        "the address went back to host-local"
    );
    assert!(leases.join(peer_ip.to_string()).exists());
    // A runtime may DEL again, for example after a restart.
    runtime.del(&app, "app-0-id", app_who, &app_result);
    runtime.del(&peer, "peer-0-id", peer_who, peer_results.last().unwrap());
}
