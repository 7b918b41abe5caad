use super::*;
use pretty_assertions::assert_eq;

struct Node {
    _tmp: tempfile::TempDir,
    opts: Options,
    exe: PathBuf,
}

/// A node with a bridge conflist, a service-account directory and our binary.
fn node(primary: (&str, Value)) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for d in ["bin", "net.d", "sa"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("net.d").join(primary.0),
        serde_json::to_vec(&primary.1).unwrap(),
    )
    .unwrap();
    std::fs::write(root.join("net.d/99-other.conflist"), b"{}").unwrap();
    std::fs::write(root.join("sa/token"), b"token-1").unwrap();
    std::fs::write(root.join("sa/ca.crt"), b"ca").unwrap();
    std::fs::write(root.join("trellis-cni-build"), b"\x7fELF plugin").unwrap();
    let opts = Options::parse(&[
        "install".into(),
        format!("--bin-dir={}", root.join("bin").display()),
        format!("--conf-dir={}", root.join("net.d").display()),
        "--host-conf-dir=/etc/cni/net.d".into(),
        format!("--sa-dir={}", root.join("sa").display()),
    ])
    .unwrap();
    let exe = root.join("trellis-cni-build");
    Node {
        _tmp: tmp,
        opts,
        exe,
    }
}

fn bridge() -> Value {
    json!({"cniVersion": "1.0.0", "name": "pods", "plugins": [
        {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "198.18.0.0/16"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
    ]})
}

/// The `type` of each plugin of a conflist, in order.
fn plugin_types(conf: &Value) -> Vec<&str> {
    conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

fn read(n: &Node, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(n.opts.conf_dir.join(name)).unwrap()).unwrap()
}

#[test]
fn installs_chains_last_and_uninstalls() {
    let n = node(("10-pods.conflist", bridge()));
    assert!(!is_installed(&n.opts));
    assert!(install_once(&n.opts, "https://10.96.0.1:443", &n.exe).unwrap());
    let conf = read(&n, "10-pods.conflist");
    assert_eq!(plugin_types(&conf), ["bridge", "portmap", PLUGIN]);
    assert_eq!(
        conf["plugins"][2]["kubeconfig"],
        "/etc/cni/net.d/trellis-cni/kubeconfig"
    );
    assert_eq!(
        std::fs::read(n.opts.bin_dir.join(PLUGIN)).unwrap(),
        b"\x7fELF plugin"
    );
    let kc = std::fs::read_to_string(n.opts.conf_dir.join("trellis-cni/kubeconfig")).unwrap();
    assert!(
        kc.contains("server: https://10.96.0.1:443")
            && kc.contains("tokenFile: /etc/cni/net.d/trellis-cni/token"),
        "{kc}"
    );
    assert!(is_installed(&n.opts));
    assert_eq!(
        read(&n, "99-other.conflist"),
        json!({}),
        "only the primary network is chained"
    );

    // Nothing to do the second time; a rotated token is copied.
    assert!(!install_once(&n.opts, "https://10.96.0.1:443", &n.exe).unwrap());
    std::fs::write(n.opts.sa_dir.join("token"), b"token-2").unwrap();
    assert!(install_once(&n.opts, "https://10.96.0.1:443", &n.exe).unwrap());
    assert_eq!(
        std::fs::read(n.opts.conf_dir.join("trellis-cni/token")).unwrap(),
        b"token-2"
    );

    // The primary plugin rewrites its file: chained again.
    std::fs::write(
        n.opts.conf_dir.join("10-pods.conflist"),
        serde_json::to_vec(&bridge()).unwrap(),
    )
    .unwrap();
    assert!(!is_installed(&n.opts));
    assert!(install_once(&n.opts, "https://10.96.0.1:443", &n.exe).unwrap());
    assert!(is_installed(&n.opts));

    uninstall(&n.opts).unwrap();
    assert_eq!(read(&n, "10-pods.conflist"), bridge());
    assert!(!n.opts.bin_dir.join(PLUGIN).exists());
    assert!(!n.opts.conf_dir.join(PLUGIN).exists());
    assert!(!is_installed(&n.opts));
    uninstall(&n.opts).unwrap();
}

#[test]
fn a_single_plugin_conf_becomes_a_conflist() {
    let conf = json!({"cniVersion": "0.4.0", "name": "k8s", "type": "ptp", "ipam": {"type": "host-local"}});
    let n = node(("05-ptp.conf", conf));
    install_once(&n.opts, "https://[fd00::1]:443", &n.exe).unwrap();
    assert!(!n.opts.conf_dir.join("05-ptp.conf").exists());
    let list = read(&n, "05-ptp.conflist");
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["name"], "k8s");
    assert_eq!(
        list["plugins"][0],
        json!({"type": "ptp", "ipam": {"type": "host-local"}})
    );
    assert_eq!(list["plugins"][1]["type"], PLUGIN);
}

#[test]
fn chaining_replaces_an_older_entry() {
    let mut conf = bridge();
    conf["plugins"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"type": PLUGIN, "kubeconfig": "/old"}));
    let out = chain(&conf, &entry(Path::new("/etc/cni/net.d"))).unwrap();
    assert_eq!(plugin_types(&out), ["bridge", "portmap", PLUGIN]);
    assert_eq!(unchain(&out).unwrap(), bridge());
    assert_eq!(unchain(&bridge()), None);
    assert!(chain(&json!([1]), &json!({})).is_err());
}

#[test]
fn the_primary_network_is_the_first_configuration_file() {
    let names: Vec<String> = [
        "99-z.conflist",
        "10-a.conf",
        ".hidden.conflist",
        "notes.txt",
        "20-b.conflist",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(primary(&names).unwrap(), "10-a.conf");
    assert_eq!(primary(&[]), None);
}

#[test]
fn no_configuration_yet_is_a_clear_error() {
    let n = node(("10-pods.conflist", bridge()));
    for f in ["10-pods.conflist", "99-other.conflist"] {
        std::fs::remove_file(n.opts.conf_dir.join(f)).unwrap();
    }
    let err = install_once(&n.opts, "https://10.96.0.1:443", &n.exe).unwrap_err();
    assert!(
        err.to_string().contains("holds no network configuration"),
        "{err}"
    );
}

#[test]
fn arguments() {
    let o = Options::parse(&["install".into(), "--check".into(), "--conf-dir=/c".into()]).unwrap();
    assert_eq!(o.mode, Mode::Check);
    assert_eq!(o.host_conf_dir, PathBuf::from("/c"));
    assert_eq!(
        Options::parse(&["uninstall".into()]).unwrap().mode,
        Mode::Uninstall
    );
    for bad in [
        vec!["setup"],
        vec!["install", "--bin-dir"],
        vec!["uninstall", "--check"],
        vec!["install", "--nope=1"],
    ] {
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        assert!(Options::parse(&args).is_err(), "{bad:?}");
    }
}
