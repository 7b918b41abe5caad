//! The plan as text: `iptables-restore` input and an `nft -f` ruleset.
//!
//! Both are written in the exact form the tools print back (`iptables-save`,
//! `nft list table`), so checking installed rules is a comparison of lines
//! and the golden files read like what an operator sees on a node.

use crate::config::{Families, Family};
use crate::plan::{Action, Chain, Match, Plan, Rule};
use ipnet::IpNet;
use std::fmt::Write as _;

/// The name of the nftables table the `nft` backend owns.
pub const NFT_TABLE: &str = "trellis";

impl Plan {
    /// The rules of one family as `iptables-save` prints them
    /// (`-A CHAIN ...`), built-in chain jumps first, in plan order.
    pub fn iptables_rules(&self, family: Family) -> Vec<String> {
        self.rules_for(family).map(iptables_rule).collect()
    }

    /// `iptables-restore --noflush` input installing the plan for one family:
    /// declaring our chains creates them or empties them, then every rule is
    /// appended. On its own it is correct for a namespace without our rules;
    /// `apply` adds the deletions of earlier jumps so re-applying is exact.
    pub fn iptables_restore(&self, family: Family) -> String {
        iptables_restore(self, family, &[])
    }

    /// The nftables family of the table: `inet` for both IP families.
    pub fn nft_family(&self) -> &'static str {
        nft_family(self.families)
    }

    /// The table as `nft list table` prints it (and `nft -f` reads it).
    pub fn nft_table(&self) -> String {
        let mut out = format!("table {} {NFT_TABLE} {{\n", self.nft_family());
        for (i, chain) in Chain::ALL.into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "\tchain {} {{", chain.name());
            match chain {
                Chain::Prerouting => {
                    out.push_str("\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
                }
                Chain::Output => {
                    out.push_str("\t\ttype nat hook output priority -100; policy accept;\n")
                }
                _ => {}
            }
            // `plan` keeps no address rule of a family the table lacks.
            for rule in self.rules.iter().filter(|r| r.chain == chain) {
                let _ = writeln!(out, "\t\t{}", nft_rule(rule));
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }

    /// `nft -f` input installing the plan atomically: any earlier
    /// `trellis` table (of any family) is deleted and the new one created in
    /// the same transaction.
    pub fn nft_ruleset(&self) -> String {
        let mut out = nft_delete_tables();
        out.push_str(&self.nft_table());
        out
    }
}

pub(crate) fn nft_family(families: Families) -> &'static str {
    match (families.ipv4, families.ipv6) {
        (true, true) => "inet",
        (false, true) => "ip6",
        _ => "ip",
    }
}

/// Deletes the `trellis` tables of every family; declaring each first makes
/// the deletion succeed whether or not it existed.
pub(crate) fn nft_delete_tables() -> String {
    ["ip", "ip6", "inet"]
        .iter()
        .map(|f| format!("table {f} {NFT_TABLE}\ndelete table {f} {NFT_TABLE}\n"))
        .collect()
}

pub(crate) fn iptables_restore(plan: &Plan, family: Family, deletions: &[String]) -> String {
    let mut out = String::from("*nat\n");
    for chain in Chain::OWN {
        let _ = writeln!(out, ":{} - [0:0]", chain.name());
    }
    for line in deletions {
        let _ = writeln!(out, "{line}");
    }
    for line in plan.iptables_rules(family) {
        let _ = writeln!(out, "{line}");
    }
    out.push_str("COMMIT\n");
    out
}

/// One rule in `iptables-save` order: addresses, interfaces, protocol, match
/// modules, target.
fn iptables_rule(rule: &Rule) -> String {
    let mut out = format!("-A {}", rule.chain.name());
    for m in &rule.matches {
        if let Match::DstNet(net) = m {
            // iptables-save leaves out a match on every address.
            if net.prefix_len() > 0 {
                let _ = write!(out, " -d {net}");
            }
        }
    }
    if rule.matches.contains(&Match::OutLoopback) {
        out.push_str(" -o lo");
    }
    let port = rule.matches.iter().find_map(|m| match m {
        Match::DstPort(p) => Some(*p),
        _ => None,
    });
    if port.is_some() || rule.matches.contains(&Match::Tcp) {
        out.push_str(" -p tcp");
    }
    if let Some(p) = port {
        if p.first() == p.last() {
            let _ = write!(out, " -m tcp --dport {}", p.first());
        } else {
            let _ = write!(out, " -m tcp --dport {}:{}", p.first(), p.last());
        }
    }
    for m in &rule.matches {
        if let Match::Uid(uid) = m {
            let _ = write!(out, " -m owner --uid-owner {uid}");
        }
    }
    match rule.action {
        Action::Jump(chain) => {
            let _ = write!(out, " -j {}", chain.name());
        }
        Action::Return => out.push_str(" -j RETURN"),
        Action::Redirect(port) => {
            let _ = write!(out, " -j REDIRECT --to-ports {port}");
        }
    }
    out
}

/// One rule as `nft list` prints it.
fn nft_rule(rule: &Rule) -> String {
    let mut parts: Vec<String> = Vec::new();
    let port = rule.matches.iter().find_map(|m| match m {
        Match::DstPort(p) => Some(*p),
        _ => None,
    });
    for m in &rule.matches {
        match m {
            Match::Uid(uid) => parts.push(format!("meta skuid {uid}")),
            Match::OutLoopback => parts.push("oifname \"lo\"".into()),
            Match::DstNet(net) => parts.push(nft_daddr(net)),
            Match::Tcp | Match::DstPort(_) => {}
        }
    }
    match port {
        Some(p) if p.first() == p.last() => parts.push(format!("tcp dport {}", p.first())),
        Some(p) => parts.push(format!("tcp dport {}-{}", p.first(), p.last())),
        None if rule.matches.contains(&Match::Tcp) => parts.push("meta l4proto tcp".into()),
        None => {}
    }
    parts.push(match rule.action {
        Action::Jump(chain) => format!("jump {}", chain.name()),
        Action::Return => "return".into(),
        Action::Redirect(port) => format!("redirect to :{port}"),
    });
    parts.join(" ")
}

/// nft prints a host prefix as the bare address.
fn nft_daddr(net: &IpNet) -> String {
    let (proto, full) = match net {
        IpNet::V4(_) => ("ip", 32),
        IpNet::V6(_) => ("ip6", 128),
    };
    if net.prefix_len() == full {
        format!("{proto} daddr {}", net.addr())
    } else {
        format!("{proto} daddr {net}")
    }
}

#[cfg(test)]
mod tests {
    use crate::{CaptureConfig, Family, plan};

    #[test]
    fn iptables_lines_use_save_spelling() {
        let plan = plan(
            &CaptureConfig::default()
                .skip_outbound("25,8000-8100")
                .unwrap()
                .skip_cidrs("10.1.2.3")
                .unwrap(),
        );
        let rules = plan.iptables_rules(Family::V4);
        for expected in [
            "-A TRELLIS_OUTPUT -p tcp -m tcp --dport 8000:8100 -j RETURN",
            "-A TRELLIS_OUTPUT -d 10.1.2.3/32 -j RETURN",
            "-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -j RETURN",
            "-A TRELLIS_OUTPUT -o lo -j RETURN",
            "-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15101",
        ] {
            assert!(
                rules.iter().any(|r| r == expected),
                "{expected} in {rules:#?}"
            );
        }
        assert!(
            plan.iptables_rules(Family::V6)
                .iter()
                .all(|r| !r.contains("10.1.2.3"))
        );
    }

    #[test]
    fn nft_prints_hosts_bare_and_ranges_with_a_dash() {
        let plan = plan(
            &CaptureConfig::default()
                .skip_outbound("8000-8100")
                .unwrap()
                .skip_cidrs("10.1.2.3,fd00::/8")
                .unwrap(),
        );
        let table = plan.nft_table();
        assert!(table.starts_with("table inet trellis {\n"));
        for expected in [
            "\t\tip daddr 10.1.2.3 return\n",
            "\t\tip6 daddr fd00::/8 return\n",
            "\t\ttcp dport 8000-8100 return\n",
            "\t\tmeta skuid 2102 return\n",
        ] {
            assert!(table.contains(expected), "{expected:?} in {table}");
        }
    }
}
