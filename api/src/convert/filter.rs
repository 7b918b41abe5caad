//! Route filters.

use super::{
    ConvertError, ErrorKind, Result, narrow_u16, optional, repeated, required, to_repeated,
};
use crate::proto::policy as pb;
use trellis_policy::{
    Cors, Fraction, HeaderModifier, HeaderValue, HttpFilter, PathModifier, RequestMirror,
    RequestRedirect, UrlRewrite,
};

impl From<&HttpFilter> for pb::HttpFilter {
    fn from(f: &HttpFilter) -> Self {
        use pb::http_filter::Kind;
        Self {
            kind: Some(match f {
                HttpFilter::RequestHeaderModifier(m) => Kind::RequestHeaderModifier(m.into()),
                HttpFilter::ResponseHeaderModifier(m) => Kind::ResponseHeaderModifier(m.into()),
                HttpFilter::RequestRedirect(r) => Kind::RequestRedirect(r.into()),
                HttpFilter::UrlRewrite(r) => Kind::UrlRewrite(r.into()),
                HttpFilter::RequestMirror(m) => Kind::RequestMirror(m.into()),
                HttpFilter::Cors(c) => Kind::Cors(c.into()),
                HttpFilter::Invalid { message } => Kind::Invalid(pb::InvalidFilter {
                    message: message.clone(),
                }),
            }),
        }
    }
}

impl TryFrom<pb::HttpFilter> for HttpFilter {
    type Error = ConvertError;
    fn try_from(f: pb::HttpFilter) -> Result<Self> {
        use pb::http_filter::Kind;
        let in_field = |field| move |e: ConvertError| e.in_field(field);
        match f.kind {
            Some(Kind::RequestHeaderModifier(m)) => HeaderModifier::try_from(m)
                .map(HttpFilter::RequestHeaderModifier)
                .map_err(in_field("request_header_modifier")),
            Some(Kind::ResponseHeaderModifier(m)) => HeaderModifier::try_from(m)
                .map(HttpFilter::ResponseHeaderModifier)
                .map_err(in_field("response_header_modifier")),
            Some(Kind::RequestRedirect(r)) => RequestRedirect::try_from(r)
                .map(HttpFilter::RequestRedirect)
                .map_err(in_field("request_redirect")),
            Some(Kind::UrlRewrite(r)) => UrlRewrite::try_from(r)
                .map(HttpFilter::UrlRewrite)
                .map_err(in_field("url_rewrite")),
            Some(Kind::RequestMirror(m)) => RequestMirror::try_from(m)
                .map(HttpFilter::RequestMirror)
                .map_err(in_field("request_mirror")),
            Some(Kind::Cors(c)) => Cors::try_from(c)
                .map(HttpFilter::Cors)
                .map_err(in_field("cors")),
            Some(Kind::Invalid(pb::InvalidFilter { message })) => {
                Ok(HttpFilter::Invalid { message })
            }
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

impl From<&HeaderValue> for pb::HeaderValue {
    fn from(h: &HeaderValue) -> Self {
        Self {
            name: h.name.clone(),
            value: h.value.clone(),
        }
    }
}

impl TryFrom<pb::HeaderValue> for HeaderValue {
    type Error = ConvertError;
    fn try_from(h: pb::HeaderValue) -> Result<Self> {
        Ok(Self {
            name: h.name,
            value: h.value,
        })
    }
}

impl From<&HeaderModifier> for pb::HeaderModifier {
    fn from(m: &HeaderModifier) -> Self {
        Self {
            set: to_repeated(&m.set),
            add: to_repeated(&m.add),
            remove: m.remove.clone(),
        }
    }
}

impl TryFrom<pb::HeaderModifier> for HeaderModifier {
    type Error = ConvertError;
    fn try_from(m: pb::HeaderModifier) -> Result<Self> {
        Ok(Self {
            set: repeated("set", m.set)?,
            add: repeated("add", m.add)?,
            remove: m.remove,
        })
    }
}

impl From<&PathModifier> for pb::PathModifier {
    fn from(p: &PathModifier) -> Self {
        use pb::path_modifier::Kind;
        Self {
            kind: Some(match p {
                PathModifier::ReplaceFullPath(path) => Kind::ReplaceFullPath(path.clone()),
                PathModifier::ReplacePrefixMatch(prefix) => {
                    Kind::ReplacePrefixMatch(prefix.clone())
                }
            }),
        }
    }
}

impl TryFrom<pb::PathModifier> for PathModifier {
    type Error = ConvertError;
    fn try_from(p: pb::PathModifier) -> Result<Self> {
        use pb::path_modifier::Kind;
        match p.kind {
            Some(Kind::ReplaceFullPath(path)) => Ok(PathModifier::ReplaceFullPath(path)),
            Some(Kind::ReplacePrefixMatch(prefix)) => Ok(PathModifier::ReplacePrefixMatch(prefix)),
            None => Err(ErrorKind::NoVariant.into()),
        }
    }
}

impl From<&RequestRedirect> for pb::RequestRedirect {
    fn from(r: &RequestRedirect) -> Self {
        Self {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            path: r.path.as_ref().map(Into::into),
            port: r.port.map(u32::from),
            status: r.status.into(),
        }
    }
}

impl TryFrom<pb::RequestRedirect> for RequestRedirect {
    type Error = ConvertError;
    fn try_from(r: pb::RequestRedirect) -> Result<Self> {
        Ok(Self {
            scheme: r.scheme,
            hostname: r.hostname,
            path: optional("path", r.path)?,
            port: r.port.map(|p| narrow_u16("port", p)).transpose()?,
            status: narrow_u16("status", r.status)?,
        })
    }
}

impl From<&UrlRewrite> for pb::UrlRewrite {
    fn from(r: &UrlRewrite) -> Self {
        Self {
            hostname: r.hostname.clone(),
            path: r.path.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::UrlRewrite> for UrlRewrite {
    type Error = ConvertError;
    fn try_from(r: pb::UrlRewrite) -> Result<Self> {
        Ok(Self {
            hostname: r.hostname,
            path: optional("path", r.path)?,
        })
    }
}

impl From<&Fraction> for pb::Fraction {
    fn from(f: &Fraction) -> Self {
        Self {
            numerator: f.numerator,
            denominator: f.denominator,
        }
    }
}

impl TryFrom<pb::Fraction> for Fraction {
    type Error = ConvertError;
    fn try_from(f: pb::Fraction) -> Result<Self> {
        Ok(Self {
            numerator: f.numerator,
            denominator: f.denominator,
        })
    }
}

impl From<&RequestMirror> for pb::RequestMirror {
    fn from(m: &RequestMirror) -> Self {
        Self {
            backend: Some((&m.backend).into()),
            fraction: Some((&m.fraction).into()),
        }
    }
}

impl TryFrom<pb::RequestMirror> for RequestMirror {
    type Error = ConvertError;
    fn try_from(m: pb::RequestMirror) -> Result<Self> {
        Ok(Self {
            backend: required("backend", m.backend)?,
            fraction: required("fraction", m.fraction)?,
        })
    }
}

impl From<&Cors> for pb::Cors {
    fn from(c: &Cors) -> Self {
        Self {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age: c.max_age,
        }
    }
}

impl TryFrom<pb::Cors> for Cors {
    type Error = ConvertError;
    fn try_from(c: pb::Cors) -> Result<Self> {
        Ok(Self {
            allow_origins: c.allow_origins,
            allow_methods: c.allow_methods,
            allow_headers: c.allow_headers,
            expose_headers: c.expose_headers,
            allow_credentials: c.allow_credentials,
            max_age: c.max_age,
        })
    }
}
