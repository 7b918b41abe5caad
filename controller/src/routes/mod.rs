//! Routes as the index keeps them: each `HTTPRoute`, `GRPCRoute`, `TCPRoute`
//! and `TLSRoute` converted once, when it arrives, into matches and filters
//! of the policy model with the spec's defaults filled in. Only references
//! (parents, backends, mirrors) stay unresolved: they depend on other objects
//! and are resolved per target by [`crate::resolve`].
//!
//! A value the policy model cannot carry (a bad regular expression, an
//! invalid duration or hostname) makes the whole route unaccepted with reason
//! `UnsupportedValue`; a filter Trellis cannot apply becomes an
//! [`HttpFilter::Invalid`], so only that rule answers 500.

use crate::crd::{self, ParentReference};
use crate::objects::Kind;
use gateway_api::experimental::{
    grpcroutes::GrpcRoute, httproutes::HttpRoute, tlsroutes::TlsRoute,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_api::contract::key;
use trellis_policy::{
    Cors, Fraction, GrpcMatch, GrpcMethodMatch, GrpcRetry, HeaderMatch, HeaderModifier,
    HeaderValue, HostMatch, HttpFilter, HttpMatch, HttpRetry, PathMatch, PathModifier,
    QueryParamMatch, RequestRedirect, ResourceRef, RouteKind, RouteRef, SessionPersistence,
    SessionPersistenceKind, Timeouts, UrlRewrite, ValueMatch, duration, regex::Regex,
};

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Identifies a route in the index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RouteKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// A route, converted.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSpec {
    pub meta: RouteRef,
    pub generation: Option<i64>,
    pub parents: Vec<ParentRef>,
    pub hostnames: Vec<HostMatch>,
    pub rules: Rules,
    /// Why the route cannot be accepted at all (`UnsupportedValue`).
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rules {
    Http(Vec<HttpRuleSpec>),
    Grpc(Vec<GrpcRuleSpec>),
    /// TCPRoute and TLSRoute rules.
    Opaque(Vec<OpaqueRuleSpec>),
}

/// A parentRef, with defaults filled and the reference as written kept for
/// status.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<u16>,
    pub section_name: Option<String>,
    pub written: ParentReference,
}

impl ParentRef {
    fn new(written: ParentReference, route_ns: &str) -> Self {
        Self {
            group: written
                .group
                .clone()
                .unwrap_or_else(|| GATEWAY_GROUP.to_string()),
            kind: written
                .kind
                .clone()
                .unwrap_or_else(|| "Gateway".to_string()),
            namespace: written
                .namespace
                .clone()
                .unwrap_or_else(|| route_ns.to_string()),
            name: written.name.clone(),
            port: written.port.and_then(|p| u16::try_from(p).ok()),
            section_name: written.section_name.clone(),
            written,
        }
    }

    /// A GAMMA parent: a Service (core group).
    pub fn is_service(&self) -> bool {
        (self.group.is_empty() || self.group == "core") && self.kind == "Service"
    }

    pub fn is_gateway(&self) -> bool {
        self.group == GATEWAY_GROUP && self.kind == "Gateway"
    }

    pub fn target(&self) -> ResourceRef {
        ResourceRef::new(self.namespace.clone(), self.name.clone())
    }
}

/// A backendRef (or a mirror's), with defaults filled.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<u16>,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

impl BackendRef {
    pub fn is_service(&self) -> bool {
        (self.group.is_empty() || self.group == "core") && self.kind == "Service"
    }

    pub fn target(&self) -> ResourceRef {
        ResourceRef::new(self.namespace.clone(), self.name.clone())
    }

    /// The reference as a user would name it, for invalid backends and logs.
    pub fn display(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{} {}/{}{}", self.kind, self.namespace, self.name, port)
    }
}

/// A filter whose only unresolved part is a mirror's backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Ready(HttpFilter),
    Mirror {
        backend: BackendRef,
        fraction: Fraction,
    },
}

/// An HTTPRoute or GRPCRoute rule: the two differ only in how they match
/// and retry.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec<M, R> {
    pub name: Option<String>,
    pub matches: Vec<M>,
    pub filters: Vec<Filter>,
    pub backends: Vec<BackendRef>,
    pub timeouts: Timeouts,
    pub retry: Option<R>,
    pub session_persistence: Option<SessionPersistence>,
}

impl<M, R> RuleSpec<M, R> {
    /// The rule's filters, then those of each backend in turn.
    pub fn all_filters(&self) -> impl Iterator<Item = &Filter> {
        self.filters
            .iter()
            .chain(self.backends.iter().flat_map(|b| &b.filters))
    }

    /// Every backend reference of the rule, mirrors included: the rule's
    /// mirrors, then each backend followed by its own mirrors.
    fn backend_refs<'a>(&'a self, out: &mut Vec<&'a BackendRef>) {
        let mirrors = |fs: &'a [Filter]| {
            fs.iter().filter_map(|f| match f {
                Filter::Mirror { backend, .. } => Some(backend),
                Filter::Ready(_) => None,
            })
        };
        out.extend(mirrors(&self.filters));
        for b in &self.backends {
            out.push(b);
            out.extend(mirrors(&b.filters));
        }
    }
}

pub type HttpRuleSpec = RuleSpec<HttpMatch, HttpRetry>;
pub type GrpcRuleSpec = RuleSpec<GrpcMatch, GrpcRetry>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpaqueRuleSpec {
    pub name: Option<String>,
    pub backends: Vec<BackendRef>,
}

impl RouteSpec {
    pub fn key(&self) -> RouteKey {
        RouteKey {
            kind: match self.meta.kind {
                RouteKind::GrpcRoute => Kind::GrpcRoute,
                RouteKind::TcpRoute => Kind::TcpRoute,
                RouteKind::TlsRoute => Kind::TlsRoute,
                RouteKind::HttpRoute | RouteKind::Default => Kind::HttpRoute,
            },
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// Every backend reference of the route, mirrors included.
    pub fn backend_refs(&self) -> Vec<&BackendRef> {
        let mut out = Vec::new();
        match &self.rules {
            Rules::Http(rules) => rules.iter().for_each(|r| r.backend_refs(&mut out)),
            Rules::Grpc(rules) => rules.iter().for_each(|r| r.backend_refs(&mut out)),
            Rules::Opaque(rules) => rules.iter().for_each(|r| out.extend(&r.backends)),
        }
        out
    }
}

/// The name serde gives a value (e.g. an enum's wire spelling).
pub(crate) fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

pub(crate) fn meta_of(kind: RouteKind, meta: &ObjectMeta) -> RouteRef {
    RouteRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        creation_timestamp: crate::index::store::creation_timestamp(meta),
    }
}

/// Collects the first problem while converting, so conversion never stops
/// half-way and the route reports one clear message.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Option<String>);

impl Problems {
    pub(crate) fn note(&mut self, message: String) {
        if self.0.is_none() {
            self.0 = Some(message);
        }
    }
}

pub(crate) fn parse_duration(
    p: &mut Problems,
    field: &str,
    value: Option<&String>,
) -> Option<Duration> {
    let v = value?;
    match duration::parse(v) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            p.note(format!("{field}: {e}"));
            None
        }
    }
}

pub(crate) fn regex(p: &mut Problems, value: &str) -> Option<Regex> {
    Regex::new(value).map_err(|e| p.note(e.to_string())).ok()
}

pub(crate) fn hostnames(p: &mut Problems, names: &[String]) -> Vec<HostMatch> {
    names
        .iter()
        .filter_map(|h| HostMatch::parse(h).map_err(|e| p.note(e.to_string())).ok())
        .collect()
}

pub(crate) fn parents<T: Serialize>(refs: &[T], route_ns: &str) -> Vec<ParentRef> {
    refs.iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter_map(|v| serde_json::from_value::<ParentReference>(v).ok())
        .map(|r| ParentRef::new(r, route_ns))
        .collect()
}

macro_rules! backend_ref {
    ($r:expr, $ns:expr, $weight:expr, $filters:expr) => {{
        let r = $r;
        BackendRef {
            group: r.group.clone().unwrap_or_default(),
            kind: r.kind.clone().unwrap_or_else(|| "Service".to_string()),
            namespace: r.namespace.clone().unwrap_or_else(|| $ns.to_string()),
            name: r.name.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()),
            weight: $weight,
            filters: $filters,
        }
    }};
}

macro_rules! header_modifier {
    ($m:expr) => {{
        let m = $m;
        HeaderModifier {
            set: m
                .set
                .iter()
                .flatten()
                .map(|h| HeaderValue {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value.clone(),
                })
                .collect(),
            add: m
                .add
                .iter()
                .flatten()
                .map(|h| HeaderValue {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value.clone(),
                })
                .collect(),
            remove: m
                .remove
                .iter()
                .flatten()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        }
    }};
}

macro_rules! mirror {
    ($p:expr, $m:expr, $ns:expr) => {{
        let m = $m;
        let fraction = match (&m.fraction, m.percent) {
            (Some(f), _) => {
                let denominator = f.denominator.unwrap_or(100);
                if f.numerator < 0 || denominator <= 0 || f.numerator > denominator {
                    $p.note(format!(
                        "requestMirror fraction {}/{} is not a fraction",
                        f.numerator, denominator
                    ));
                }
                Fraction {
                    numerator: u32::try_from(f.numerator).unwrap_or(0),
                    denominator: u32::try_from(denominator).unwrap_or(1).max(1),
                }
            }
            (None, Some(percent)) => Fraction {
                numerator: u32::try_from(percent.clamp(0, 100)).unwrap_or(0),
                denominator: 100,
            },
            (None, None) => Fraction::ALL,
        };
        Filter::Mirror {
            backend: backend_ref!(&m.backend_ref, $ns, 1, Vec::new()),
            fraction,
        }
    }};
}

/// A redirect's or rewrite's path modifier; one without its value is noted
/// as a problem.
macro_rules! path_modifier {
    ($p:expr, $path:expr) => {{
        let path = $path;
        match (
            wire_name(&path.r#type).as_str(),
            &path.replace_full_path,
            &path.replace_prefix_match,
        ) {
            ("ReplaceFullPath", Some(full), _) => Some(PathModifier::ReplaceFullPath(full.clone())),
            ("ReplacePrefixMatch", _, Some(prefix)) => {
                Some(PathModifier::ReplacePrefixMatch(prefix.clone()))
            }
            (t, _, _) => {
                $p.note(format!("path modifier {t} has no value"));
                None
            }
        }
    }};
}

pub(crate) fn invalid(message: String) -> Filter {
    Filter::Ready(HttpFilter::Invalid { message })
}

macro_rules! grpc_common_filter {
    ($p:expr, $f:expr, $ns:expr, $name:expr) => {{
        let f = $f;
        match $name {
            "RequestHeaderModifier" => match &f.request_header_modifier {
                Some(m) => Filter::Ready(HttpFilter::RequestHeaderModifier(header_modifier!(m))),
                None => {
                    invalid("RequestHeaderModifier filter without requestHeaderModifier".into())
                }
            },
            "ResponseHeaderModifier" => match &f.response_header_modifier {
                Some(m) => Filter::Ready(HttpFilter::ResponseHeaderModifier(header_modifier!(m))),
                None => {
                    invalid("ResponseHeaderModifier filter without responseHeaderModifier".into())
                }
            },
            "RequestMirror" => match &f.request_mirror {
                Some(m) => mirror!($p, m, $ns),
                None => invalid("RequestMirror filter without requestMirror".into()),
            },
            "ExtensionRef" => invalid(match &f.extension_ref {
                Some(e) => format!("unsupported extensionRef {}/{} {}", e.group, e.kind, e.name),
                None => "ExtensionRef filter without extensionRef".into(),
            }),
            other => invalid(format!("unsupported filter {other}")),
        }
    }};
}

macro_rules! http_filter {
    ($p:expr, $f:expr, $ns:expr) => {{
        let f = $f;
        let name = wire_name(&f.r#type);
        match name.as_str() {
            "RequestRedirect" => match &f.request_redirect {
                Some(r) => {
                    let path = r.path.as_ref().and_then(|path| path_modifier!($p, path));
                    Filter::Ready(HttpFilter::RequestRedirect(RequestRedirect {
                        scheme: r.scheme.as_ref().map(wire_name),
                        hostname: r.hostname.clone(),
                        path,
                        port: r.port.and_then(|p| u16::try_from(p).ok()),
                        status: r
                            .status_code
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(302),
                    }))
                }
                None => invalid("RequestRedirect filter without requestRedirect".into()),
            },
            "URLRewrite" => match &f.url_rewrite {
                Some(r) => {
                    let path = r.path.as_ref().and_then(|path| path_modifier!($p, path));
                    Filter::Ready(HttpFilter::UrlRewrite(UrlRewrite {
                        hostname: r.hostname.clone(),
                        path,
                    }))
                }
                None => invalid("URLRewrite filter without urlRewrite".into()),
            },
            "CORS" => match &f.cors {
                Some(c) => Filter::Ready(HttpFilter::Cors(Cors {
                    allow_origins: c.allow_origins.clone().unwrap_or_default(),
                    allow_methods: c.allow_methods.clone().unwrap_or_default(),
                    allow_headers: c.allow_headers.clone().unwrap_or_default(),
                    expose_headers: c.expose_headers.clone().unwrap_or_default(),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                    max_age: c.max_age.and_then(|a| u32::try_from(a).ok()).unwrap_or(5),
                })),
                None => invalid("CORS filter without cors".into()),
            },
            "ExternalAuth" => invalid("ExternalAuth filters are not supported".into()),
            other => grpc_common_filter!($p, f, $ns, other),
        }
    }};
}

macro_rules! value_match {
    ($p:expr, $m:expr) => {{
        let m = $m;
        match m.r#type.as_ref().map(wire_name).as_deref() {
            Some("RegularExpression") => regex($p, &m.value).map(ValueMatch::Regex),
            _ => Some(ValueMatch::Exact(m.value.clone())),
        }
    }};
}

macro_rules! header_matches {
    ($p:expr, $hs:expr) => {{
        $hs.iter()
            .flatten()
            .filter_map(|h| {
                Some(HeaderMatch {
                    name: h.name.to_ascii_lowercase(),
                    value: value_match!($p, h)?,
                })
            })
            .collect::<Vec<_>>()
    }};
}

/// A rule's `sessionPersistence`; HTTPRoute and GRPCRoute spell it alike
/// in types of their own.
macro_rules! session_persistence {
    ($p:expr, $s:expr) => {{
        let s = $s;
        session(
            $p,
            s.session_name.clone(),
            s.r#type.as_ref().map(wire_name),
            s.absolute_timeout.as_ref(),
            s.cookie_config
                .as_ref()
                .and_then(|c| c.lifetime_type.as_ref())
                .map(wire_name),
        )
    }};
}

/// A rule with a `ReplacePrefixMatch` needs every match to be a path
/// prefix; the spec makes such a rule invalid otherwise.
fn check_prefix_rewrites(filters: &mut [Filter], matches: &[HttpMatch]) {
    let all_prefix = matches
        .iter()
        .all(|m| matches!(m.path, Some(PathMatch::Prefix(_))));
    for f in filters.iter_mut() {
        let uses_prefix = match f {
            Filter::Ready(HttpFilter::UrlRewrite(UrlRewrite { path, .. })) => {
                matches!(path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            Filter::Ready(HttpFilter::RequestRedirect(r)) => {
                matches!(r.path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            _ => false,
        };
        if uses_prefix && !all_prefix {
            *f = invalid("ReplacePrefixMatch requires every match to be a PathPrefix".into());
        }
    }
}

/// Converts an HTTPRoute.
pub fn http_route(route: &HttpRoute) -> RouteSpec {
    let ns = route.namespace().unwrap_or_default();
    let mut p = Problems::default();
    let spec = &route.spec;
    let rules = spec
        .rules
        .iter()
        .flatten()
        .map(|rule| {
            let mut matches: Vec<HttpMatch> = rule
                .matches
                .iter()
                .flatten()
                .map(|m| {
                    let path = match &m.path {
                        None => PathMatch::Prefix("/".into()),
                        Some(path) => {
                            let value = path.value.clone().unwrap_or_else(|| "/".into());
                            match path.r#type.as_ref().map(wire_name).as_deref() {
                                Some("Exact") => PathMatch::Exact(value),
                                Some("RegularExpression") => match regex(&mut p, &value) {
                                    Some(r) => PathMatch::Regex(r),
                                    None => PathMatch::Exact(value),
                                },
                                _ => PathMatch::Prefix(value),
                            }
                        }
                    };
                    if let PathMatch::Exact(v) | PathMatch::Prefix(v) = &path
                        && !v.starts_with('/')
                    {
                        p.note(format!("path {v:?} does not start with /"));
                    }
                    HttpMatch {
                        path: Some(path),
                        headers: header_matches!(&mut p, m.headers),
                        query_params: m
                            .query_params
                            .iter()
                            .flatten()
                            .filter_map(|q| {
                                Some(QueryParamMatch {
                                    name: q.name.clone(),
                                    value: value_match!(&mut p, q)?,
                                })
                            })
                            .collect(),
                        method: m.method.as_ref().map(wire_name),
                    }
                })
                .collect();
            if matches.is_empty() {
                matches.push(HttpMatch {
                    path: Some(PathMatch::Prefix("/".into())),
                    ..HttpMatch::default()
                });
            }
            let mut filters: Vec<Filter> = rule
                .filters
                .iter()
                .flatten()
                .map(|f| http_filter!(&mut p, f, ns))
                .collect();
            check_prefix_rewrites(&mut filters, &matches);
            let backends = rule
                .backend_refs
                .iter()
                .flatten()
                .map(|b| {
                    let mut fs: Vec<Filter> = b
                        .filters
                        .iter()
                        .flatten()
                        .map(|f| http_filter!(&mut p, f, ns))
                        .collect();
                    check_prefix_rewrites(&mut fs, &matches);
                    backend_ref!(b, ns, weight(b.weight), fs)
                })
                .collect();
            let timeouts = rule
                .timeouts
                .as_ref()
                .map(|t| Timeouts {
                    request: parse_duration(&mut p, "timeouts.request", t.request.as_ref()),
                    backend_request: parse_duration(
                        &mut p,
                        "timeouts.backendRequest",
                        t.backend_request.as_ref(),
                    ),
                })
                .unwrap_or_default();
            let retry = rule.retry.as_ref().map(|r| HttpRetry {
                codes: r
                    .codes
                    .iter()
                    .flatten()
                    .filter_map(|c| match u16::try_from(*c) {
                        Ok(c) if (400..600).contains(&c) => Some(c),
                        _ => {
                            p.note(format!("retry code {c} is not an HTTP error status"));
                            None
                        }
                    })
                    .collect(),
                attempts: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(2),
                backoff: parse_duration(&mut p, "retry.backoff", r.backoff.as_ref()),
            });
            let session_persistence = rule
                .session_persistence
                .as_ref()
                .map(|s| session_persistence!(&mut p, s));
            HttpRuleSpec {
                name: rule.name.clone(),
                matches,
                filters,
                backends,
                timeouts,
                retry,
                session_persistence,
            }
        })
        .collect();
    let hostnames = hostnames(&mut p, spec.hostnames.as_deref().unwrap_or_default());
    RouteSpec {
        meta: meta_of(RouteKind::HttpRoute, &route.metadata),
        generation: route.metadata.generation,
        parents: parents(spec.parent_refs.as_deref().unwrap_or_default(), &ns),
        hostnames,
        rules: Rules::Http(rules),
        error: p.0,
    }
}

pub(crate) fn weight(w: Option<i32>) -> u32 {
    w.map_or(1, |w| u32::try_from(w).unwrap_or(0))
}

pub(crate) fn session(
    p: &mut Problems,
    name: Option<String>,
    kind: Option<String>,
    absolute_timeout: Option<&String>,
    lifetime: Option<String>,
) -> SessionPersistence {
    SessionPersistence {
        name,
        kind: match kind.as_deref() {
            Some("Header") => SessionPersistenceKind::Header,
            _ => SessionPersistenceKind::Cookie,
        },
        absolute_timeout: parse_duration(p, "sessionPersistence.absoluteTimeout", absolute_timeout),
        permanent: lifetime.as_deref() == Some("Permanent"),
    }
}

mod grpc;
mod opaque;

pub use self::grpc::grpc_route;
pub use self::opaque::{tcp_route, tls_route};
