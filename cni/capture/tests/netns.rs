//! Tier 2: the plan in real network namespaces, as root, with the real
//! `iptables-restore`, `iptables-save` and `nft`. Apply, check and remove are
//! exact and idempotent and leave other rules alone; and capture really
//! captures: connections from the app land on the proxy's ports with their
//! original destination, while the proxy's own uid goes direct.

use pretty_assertions::assert_eq;
use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    time::Duration,
};
use trellis_capture::{
    ApplyError, Backend, CaptureConfig, Families, apply, check, netns, plan, remove,
};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, iptables, nft); run it as root, as CI does"
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        require_root();
        let name = format!("trl-cap-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend(args);
        run(&all);
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend(args);
        run(&all)
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.path(), f).expect("entering the test namespace")
    }

    /// `iptables-save -t nat` of both families without the comment lines
    /// (they carry a timestamp).
    fn iptables_save(&self) -> String {
        ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|tool| {
                self.exec(&[tool, "-t", "nat"])
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            })
            .collect()
    }

    fn nft_ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rich_config() -> CaptureConfig {
    CaptureConfig::default()
        .skip_inbound("22,9000-9100")
        .unwrap()
        .skip_outbound("25,3306")
        .unwrap()
        .skip_cidrs("10.0.0.0/8,169.254.169.254,fd00::/8,2001:db8::1")
        .unwrap()
}

/// The saved lines of our chains and the jumps into them, per family.
fn ours(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.contains("TRELLIS_"))
        .filter(|l| l.starts_with("-A"))
        .map(String::from)
        .collect()
}

#[test]
fn iptables_apply_check_remove_are_exact_and_idempotent() {
    let ns = Netns::new("ipt");
    // Someone else's rules, which must survive everything we do.
    ns.exec(&["iptables", "-t", "nat", "-N", "OTHER"]);
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "udp",
        "-j",
        "OTHER",
    ]);
    ns.exec(&[
        "ip6tables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "-j",
        "RETURN",
    ]);
    let before = ns.iptables_save();

    let plan = plan(&rich_config());
    ns.run(|| apply(&plan, Backend::Iptables)).unwrap();
    ns.run(|| check(&plan, Backend::Iptables)).unwrap();
    let once = ns.iptables_save();
    let mut expected = plan.iptables_rules(trellis_capture::Family::V4);
    expected.extend(plan.iptables_rules(trellis_capture::Family::V6));
    assert_eq!(
        ours(&once),
        expected,
        "iptables-save shows exactly the plan"
    );
    assert!(once.contains("-A PREROUTING -p udp -j OTHER"));

    ns.run(|| apply(&plan, Backend::Iptables)).unwrap();
    assert_eq!(ns.iptables_save(), once, "applying twice changes nothing");

    ns.run(|| remove(Families::BOTH, Backend::Iptables))
        .unwrap();
    assert_eq!(ns.iptables_save(), before, "removal restores the namespace");
    ns.run(|| remove(Families::BOTH, Backend::Iptables))
        .unwrap();
    assert_eq!(ns.iptables_save(), before);
}

#[test]
fn iptables_apply_replaces_a_different_plan() {
    let ns = Netns::new("iptnew");
    let old = plan(&CaptureConfig::default().skip_inbound("22").unwrap());
    let new = plan(&CaptureConfig::default().skip_outbound("443").unwrap());
    ns.run(|| apply(&old, Backend::Iptables)).unwrap();
    ns.run(|| apply(&new, Backend::Iptables)).unwrap();
    ns.run(|| check(&new, Backend::Iptables)).unwrap();
    let err = ns.run(|| check(&old, Backend::Iptables)).unwrap_err();
    assert!(matches!(err, ApplyError::Mismatch { .. }), "{err}");
}

#[test]
fn iptables_check_names_a_tampered_chain() {
    let ns = Netns::new("iptcheck");
    let plan = plan(&CaptureConfig::default());
    let err = ns.run(|| check(&plan, Backend::Iptables)).unwrap_err();
    assert!(err.to_string().contains("chain PREROUTING"), "{err}");

    ns.run(|| apply(&plan, Backend::Iptables)).unwrap();
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-D",
        "TRELLIS_OUTPUT",
        "-o",
        "lo",
        "-j",
        "RETURN",
    ]);
    let err = ns.run(|| check(&plan, Backend::Iptables)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("IPv4 chain TRELLIS_OUTPUT"), "{message}");
    assert!(message.contains("-o lo"), "{message}");
}

#[test]
fn nft_apply_check_remove_are_exact_and_idempotent() {
    let ns = Netns::new("nft");
    ns.exec(&["nft", "add", "table", "ip", "other"]);
    ns.exec(&["nft", "add", "chain", "ip", "other", "c"]);
    let before = ns.nft_ruleset();

    for config in [
        rich_config(),
        CaptureConfig::default().families(Families::IPV4),
    ] {
        let plan = plan(&config);
        ns.run(|| apply(&plan, Backend::Nft)).unwrap();
        ns.run(|| check(&plan, Backend::Nft)).unwrap();
        let once = ns.nft_ruleset();
        assert!(once.contains(&plan.nft_table()), "{once}");
        ns.run(|| apply(&plan, Backend::Nft)).unwrap();
        assert_eq!(ns.nft_ruleset(), once, "applying twice changes nothing");
    }

    ns.run(|| remove(Families::BOTH, Backend::Nft)).unwrap();
    assert_eq!(ns.nft_ruleset(), before, "removal restores the namespace");
    ns.run(|| remove(Families::BOTH, Backend::Nft)).unwrap();
    let err = ns
        .run(|| check(&plan(&rich_config()), Backend::Nft))
        .unwrap_err();
    assert!(err.to_string().contains("nft table inet trellis"), "{err}");
}

#[test]
fn nft_prints_catch_all_cidrs_as_planned() {
    let ns = Netns::new("nftall");
    let plan = plan(
        &CaptureConfig::default()
            .skip_cidrs("0.0.0.0/0,::/0")
            .unwrap(),
    );
    ns.run(|| apply(&plan, Backend::Nft)).unwrap();
    ns.run(|| check(&plan, Backend::Nft)).unwrap();
    ns.run(|| apply(&plan, Backend::Iptables)).unwrap();
    ns.run(|| check(&plan, Backend::Iptables)).unwrap();
}

/// Two namespaces on a veth pair: `app` (captured, 198.18.0.1, fd00::1) and
/// `peer` (198.18.0.2, fd00::2).
struct Pair {
    app: Netns,
    peer: Netns,
}

impl Pair {
    fn new(tag: &str) -> Self {
        let app = Netns::new(&format!("{tag}a"));
        let peer = Netns::new(&format!("{tag}p"));
        app.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ]);
        for (ns, v4, v6) in [
            (&app, "198.18.0.1/24", "fd00::1/64"),
            (&peer, "198.18.0.2/24", "fd00::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", "eth0"]);
            ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
            ns.ip(&["link", "set", "eth0", "up"]);
        }
        Pair { app, peer }
    }
}

fn listen(ns: &Netns, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(|| {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    })
}

/// Connects from inside `ns` with the given fsuid, which is what socket
/// owner matches look at.
fn connect_as(ns: &Netns, uid: u32, to: &str) -> TcpStream {
    let to: SocketAddr = to.parse().unwrap();
    ns.run(|| {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("uid {uid} connecting to {to}: {e}"))
    })
}

/// The listener that holds the connection (its handshake completes in the
/// kernel's backlog before anyone accepts), and the connection's original
/// destination as the proxy would read it.
fn landed(listeners: &[(&str, &TcpListener)]) -> (String, SocketAddr) {
    for _ in 0..100 {
        for (name, l) in listeners {
            match l.accept() {
                Ok((conn, _)) => return (name.to_string(), original_dst(&conn)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept on {name}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no listener got the connection");
}

/// `SO_ORIGINAL_DST`, or the local address when the kernel tracked no
/// translation (a namespace without nat rules does not track connections).
fn original_dst(conn: &TcpStream) -> SocketAddr {
    use nix::{
        errno::Errno,
        sys::socket::{getsockopt, sockopt},
    };
    let local = conn.local_addr().unwrap();
    let found = if local.is_ipv4() {
        getsockopt(conn, sockopt::OriginalDst).map(|sa| {
            SocketAddr::from((
                u32::from_be(sa.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sa.sin_port),
            ))
        })
    } else {
        getsockopt(conn, sockopt::Ip6tOriginalDst)
            .map(|sa| SocketAddr::from((sa.sin6_addr.s6_addr, u16::from_be(sa.sin6_port))))
    };
    match found {
        Ok(addr) => addr,
        Err(Errno::ENOENT) => local,
        Err(e) => panic!("reading the original destination: {e}"),
    }
}

fn capture_scenario(tag: &str, backend: Backend) {
    let pair = Pair::new(tag);
    let config = CaptureConfig::default().skip_inbound("2222").unwrap();
    ns_apply(&pair.app, &plan(&config), backend);

    let outbound = listen(&pair.app, "0.0.0.0:15101");
    let outbound6 = listen(&pair.app, "[::1]:15101");
    let inbound = listen(&pair.app, "0.0.0.0:15106");
    let admin = listen(&pair.app, "0.0.0.0:15190");
    let app = listen(&pair.app, "0.0.0.0:8080");
    let ssh = listen(&pair.app, "0.0.0.0:2222");
    let remote = listen(&pair.peer, "0.0.0.0:8080");
    let remote6 = listen(&pair.peer, "[fd00::2]:8081");
    let all = [
        ("outbound", &outbound),
        ("outbound6", &outbound6),
        ("inbound", &inbound),
        ("admin", &admin),
        ("app", &app),
        ("ssh", &ssh),
        ("remote", &remote),
        ("remote6", &remote6),
    ];
    let cases = [
        // The app's outbound connections go to the proxy, original destination kept.
        (
            &pair.app,
            1000,
            "198.18.0.2:8080",
            "outbound",
            "198.18.0.2:8080",
        ),
        (
            &pair.app,
            0,
            "198.18.0.2:8080",
            "outbound",
            "198.18.0.2:8080",
        ),
        (
            &pair.app,
            1000,
            "[fd00::2]:8081",
            "outbound6",
            "[fd00::2]:8081",
        ),
        // The proxy's own connections go where they were sent.
        (
            &pair.app,
            2102,
            "198.18.0.2:8080",
            "remote",
            "198.18.0.2:8080",
        ),
        (
            &pair.app,
            2102,
            "[fd00::2]:8081",
            "remote6",
            "[fd00::2]:8081",
        ),
        // Localhost and the pod's own IP stay with the app.
        (&pair.app, 1000, "127.0.0.1:8080", "app", "127.0.0.1:8080"),
        (&pair.app, 1000, "198.18.0.1:8080", "app", "198.18.0.1:8080"),
        // Inbound connections go to the proxy, except to its own ports and skipped ones.
        (
            &pair.peer,
            1000,
            "198.18.0.1:8080",
            "inbound",
            "198.18.0.1:8080",
        ),
        (
            &pair.peer,
            1000,
            "198.18.0.1:15190",
            "admin",
            "198.18.0.1:15190",
        ),
        (
            &pair.peer,
            1000,
            "198.18.0.1:2222",
            "ssh",
            "198.18.0.1:2222",
        ),
    ];
    for (ns, uid, to, expected, original) in cases {
        let _conn = connect_as(ns, uid, to);
        let (got, dst) = landed(&all);
        assert_eq!(
            (got.as_str(), dst),
            (expected, original.parse().unwrap()),
            "uid {uid} in {} connecting to {to}",
            ns.name
        );
    }

    pair.app.run(|| remove(Families::BOTH, backend)).unwrap();
    let _conn = connect_as(&pair.app, 1000, "198.18.0.2:8080");
    assert_eq!(
        landed(&all).0,
        "remote",
        "after removal nothing is captured"
    );
}

fn ns_apply(ns: &Netns, plan: &trellis_capture::Plan, backend: Backend) {
    ns.run(|| apply(plan, backend)).unwrap();
}

#[test]
fn iptables_capture_sends_the_app_through_the_proxy() {
    capture_scenario("capi", Backend::Iptables);
}

#[test]
fn nft_capture_sends_the_app_through_the_proxy() {
    capture_scenario("capn", Backend::Nft);
}
