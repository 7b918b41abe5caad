//! HTTP routes: rules, matches, backends, timeouts, retries and session
//! persistence.

use super::{
    ConvertError, ErrorKind, Result, duration_to_proto, enumeration, meta::optional_duration,
    narrow_u16s, optional, repeated, required, to_repeated, widen,
};
use crate::proto::policy as pb;
use trellis_policy::{
    HeaderMatch, HttpBackend, HttpMatch, HttpRetry, PathMatch, QueryParamMatch, SessionPersistence,
    SessionPersistenceKind, Timeouts, ValueMatch, regex::Regex,
};

route_conversions!(HttpRoute, HttpRule);

impl From<&HttpBackend> for pb::HttpBackend {
    fn from(b: &HttpBackend) -> Self {
        Self {
            backend: Some((&b.backend).into()),
            weight: b.weight,
            filters: to_repeated(&b.filters),
        }
    }
}

impl TryFrom<pb::HttpBackend> for HttpBackend {
    type Error = ConvertError;
    fn try_from(b: pb::HttpBackend) -> Result<Self> {
        Ok(Self {
            backend: required("backend", b.backend)?,
            weight: b.weight,
            filters: repeated("filters", b.filters)?,
        })
    }
}

impl From<&HttpMatch> for pb::HttpMatch {
    fn from(m: &HttpMatch) -> Self {
        Self {
            path: m.path.as_ref().map(Into::into),
            headers: to_repeated(&m.headers),
            query_params: to_repeated(&m.query_params),
            method: m.method.clone(),
        }
    }
}

impl TryFrom<pb::HttpMatch> for HttpMatch {
    type Error = ConvertError;
    fn try_from(m: pb::HttpMatch) -> Result<Self> {
        Ok(Self {
            path: optional("path", m.path)?,
            headers: repeated("headers", m.headers)?,
            query_params: repeated("query_params", m.query_params)?,
            method: m.method,
        })
    }
}

impl From<&PathMatch> for pb::PathMatch {
    fn from(p: &PathMatch) -> Self {
        use pb::path_match::Kind;
        Self {
            kind: Some(match p {
                PathMatch::Exact(path) => Kind::Exact(path.clone()),
                PathMatch::Prefix(prefix) => Kind::Prefix(prefix.clone()),
                PathMatch::Regex(re) => Kind::Regex(re.as_str().to_string()),
            }),
        }
    }
}

impl TryFrom<pb::PathMatch> for PathMatch {
    type Error = ConvertError;
    fn try_from(p: pb::PathMatch) -> Result<Self> {
        use pb::path_match::Kind;
        match p.kind {
            Some(Kind::Exact(path)) => Ok(PathMatch::Exact(path)),
            Some(Kind::Prefix(prefix)) => Ok(PathMatch::Prefix(prefix)),
            Some(Kind::Regex(re)) => regex("regex", &re).map(PathMatch::Regex),
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

impl From<&ValueMatch> for pb::ValueMatch {
    fn from(v: &ValueMatch) -> Self {
        use pb::value_match::Kind;
        Self {
            kind: Some(match v {
                ValueMatch::Exact(value) => Kind::Exact(value.clone()),
                ValueMatch::Regex(re) => Kind::Regex(re.as_str().to_string()),
            }),
        }
    }
}

impl TryFrom<pb::ValueMatch> for ValueMatch {
    type Error = ConvertError;
    fn try_from(v: pb::ValueMatch) -> Result<Self> {
        use pb::value_match::Kind;
        match v.kind {
            Some(Kind::Exact(value)) => Ok(ValueMatch::Exact(value)),
            Some(Kind::Regex(re)) => regex("regex", &re).map(ValueMatch::Regex),
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

impl From<&HeaderMatch> for pb::HeaderMatch {
    fn from(h: &HeaderMatch) -> Self {
        Self {
            name: h.name.clone(),
            value: Some((&h.value).into()),
        }
    }
}

impl TryFrom<pb::HeaderMatch> for HeaderMatch {
    type Error = ConvertError;
    fn try_from(h: pb::HeaderMatch) -> Result<Self> {
        Ok(Self {
            name: h.name,
            value: required("value", h.value)?,
        })
    }
}

impl From<&QueryParamMatch> for pb::QueryParamMatch {
    fn from(q: &QueryParamMatch) -> Self {
        Self {
            name: q.name.clone(),
            value: Some((&q.value).into()),
        }
    }
}

impl TryFrom<pb::QueryParamMatch> for QueryParamMatch {
    type Error = ConvertError;
    fn try_from(q: pb::QueryParamMatch) -> Result<Self> {
        Ok(Self {
            name: q.name,
            value: required("value", q.value)?,
        })
    }
}

impl From<&Timeouts> for pb::Timeouts {
    fn from(t: &Timeouts) -> Self {
        Self {
            request: t.request.map(duration_to_proto),
            backend_request: t.backend_request.map(duration_to_proto),
        }
    }
}

impl TryFrom<pb::Timeouts> for Timeouts {
    type Error = ConvertError;
    fn try_from(t: pb::Timeouts) -> Result<Self> {
        Ok(Self {
            request: optional_duration("request", t.request)?,
            backend_request: optional_duration("backend_request", t.backend_request)?,
        })
    }
}

/// No timeouts (the default) is an absent message.
pub(super) fn timeouts_to_proto(t: &Timeouts) -> Option<pb::Timeouts> {
    (*t != Timeouts::default()).then(|| t.into())
}

/// An absent message is no timeouts.
pub(super) fn timeouts_from_proto(
    field: &'static str,
    t: Option<pb::Timeouts>,
) -> Result<Timeouts> {
    Ok(optional(field, t)?.unwrap_or_default())
}

impl From<&HttpRetry> for pb::HttpRetry {
    fn from(r: &HttpRetry) -> Self {
        Self {
            codes: widen(&r.codes),
            attempts: r.attempts,
            backoff: r.backoff.map(duration_to_proto),
        }
    }
}

impl TryFrom<pb::HttpRetry> for HttpRetry {
    type Error = ConvertError;
    fn try_from(r: pb::HttpRetry) -> Result<Self> {
        Ok(Self {
            codes: narrow_u16s("codes", r.codes)?,
            attempts: r.attempts,
            backoff: optional_duration("backoff", r.backoff)?,
        })
    }
}

impl From<&SessionPersistence> for pb::SessionPersistence {
    fn from(s: &SessionPersistence) -> Self {
        Self {
            name: s.name.clone(),
            kind: pb::session_persistence::Kind::from(s.kind).into(),
            absolute_timeout: s.absolute_timeout.map(duration_to_proto),
            permanent: s.permanent,
        }
    }
}

impl TryFrom<pb::SessionPersistence> for SessionPersistence {
    type Error = ConvertError;
    fn try_from(s: pb::SessionPersistence) -> Result<Self> {
        Ok(Self {
            name: s.name,
            kind: enumeration::<pb::session_persistence::Kind, _>("kind", s.kind)?,
            absolute_timeout: optional_duration("absolute_timeout", s.absolute_timeout)?,
            permanent: s.permanent,
        })
    }
}

impl From<SessionPersistenceKind> for pb::session_persistence::Kind {
    fn from(k: SessionPersistenceKind) -> Self {
        match k {
            SessionPersistenceKind::Cookie => Self::Cookie,
            SessionPersistenceKind::Header => Self::Header,
        }
    }
}

impl From<pb::session_persistence::Kind> for SessionPersistenceKind {
    fn from(k: pb::session_persistence::Kind) -> Self {
        match k {
            pb::session_persistence::Kind::Cookie => Self::Cookie,
            pb::session_persistence::Kind::Header => Self::Header,
        }
    }
}

/// A regular expression carried as its source text.
pub(super) fn regex(field: &'static str, source: &str) -> Result<Regex> {
    Regex::new(source).map_err(|e| ConvertError::from(e).in_field(field))
}
