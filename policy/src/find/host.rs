//! The request's host, and how specifically a route's hostnames match it.

use crate::HostMatch;

/// The host a request is addressed to, without port: the URI's authority
/// (HTTP/2 `:authority`, or an HTTP/1 absolute-form target, which RFC 9112
/// says wins over `Host`), else the `Host` header. IPv6 literals keep their
/// brackets (`[::1]`), as `http::uri::Authority::host` writes them.
///
/// `None` when the request names no host or the `Host` header is not
/// visible ASCII.
pub fn host_of<B>(req: &::http::Request<B>) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        let host = authority.host();
        return (!host.is_empty()).then_some(host);
    }
    let header = req.headers().get(::http::header::HOST)?.to_str().ok()?;
    strip_port(header)
}

/// Removes the port (and any user info) from an authority such as the value
/// of a `Host` header: `example.com:8080` → `example.com`, `[::1]:80` →
/// `[::1]`. An unbracketed IPv6 address (invalid in a `Host` header) is
/// returned as it is rather than cut at its last colon.
pub fn strip_port(authority: &str) -> Option<&str> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.split_once(':') {
            Some((host, rest)) if !rest.contains(':') => host,
            _ => authority,
        }
    };
    (!host.is_empty()).then_some(host)
}

/// How specifically a route's hostnames match a request's host, ordered as
/// the spec ranks routes: the most characters in a matching exact hostname,
/// then the most characters in a matching hostname (a wildcard counts its
/// `*.`). A route without hostnames matches every host and ranks lowest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRank {
    /// Length of the matching exact hostname; 0 for a wildcard.
    pub exact: usize,
    /// Length of the matching hostname as written (`*.example.com` is 13).
    pub len: usize,
}

impl HostRank {
    /// The rank of a route without hostnames.
    pub const ANY: HostRank = HostRank { exact: 0, len: 0 };

    /// The rank of one hostname that matches.
    pub fn of(hostname: &HostMatch) -> HostRank {
        match hostname {
            HostMatch::Exact(h) => HostRank {
                exact: h.len(),
                len: h.len(),
            },
            HostMatch::Wildcard(suffix) => HostRank {
                exact: 0,
                len: suffix.len() + 2,
            },
        }
    }
}

/// The best rank among `hostnames` for `host`, `None` when none matches.
/// Empty `hostnames` match every request, even one without a host. A single
/// trailing dot of a fully qualified host (`example.com.`) is ignored.
pub fn rank(hostnames: &[HostMatch], host: Option<&str>) -> Option<HostRank> {
    if hostnames.is_empty() {
        return Some(HostRank::ANY);
    }
    let host = host?;
    let host = host.strip_suffix('.').unwrap_or(host);
    hostnames
        .iter()
        .filter(|h| h.matches(host))
        .map(HostRank::of)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        let cases = [
            ("example.com", Some("example.com")),
            ("example.com:8080", Some("example.com")),
            ("[::1]:80", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("::1", Some("::1")),
            ("user@example.com:80", Some("example.com")),
            (":80", None),
            ("", None),
        ];
        for (authority, want) in cases {
            assert_eq!(strip_port(authority), want, "{authority:?}");
        }
    }

    #[test]
    fn wildcards_compare_bytes_not_chars() {
        let wild = HostMatch::parse("*.example.com").unwrap();
        // A multi-byte character where the suffix would start must not be
        // sliced through.
        assert!(!wild.matches("ééééééééééé"));
        assert!(!wild.matches("a.éxample.com"));
        assert!(wild.matches("a.EXAMPLE.com"));
    }

    #[test]
    fn host_of_prefers_the_uri_authority() {
        let req = |uri: &str, host: Option<&str>| {
            let mut b = ::http::Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            host_of(&req("http://a.example:81/x", Some("b.example"))),
            Some("a.example")
        );
        assert_eq!(
            host_of(&req("/x", Some("b.example:8080"))),
            Some("b.example")
        );
        assert_eq!(host_of(&req("/x", None)), None);
        assert_eq!(host_of(&req("/x", Some(""))), None);
    }
}
