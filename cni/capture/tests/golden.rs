//! Tier 0: configuration in, rules out. Each case renders its plan for
//! `iptables-restore` (per family) and `nft -f` into `golden/<case>.rules`;
//! the test fails when the output differs. `TRELLIS_BLESS=1 cargo test -p
//! trellis-capture --test golden` rewrites the files after an intended change.

use pretty_assertions::assert_eq;
use std::path::PathBuf;
use trellis_capture::{CaptureConfig, Families, plan};

fn cases() -> Vec<(&'static str, CaptureConfig)> {
    let config = CaptureConfig::default;
    vec![
        ("default", config()),
        (
            "skip-inbound-ports",
            config().skip_inbound("8000-8100, 22").unwrap(),
        ),
        (
            "skip-outbound-ports",
            config().skip_outbound("443,25").unwrap(),
        ),
        (
            "skip-outbound-cidrs",
            config()
                .skip_cidrs("10.0.0.0/8,169.254.169.254,fd00::/8,2001:db8::1")
                .unwrap(),
        ),
        (
            "ipv4-only",
            config()
                .families(Families::IPV4)
                .skip_inbound("22")
                .unwrap()
                .skip_cidrs("10.0.0.0/8,fd00::/8")
                .unwrap(),
        ),
        (
            "ipv6-only",
            config()
                .families(Families {
                    ipv4: false,
                    ipv6: true,
                })
                .skip_cidrs("10.0.0.0/8,fd00::/8")
                .unwrap(),
        ),
        (
            "custom-proxy",
            CaptureConfig {
                proxy_uid: 1337,
                outbound_port: 15001,
                inbound_port: 15006,
                admin_port: 15020,
                ..config()
            },
        ),
        (
            "everything",
            config()
                .skip_inbound("22,9000-9100")
                .unwrap()
                .skip_outbound("25,3306")
                .unwrap()
                .skip_cidrs("0.0.0.0/0,192.168.0.0/16,::/0")
                .unwrap(),
        ),
    ]
}

fn render(name: &str, config: &CaptureConfig) -> String {
    let plan = plan(config);
    let mut out = format!("# trellis-capture plan: {name}\n");
    for family in plan.families.iter() {
        let tool = match family {
            trellis_capture::Family::V4 => "iptables-restore",
            trellis_capture::Family::V6 => "ip6tables-restore",
        };
        out.push_str(&format!("# {tool} --noflush ({family})\n"));
        out.push_str(&plan.iptables_restore(family));
    }
    out.push_str("# nft -f\n");
    out.push_str(&plan.nft_table());
    out
}

#[test]
fn plans_match_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("TRELLIS_BLESS").is_some_and(|v| v == "1");
    for (name, config) in cases() {
        let path = dir.join(format!("{name}.rules"));
        let actual = render(name, &config);
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with TRELLIS_BLESS=1 to create it)",
                path.display()
            )
        });
        assert_eq!(
            expected, actual,
            "{name}: rerun with TRELLIS_BLESS=1 if intended"
        );
    }
}

#[test]
fn every_golden_file_has_a_case() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let names: Vec<&str> = cases().iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let stem = file.trim_end_matches(".rules");
        assert!(names.contains(&stem), "stale golden file {file}");
    }
}
