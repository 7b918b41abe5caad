//! The capture plan: which rules, in which chains, in which order. A pure
//! function of [`CaptureConfig`]; rendering to `iptables-restore` and `nft`
//! text lives in `render`, applying it in `apply`.
//!
//! ```text
//! nat PREROUTING ─tcp─► TRELLIS_INBOUND
//!     dport inbound/admin/skipped ─► RETURN
//!     everything else ─► TRELLIS_IN_REDIRECT ─► REDIRECT :15106
//! nat OUTPUT ─tcp─► TRELLIS_OUTPUT
//!     uid 2102 (the proxy) ─► RETURN
//!     out via lo (localhost, the pod's own IP) ─► RETURN
//!     skipped CIDRs, skipped dports ─► RETURN
//!     everything else ─► TRELLIS_REDIRECT ─► REDIRECT :15101
//! ```
//!
//! Loopback: everything leaving through `lo` is left alone, so the app's
//! localhost traffic is untouched and the app reaching its own pod IP goes
//! straight to itself (a local destination routes through `lo`). The inbound
//! proxy hands connections to the app at the pod IP as uid 2102, which the
//! first OUTPUT rule lets through, so nothing loops.

use crate::config::{CaptureConfig, Families, Family, PortRange};
use ipnet::IpNet;

/// A chain the plan writes to: two built-in nat chains (only a jump each is
/// added there) and four chains of our own (wholly ours, removed exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    /// nat `PREROUTING` (built in): connections arriving at the pod.
    Prerouting,
    /// nat `OUTPUT` (built in): connections the pod opens.
    Output,
    /// `TRELLIS_INBOUND`: decides which inbound connections the proxy takes.
    Inbound,
    /// `TRELLIS_IN_REDIRECT`: redirects to the proxy's inbound port.
    InRedirect,
    /// `TRELLIS_OUTPUT`: decides which outbound connections the proxy takes.
    Outbound,
    /// `TRELLIS_REDIRECT`: redirects to the proxy's outbound port.
    Redirect,
}

impl Chain {
    /// Every chain the plan writes to, built-in ones first.
    pub const ALL: [Chain; 6] = [
        Chain::Prerouting,
        Chain::Output,
        Chain::Inbound,
        Chain::InRedirect,
        Chain::Outbound,
        Chain::Redirect,
    ];

    /// The chains the plan owns, in the order they are declared.
    pub const OWN: [Chain; 4] = [
        Chain::Inbound,
        Chain::InRedirect,
        Chain::Outbound,
        Chain::Redirect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::Inbound => "TRELLIS_INBOUND",
            Chain::InRedirect => "TRELLIS_IN_REDIRECT",
            Chain::Outbound => "TRELLIS_OUTPUT",
            Chain::Redirect => "TRELLIS_REDIRECT",
        }
    }

    pub fn is_builtin(self) -> bool {
        matches!(self, Chain::Prerouting | Chain::Output)
    }
}

/// What a rule matches on. A rule matches when all its matches do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// The protocol is TCP.
    Tcp,
    /// The TCP destination port is in the range (implies [`Match::Tcp`]).
    DstPort(PortRange),
    /// The socket belongs to this uid.
    Uid(u32),
    /// The packet leaves through the loopback interface.
    OutLoopback,
    /// The destination address is in this network (only in its own family).
    DstNet(IpNet),
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Jump(Chain),
    Return,
    /// Redirect to this local port (keeping the original destination for
    /// `SO_ORIGINAL_DST`).
    Redirect(u16),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub chain: Chain,
    pub matches: Vec<Match>,
    pub action: Action,
}

impl Rule {
    /// The family the rule is restricted to, if it matches an address.
    pub fn family(&self) -> Option<Family> {
        self.matches.iter().find_map(|m| match m {
            Match::DstNet(net) => Some(Family::of(net)),
            _ => None,
        })
    }
}

/// The rules for one pod, in order, for the families it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub families: Families,
    pub rules: Vec<Rule>,
}

impl Plan {
    /// The rules that apply to one family, in order.
    pub fn rules_for(&self, family: Family) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(move |r| r.family().is_none_or(|f| f == family))
    }
}

/// The capture plan for a configuration. Skip lists are sorted and
/// deduplicated, so the same set of skips always yields the same rules.
pub fn plan(config: &CaptureConfig) -> Plan {
    let mut rules = Vec::new();
    let mut rule = |chain: Chain, matches: &[Match], action: Action| {
        rules.push(Rule {
            chain,
            matches: matches.to_vec(),
            action,
        })
    };
    use Match::*;

    rule(Chain::Prerouting, &[Tcp], Action::Jump(Chain::Inbound));
    rule(Chain::Output, &[Tcp], Action::Jump(Chain::Outbound));

    let mut inbound_skips = vec![
        PortRange::one(config.inbound_port),
        PortRange::one(config.admin_port),
    ];
    inbound_skips.dedup();
    inbound_skips.extend(sorted(&config.skip_inbound_ports));
    let mut seen = Vec::new();
    for ports in inbound_skips {
        if !seen.contains(&ports) {
            seen.push(ports);
            rule(Chain::Inbound, &[DstPort(ports)], Action::Return);
        }
    }
    rule(Chain::Inbound, &[Tcp], Action::Jump(Chain::InRedirect));
    rule(
        Chain::InRedirect,
        &[Tcp],
        Action::Redirect(config.inbound_port),
    );

    rule(Chain::Outbound, &[Uid(config.proxy_uid)], Action::Return);
    rule(Chain::Outbound, &[OutLoopback], Action::Return);
    for net in sorted(&config.skip_outbound_cidrs) {
        if config.families.iter().any(|f| f == Family::of(&net)) {
            rule(Chain::Outbound, &[DstNet(net)], Action::Return);
        }
    }
    for ports in sorted(&config.skip_outbound_ports) {
        rule(Chain::Outbound, &[DstPort(ports)], Action::Return);
    }
    rule(Chain::Outbound, &[Tcp], Action::Jump(Chain::Redirect));
    rule(
        Chain::Redirect,
        &[Tcp],
        Action::Redirect(config.outbound_port),
    );

    Plan {
        families: config.families,
        rules,
    }
}

fn sorted<T: Ord + Copy>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort();
    items.dedup();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_rules(plan: &Plan, chain: Chain) -> Vec<(Vec<Match>, Action)> {
        plan.rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| (r.matches.clone(), r.action))
            .collect()
    }

    #[test]
    fn proxy_ports_are_never_redirected_inbound() {
        let plan = plan(&CaptureConfig::default());
        let inbound = chain_rules(&plan, Chain::Inbound);
        assert_eq!(
            inbound,
            vec![
                (vec![Match::DstPort(PortRange::one(15106))], Action::Return),
                (vec![Match::DstPort(PortRange::one(15190))], Action::Return),
                (vec![Match::Tcp], Action::Jump(Chain::InRedirect)),
            ]
        );
    }

    #[test]
    fn proxy_uid_and_loopback_come_before_any_redirect() {
        let plan = plan(&CaptureConfig::default().skip_outbound("25").unwrap());
        let outbound = chain_rules(&plan, Chain::Outbound);
        assert_eq!(outbound[0], (vec![Match::Uid(2102)], Action::Return));
        assert_eq!(outbound[1], (vec![Match::OutLoopback], Action::Return));
        assert_eq!(
            outbound.last(),
            Some(&(vec![Match::Tcp], Action::Jump(Chain::Redirect)))
        );
    }

    #[test]
    fn skips_are_sorted_and_deduplicated() {
        let a = plan(
            &CaptureConfig::default()
                .skip_inbound("9000,22,22")
                .unwrap()
                .skip_cidrs("10.0.0.0/8,192.168.0.0/16,10.0.0.0/8")
                .unwrap(),
        );
        let b = plan(
            &CaptureConfig::default()
                .skip_inbound("22,9000")
                .unwrap()
                .skip_cidrs("192.168.0.0/16,10.0.0.0/8")
                .unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(chain_rules(&a, Chain::Inbound).len(), 5);
    }

    #[test]
    fn cidrs_of_a_missing_family_are_dropped() {
        let plan = plan(
            &CaptureConfig::default()
                .families(Families::IPV4)
                .skip_cidrs("10.0.0.0/8,fd00::/8")
                .unwrap(),
        );
        let nets: Vec<Family> = plan.rules.iter().filter_map(Rule::family).collect();
        assert_eq!(nets, vec![Family::V4]);
    }

    #[test]
    fn address_rules_apply_only_to_their_family() {
        let plan = plan(&CaptureConfig::default().skip_cidrs("fd00::/8").unwrap());
        assert_eq!(
            plan.rules_for(Family::V6).count(),
            plan.rules_for(Family::V4).count() + 1
        );
    }
}
