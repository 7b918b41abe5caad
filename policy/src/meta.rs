//! Names of the Kubernetes objects a policy came from, and workload identities.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A namespaced Kubernetes object, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    pub namespace: String,
    pub name: String,
}

impl ResourceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kind of object a route came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    /// Synthesized by the controller when no route applies: everything goes
    /// to the Service itself.
    #[default]
    Default,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
}

impl RouteKind {
    /// The Kubernetes kind, as used in metrics labels and status.
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteKind::Default => "default",
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::GrpcRoute => "GRPCRoute",
            RouteKind::TcpRoute => "TCPRoute",
            RouteKind::TlsRoute => "TLSRoute",
        }
    }
}

/// Where a route came from. Its creation time and name break ties between
/// rules of equal precedence, as the Gateway API spec prescribes (oldest
/// route first, then `namespace/name` alphabetically).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp`, in seconds since the Unix epoch.
    #[serde(default)]
    pub creation_timestamp: i64,
}

impl RouteRef {
    /// The sort key the spec uses to order routes of equal precedence.
    /// Comparing the tuple orders namespaces before names, which differs from
    /// the spec's comparison of the one string `{namespace}/{name}` when a
    /// namespace is a prefix of another (`a-b/x` sorts before `a/y`); use
    /// [`crate::find::route_order`] where that matters.
    pub fn precedence_key(&self) -> (i64, &str, &str) {
        (self.creation_timestamp, &self.namespace, &self.name)
    }
}

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// A SPIFFE id: `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`
/// for Trellis workloads, though any valid SPIFFE id can be carried.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId(String);

/// A string that is not a SPIFFE id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE id {value:?}: {reason}")]
pub struct InvalidSpiffeId {
    pub value: String,
    pub reason: &'static str,
}

impl SpiffeId {
    /// The identity of a Kubernetes service account.
    pub fn for_service_account(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self(format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    pub fn parse(value: &str) -> Result<Self, InvalidSpiffeId> {
        let err = |reason| InvalidSpiffeId {
            value: value.to_string(),
            reason,
        };
        let rest = value
            .strip_prefix("spiffe://")
            .ok_or_else(|| err("scheme is not spiffe://"))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain.is_empty() {
            return Err(err("empty trust domain"));
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(err("trust domain has characters other than [a-z0-9-._]"));
        }
        if !path.is_empty()
            && path.split('/').any(|seg| {
                seg.is_empty()
                    || seg == "."
                    || seg == ".."
                    || !seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            })
        {
            return Err(err(
                "path segment is empty, a dot segment, or has characters other than [a-zA-Z0-9-._]",
            ));
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split_once('/').map_or(rest, |(d, _)| d)
    }

    /// The namespace and service account, for ids of the Kubernetes shape.
    pub fn service_account(&self) -> Option<ResourceRef> {
        let rest = &self.0["spiffe://".len()..];
        let (_, path) = rest.split_once('/')?;
        let mut segs = path.split('/');
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some(ResourceRef::new(ns, sa)),
            _ => None,
        }
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = InvalidSpiffeId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        let id = SpiffeId::for_service_account("cluster.local", "shop", "web");
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.service_account(), Some(ResourceRef::new("shop", "web")));
        assert_eq!(SpiffeId::parse(id.as_str()), Ok(id));
        for bad in [
            "http://x/ns/a",
            "spiffe://",
            "spiffe:///ns/a",
            "spiffe://Upper/x",
            "spiffe://td/a//b",
            "spiffe://td/../x",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            SpiffeId::parse("spiffe://td/other")
                .unwrap()
                .service_account(),
            None
        );
    }
}
