//! Builders of route filters.

use crate::{
    Backend, Cors, Fraction, HeaderModifier, HeaderValue, HttpFilter, PathModifier, RequestMirror,
    RequestRedirect, UrlRewrite,
};

/// A `RequestHeaderModifier`: `request_headers().set("x", "1").remove("y")`.
pub fn request_headers() -> HeadersBuilder {
    HeadersBuilder {
        response: false,
        modifier: HeaderModifier::default(),
    }
}

/// A `ResponseHeaderModifier`.
pub fn response_headers() -> HeadersBuilder {
    HeadersBuilder {
        response: true,
        modifier: HeaderModifier::default(),
    }
}

/// A header modifier under construction.
#[derive(Clone, Debug)]
pub struct HeadersBuilder {
    response: bool,
    modifier: HeaderModifier,
}

impl HeadersBuilder {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.modifier.set.push(HeaderValue {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn add(mut self, name: &str, value: &str) -> Self {
        self.modifier.add.push(HeaderValue {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.modifier.remove.push(name.to_string());
        self
    }

    pub fn modifier(self) -> HeaderModifier {
        self.modifier
    }
}

impl From<HeadersBuilder> for HttpFilter {
    fn from(h: HeadersBuilder) -> HttpFilter {
        if h.response {
            HttpFilter::ResponseHeaderModifier(h.modifier)
        } else {
            HttpFilter::RequestHeaderModifier(h.modifier)
        }
    }
}

impl From<HeadersBuilder> for HeaderModifier {
    fn from(h: HeadersBuilder) -> HeaderModifier {
        h.modifier
    }
}

/// A `RequestRedirect` with the spec's default status, 302:
/// `redirect().scheme("https").port(8443).status(301)`.
pub fn redirect() -> RedirectBuilder {
    RedirectBuilder(RequestRedirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status: 302,
    })
}

/// A redirect under construction.
#[derive(Clone, Debug)]
pub struct RedirectBuilder(RequestRedirect);

impl RedirectBuilder {
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.0.scheme = Some(scheme.to_string());
        self
    }

    pub fn hostname(mut self, hostname: &str) -> Self {
        self.0.hostname = Some(hostname.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.0.port = Some(port);
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.0.status = status;
        self
    }

    /// `path: {type: ReplaceFullPath}`.
    pub fn full_path(mut self, path: &str) -> Self {
        self.0.path = Some(PathModifier::ReplaceFullPath(path.to_string()));
        self
    }

    /// `path: {type: ReplacePrefixMatch}`.
    pub fn prefix_path(mut self, prefix: &str) -> Self {
        self.0.path = Some(PathModifier::ReplacePrefixMatch(prefix.to_string()));
        self
    }

    pub fn build(self) -> RequestRedirect {
        self.0
    }
}

impl From<RedirectBuilder> for HttpFilter {
    fn from(r: RedirectBuilder) -> HttpFilter {
        HttpFilter::RequestRedirect(r.0)
    }
}

impl From<RedirectBuilder> for RequestRedirect {
    fn from(r: RedirectBuilder) -> RequestRedirect {
        r.0
    }
}

/// A `URLRewrite`: `url_rewrite().hostname("b.example.com").prefix_path("/v1")`.
pub fn url_rewrite() -> RewriteBuilder {
    RewriteBuilder(UrlRewrite::default())
}

/// A rewrite under construction.
#[derive(Clone, Debug)]
pub struct RewriteBuilder(UrlRewrite);

impl RewriteBuilder {
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.0.hostname = Some(hostname.to_string());
        self
    }

    pub fn full_path(mut self, path: &str) -> Self {
        self.0.path = Some(PathModifier::ReplaceFullPath(path.to_string()));
        self
    }

    pub fn prefix_path(mut self, prefix: &str) -> Self {
        self.0.path = Some(PathModifier::ReplacePrefixMatch(prefix.to_string()));
        self
    }

    pub fn build(self) -> UrlRewrite {
        self.0
    }
}

impl From<RewriteBuilder> for HttpFilter {
    fn from(r: RewriteBuilder) -> HttpFilter {
        HttpFilter::UrlRewrite(r.0)
    }
}

impl From<RewriteBuilder> for UrlRewrite {
    fn from(r: RewriteBuilder) -> UrlRewrite {
        r.0
    }
}

/// A `RequestMirror` of every request: `mirror(service("ns", "shadow", 80)).percent(10)`.
pub fn mirror(backend: impl Into<Backend>) -> MirrorBuilder {
    MirrorBuilder(RequestMirror {
        backend: backend.into(),
        fraction: Fraction::ALL,
    })
}

/// A mirror under construction.
#[derive(Clone, Debug)]
pub struct MirrorBuilder(RequestMirror);

impl MirrorBuilder {
    pub fn percent(mut self, percent: u32) -> Self {
        self.0.fraction = Fraction {
            numerator: percent,
            denominator: 100,
        };
        self
    }

    pub fn fraction(mut self, numerator: u32, denominator: u32) -> Self {
        self.0.fraction = Fraction {
            numerator,
            denominator,
        };
        self
    }
}

impl From<MirrorBuilder> for HttpFilter {
    fn from(m: MirrorBuilder) -> HttpFilter {
        HttpFilter::RequestMirror(m.0)
    }
}

/// A `CORS` filter with the spec's default max age (5 s):
/// `cors().origin("https://*.example.com").methods(&["GET"]).credentials()`.
pub fn cors() -> CorsBuilder {
    CorsBuilder(Cors {
        max_age: 5,
        ..Cors::default()
    })
}

/// A CORS filter under construction.
#[derive(Clone, Debug)]
pub struct CorsBuilder(Cors);

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

impl CorsBuilder {
    pub fn origin(mut self, origin: &str) -> Self {
        self.0.allow_origins.push(origin.to_string());
        self
    }

    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.0.allow_methods = strings(methods);
        self
    }

    pub fn allow_headers(mut self, headers: &[&str]) -> Self {
        self.0.allow_headers = strings(headers);
        self
    }

    pub fn expose_headers(mut self, headers: &[&str]) -> Self {
        self.0.expose_headers = strings(headers);
        self
    }

    pub fn credentials(mut self) -> Self {
        self.0.allow_credentials = true;
        self
    }

    pub fn max_age(mut self, seconds: u32) -> Self {
        self.0.max_age = seconds;
        self
    }

    pub fn build(self) -> Cors {
        self.0
    }
}

impl From<CorsBuilder> for HttpFilter {
    fn from(c: CorsBuilder) -> HttpFilter {
        HttpFilter::Cors(c.0)
    }
}

impl From<CorsBuilder> for Cors {
    fn from(c: CorsBuilder) -> Cors {
        c.0
    }
}

/// A filter the controller could not resolve.
pub fn invalid_filter(message: &str) -> HttpFilter {
    HttpFilter::Invalid {
        message: message.to_string(),
    }
}
