//! What a pod's capture looks like: the proxy's ports and uid, and what is
//! left alone (skipped inbound ports, outbound ports and outbound CIDRs).
//! The skip lists arrive as comma-separated text from pod annotations (CNI)
//! or environment variables (`trellis-proxy init`); both parse them here.

use ipnet::IpNet;
use std::{fmt, net::IpAddr, str::FromStr};
use trellis_api::contract::{PROXY_UID, port};

/// An inclusive range of TCP ports; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn one(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// `None` when `first > last`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// `80` or `8000-8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Errors in the text form of ports and CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid port {0:?}: expected a number from 1 to 65535 or a range like 8000-8100")]
    Port(String),
    #[error("invalid port range {0:?}: the first port is above the last")]
    Range(String),
    #[error("invalid CIDR {0:?}: expected an address with a prefix length, like 10.0.0.0/8")]
    Cidr(String),
}

impl FromStr for PortRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ConfigError::Port(s.to_string()))
        };
        match s.split_once('-') {
            None => Ok(Self::one(port(s)?)),
            Some((a, b)) => {
                Self::new(port(a)?, port(b)?).ok_or_else(|| ConfigError::Range(s.to_string()))
            }
        }
    }
}

/// Parses a comma-separated list of ports and ranges (`"22, 8000-8100"`);
/// empty items are ignored so `""` is the empty list.
pub fn parse_ports(list: &str) -> Result<Vec<PortRange>, ConfigError> {
    items(list).map(str::parse).collect()
}

/// Parses a comma-separated list of CIDRs; a bare address means that one
/// host (`/32` or `/128`).
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, ConfigError> {
    items(list)
        .map(|item| {
            item.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Cidr(item.to_string()))
        })
        .collect()
}

fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Which IP families get capture rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Families {
    pub const BOTH: Families = Families {
        ipv4: true,
        ipv6: true,
    };
    pub const IPV4: Families = Families {
        ipv4: true,
        ipv6: false,
    };

    /// IPv4, plus IPv6 when the kernel has it (`/proc/net/if_inet6`);
    /// a kernel booted without IPv6 has no `ip6tables` nat table to write to.
    pub fn host() -> Self {
        Families {
            ipv4: true,
            ipv6: std::path::Path::new("/proc/net/if_inet6").exists(),
        }
    }

    pub fn iter(self) -> impl Iterator<Item = Family> {
        [(self.ipv4, Family::V4), (self.ipv6, Family::V6)]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
    }
}

/// Everything the plan depends on. `Default` is the mesh's contract: the
/// proxy's ports and uid from `trellis_api::contract`, nothing skipped, both
/// IP families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The proxy's uid: its own connections are never captured.
    pub proxy_uid: u32,
    /// Where outbound connections are redirected.
    pub outbound_port: u16,
    /// Where inbound connections are redirected.
    pub inbound_port: u16,
    /// The proxy's admin port; inbound connections to it are never redirected
    /// so probes and metrics scrapes reach it.
    pub admin_port: u16,
    /// Inbound destination ports that go straight to the app.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports that bypass the proxy.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination networks that bypass the proxy.
    pub skip_outbound_cidrs: Vec<IpNet>,
    pub families: Families,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            proxy_uid: PROXY_UID,
            outbound_port: port::PROXY_OUTBOUND,
            inbound_port: port::PROXY_INBOUND,
            admin_port: port::PROXY_ADMIN,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            families: Families::BOTH,
        }
    }
}

impl CaptureConfig {
    /// Adds skipped inbound ports from their text form (`"22,8000-8100"`).
    pub fn skip_inbound(mut self, list: &str) -> Result<Self, ConfigError> {
        self.skip_inbound_ports.extend(parse_ports(list)?);
        Ok(self)
    }

    /// Adds skipped outbound ports from their text form.
    pub fn skip_outbound(mut self, list: &str) -> Result<Self, ConfigError> {
        self.skip_outbound_ports.extend(parse_ports(list)?);
        Ok(self)
    }

    /// Adds skipped outbound CIDRs from their text form (`"10.0.0.0/8,fd00::/8"`).
    pub fn skip_cidrs(mut self, list: &str) -> Result<Self, ConfigError> {
        self.skip_outbound_cidrs.extend(parse_cidrs(list)?);
        Ok(self)
    }

    pub fn families(mut self, families: Families) -> Self {
        self.families = families;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_singles_ranges_and_blanks() {
        assert_eq!(
            parse_ports(" 22, 8000-8100,,443 ").unwrap(),
            vec![
                PortRange::one(22),
                PortRange::new(8000, 8100).unwrap(),
                PortRange::one(443)
            ]
        );
        assert_eq!(parse_ports("").unwrap(), vec![]);
    }

    #[test]
    fn bad_ports_name_the_bad_item() {
        for (input, err) in [
            ("80,http", ConfigError::Port("http".into())),
            ("0", ConfigError::Port("0".into())),
            ("70000", ConfigError::Port("70000".into())),
            ("90-80", ConfigError::Range("90-80".into())),
            ("80-", ConfigError::Port("80-".into())),
        ] {
            assert_eq!(parse_ports(input), Err(err), "{input}");
        }
    }

    #[test]
    fn cidrs_parse_networks_and_hosts() {
        let nets = parse_cidrs("10.1.2.3/8, 192.168.1.1, fd00::/8").unwrap();
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"]);
        assert_eq!(
            parse_cidrs("10.0.0.0/33"),
            Err(ConfigError::Cidr("10.0.0.0/33".into()))
        );
    }

    #[test]
    fn default_is_the_contract() {
        let c = CaptureConfig::default();
        assert_eq!(
            (c.proxy_uid, c.outbound_port, c.inbound_port, c.admin_port),
            (2102, 15101, 15106, 15190)
        );
    }
}
