//! Which listeners share which socket, and which listener of a port a
//! connection or request is for: pure functions of a [`GatewayPolicy`].
//!
//! Listeners on one port share its socket. A port is read one way
//! ([`PortKind`]): HTTP listeners alone (plaintext HTTP/1.1 and h2c), HTTPS
//! and TLS listeners together (both begin with a ClientHello, told apart by
//! SNI), or one TCP listener. A listener that cannot share its port with the
//! ones before it — another kind, a hostname already taken on the port, a
//! second TCP listener — is left out with the reason, and the ones before it
//! keep working (the first listener in the Gateway's order wins, as the
//! spec resolves conflicts).
//!
//! Within a port, [`select`] picks the listener whose hostname matches the
//! SNI or `Host` most specifically: an exact name, then the longest
//! wildcard, then a listener without hostname.

use std::collections::BTreeMap;
use trellis_policy::{
    GatewayPolicy, HostMatch, Listener, ListenerProtocol,
    find::{HostRank, host_rank},
};

/// How a port's connections are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// HTTP/1.1 or h2c, listeners chosen by `Host`.
    Http,
    /// TLS: the ClientHello's SNI chooses an HTTPS or TLS listener.
    Tls,
    /// Plain TCP: one listener.
    Tcp,
}

impl PortKind {
    pub fn of(protocol: ListenerProtocol) -> Self {
        match protocol {
            ListenerProtocol::Http => PortKind::Http,
            ListenerProtocol::Https | ListenerProtocol::Tls => PortKind::Tls,
            ListenerProtocol::Tcp => PortKind::Tcp,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PortKind::Http => "http",
            PortKind::Tls => "tls",
            PortKind::Tcp => "tcp",
        }
    }
}

/// The listeners served on one port.
#[derive(Clone, Debug, PartialEq)]
pub struct PortPlan {
    pub port: u16,
    pub kind: PortKind,
    /// In the Gateway's order.
    pub listeners: Vec<Listener>,
    /// Listeners left out, with the reason.
    pub conflicts: Vec<String>,
}

/// The Gateway's listeners by port.
pub fn plan(policy: &GatewayPolicy) -> BTreeMap<u16, PortPlan> {
    let mut ports: BTreeMap<u16, PortPlan> = BTreeMap::new();
    for l in &policy.listeners {
        let kind = PortKind::of(l.protocol);
        let p = ports.entry(l.port).or_insert_with(|| PortPlan {
            port: l.port,
            kind,
            listeners: Vec::new(),
            conflicts: Vec::new(),
        });
        let conflict = if p.kind != kind {
            Some(format!(
                "listener {} ({:?}) cannot share port {} with {} listeners",
                l.name,
                l.protocol,
                l.port,
                p.kind.as_str()
            ))
        } else if kind == PortKind::Tcp && !p.listeners.is_empty() {
            Some(format!(
                "listener {}: port {} already has a TCP listener",
                l.name, l.port
            ))
        } else {
            p.listeners
                .iter()
                .find(|o| o.hostname == l.hostname)
                .map(|other| {
                    format!(
                        "listener {}: listener {} already serves {} on port {}",
                        l.name,
                        other.name,
                        l.hostname
                            .as_ref()
                            .map_or_else(|| "every hostname".to_string(), ToString::to_string),
                        l.port
                    )
                })
        };
        match conflict {
            Some(c) => p.conflicts.push(c),
            None => p.listeners.push(l.clone()),
        }
    }
    ports
}

/// How specifically a listener's hostname matches `host`; `None` when it
/// does not. A listener without hostname matches everything, even a
/// connection without SNI, and ranks last.
pub fn rank(hostname: Option<&HostMatch>, host: Option<&str>) -> Option<HostRank> {
    match hostname {
        None => Some(HostRank::ANY),
        Some(h) => host_rank(std::slice::from_ref(h), host),
    }
}

/// The listener for `host` (an SNI or a request's host, without port): the
/// most specific match, the first of equals.
pub fn select<'a, L>(
    listeners: impl IntoIterator<Item = &'a L>,
    hostname: impl Fn(&L) -> Option<&HostMatch>,
    host: Option<&str>,
) -> Option<&'a L> {
    let mut best: Option<(HostRank, &L)> = None;
    for l in listeners {
        if let Some(r) = rank(hostname(l), host)
            && best.is_none_or(|(b, _)| r > b)
        {
            best = Some((r, l));
        }
    }
    best.map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_policy::{ListenerTls, ResourceRef, TlsMode};

    fn listener(name: &str, port: u16, protocol: ListenerProtocol, host: Option<&str>) -> Listener {
        Listener {
            name: name.into(),
            port,
            protocol,
            hostname: host.map(|h| HostMatch::parse(h).unwrap()),
            tls: (protocol != ListenerProtocol::Http && protocol != ListenerProtocol::Tcp).then(
                || ListenerTls {
                    mode: TlsMode::Terminate,
                    certificates: Vec::new(),
                },
            ),
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
            tls_routes: Vec::new(),
            tcp_routes: Vec::new(),
        }
    }

    fn gateway(listeners: Vec<Listener>) -> GatewayPolicy {
        GatewayPolicy {
            gateway: ResourceRef::new("edge", "web"),
            listeners,
        }
    }

    #[test]
    fn listeners_share_ports_by_kind_and_conflicts_are_left_out() {
        use ListenerProtocol::*;
        let p = plan(&gateway(vec![
            listener("http", 80, Http, None),
            listener("http-a", 80, Http, Some("a.example.com")),
            listener("https", 443, Https, None),
            listener("passthrough", 443, Tls, Some("db.example.com")),
            listener("tcp", 5432, Tcp, None),
            listener("tcp-again", 5432, Tcp, None),
            listener("http-on-tls", 443, Http, Some("x.example.com")),
            listener("http-dup", 80, Http, Some("a.example.com")),
        ]));
        let names = |port: u16| -> Vec<&str> {
            p[&port].listeners.iter().map(|l| l.name.as_str()).collect()
        };
        assert_eq!(names(80), ["http", "http-a"]);
        assert_eq!(names(443), ["https", "passthrough"]);
        assert_eq!(names(5432), ["tcp"]);
        assert_eq!(p[&443].kind, PortKind::Tls);
        assert_eq!(p[&80].conflicts.len(), 1);
        assert!(p[&80].conflicts[0].contains("http-dup"), "{:?}", p[&80]);
        assert!(p[&443].conflicts[0].contains("http-on-tls"));
        assert!(p[&5432].conflicts[0].contains("tcp-again"));
    }

    #[test]
    fn the_most_specific_hostname_wins() {
        let ls = [
            listener("any", 443, ListenerProtocol::Https, None),
            listener("wild", 443, ListenerProtocol::Https, Some("*.example.com")),
            listener(
                "deep",
                443,
                ListenerProtocol::Https,
                Some("*.a.example.com"),
            ),
            listener(
                "exact",
                443,
                ListenerProtocol::Https,
                Some("x.a.example.com"),
            ),
        ];
        let pick = |host: Option<&str>| {
            select(&ls, |l: &Listener| l.hostname.as_ref(), host).map(|l| l.name.as_str())
        };
        let cases = [
            (Some("x.a.example.com"), Some("exact")),
            (Some("X.A.Example.com"), Some("exact")),
            (Some("y.a.example.com"), Some("deep")),
            (Some("b.example.com"), Some("wild")),
            (Some("example.com"), Some("any")),
            (Some("other.org"), Some("any")),
            (None, Some("any")),
        ];
        for (host, want) in cases {
            assert_eq!(pick(host), want, "{host:?}");
        }
        let named = &ls[1..];
        let pick = |host| select(named, |l: &Listener| l.hostname.as_ref(), host);
        assert!(pick(Some("other.org")).is_none(), "no catch-all listener");
        assert!(pick(None).is_none(), "no SNI, no catch-all");
    }
}
