//! The `CORS` filter, evaluated for one request.
//!
//! ```text
//!   OPTIONS + Origin + Access-Control-Request-Method ──► Preflight: the proxy
//!        answers 200 itself (CORS headers only when the origin is allowed)
//!   anything else ──► Actual: forward, then CorsResponse::apply adds
//!        Access-Control-Allow-Origin & co. to the response when allowed
//! ```
//!
//! An allowed origin is always echoed (never `*`), which is what the spec
//! requires with credentials and allows without; responses always get
//! `Vary: Origin`, because they differ by origin and a shared cache must
//! not hand one origin's answer to another.

use super::Cors;
use http::{HeaderMap, HeaderValue, Method, header};

/// What the proxy does with a request on a rule with a CORS filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsAction {
    /// A preflight: answer `200` with these headers and do not call the
    /// backend. Without an allowed origin they carry no CORS headers and
    /// the browser refuses the actual request.
    Preflight(HeaderMap),
    /// Not a preflight: forward the request, then apply this to the
    /// response's headers.
    Actual(CorsResponse),
}

/// The CORS headers an actual (non-preflight) response gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsResponse {
    /// The request's `Origin`, when allowed.
    allow_origin: Option<HeaderValue>,
    credentials: bool,
    expose: Expose,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Expose {
    #[default]
    Nothing,
    List(HeaderValue),
    /// `*` with credentials, where `*` is not allowed: the names of the
    /// response's own headers are listed instead.
    ResponseHeaders,
}

impl CorsResponse {
    /// Whether the request's origin was allowed.
    pub fn is_allowed(&self) -> bool {
        self.allow_origin.is_some()
    }

    /// Adds the CORS headers to a response (replacing any the backend set,
    /// since the route's policy is the one that applies) and `Vary: Origin`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        add_vary_origin(headers);
        let Some(origin) = &self.allow_origin else {
            return;
        };
        let expose = match &self.expose {
            Expose::Nothing => None,
            Expose::List(v) => Some(v.clone()),
            Expose::ResponseHeaders => {
                let names: Vec<&str> = headers
                    .keys()
                    .map(|k| k.as_str())
                    .filter(|k| !k.starts_with("access-control-") && *k != "vary")
                    .collect();
                (!names.is_empty())
                    .then(|| HeaderValue::from_str(&names.join(", ")).ok())
                    .flatten()
            }
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

impl Cors {
    /// Evaluates the filter for a request's method and headers.
    pub fn evaluate(&self, method: &Method, headers: &HeaderMap) -> CorsAction {
        let origin = headers.get(header::ORIGIN);
        let allowed = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows_origin(o)));
        let requested_method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        if method == Method::OPTIONS
            && origin.is_some()
            && let Some(requested_method) = requested_method
        {
            let mut out = HeaderMap::new();
            add_vary_origin(&mut out);
            if let Some(origin) = allowed {
                self.preflight(origin, requested_method, headers, &mut out);
            }
            return CorsAction::Preflight(out);
        }
        CorsAction::Actual(CorsResponse {
            allow_origin: allowed.cloned(),
            credentials: self.allow_credentials,
            expose: self.expose(),
        })
    }

    fn preflight(
        &self,
        origin: &HeaderValue,
        requested_method: &HeaderValue,
        req: &HeaderMap,
        out: &mut HeaderMap,
    ) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let methods = self.wildcard_or_list(&self.allow_methods, Some(requested_method));
        if let Some(v) = methods {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        let requested_headers = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(v) = self.wildcard_or_list(&self.allow_headers, requested_headers) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Expose::List(v) = self.expose() {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age),
        );
    }

    /// The value of an allow-list header: absent when nothing is configured;
    /// `*` without credentials; with credentials, where `*` is forbidden, the
    /// request's own value (absent when it sent none); else the list joined
    /// with `, `. A configured value that is not a valid header value leaves
    /// the header out (and the browser refuses), never a panic.
    fn wildcard_or_list(
        &self,
        configured: &[String],
        requested: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        if configured.is_empty() {
            return None;
        }
        if configured.iter().any(|c| c == "*") {
            return if self.allow_credentials {
                requested.cloned()
            } else {
                Some(HeaderValue::from_static("*"))
            };
        }
        HeaderValue::from_str(&configured.join(", ")).ok()
    }

    fn expose(&self) -> Expose {
        if self.expose_headers.is_empty() {
            Expose::Nothing
        } else if self.expose_headers.iter().any(|h| h == "*") {
            if self.allow_credentials {
                Expose::ResponseHeaders
            } else {
                Expose::List(HeaderValue::from_static("*"))
            }
        } else {
            match HeaderValue::from_str(&self.expose_headers.join(", ")) {
                Ok(v) => Expose::List(v),
                Err(_) => Expose::Nothing,
            }
        }
    }

    /// Whether `origin` (the request's `Origin` header) is allowed by one of
    /// `allow_origins`: `*` allows every origin; otherwise scheme, host and
    /// port must match, the port defaulting to 80 for `http` and 443 for
    /// `https` on both sides, and a `*` in the allowed host matching any
    /// (non-empty) run of characters, dots included, at its left
    /// (`https://*.bar.com` allows `https://a.b.bar.com`, not
    /// `https://bar.com`).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|allowed| {
            allowed == "*"
                || match (Origin::parse(allowed), Origin::parse(origin)) {
                    (Some(a), Some(o)) => a.allows(&o),
                    _ => false,
                }
        })
    }
}

fn add_vary_origin(headers: &mut HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `scheme://host[:port]`, borrowed.
#[derive(Debug)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    fn parse(s: &'a str) -> Option<Origin<'a>> {
        let (scheme, rest) = s.split_once("://")?;
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']')?;
            let host = &rest[..addr.len() + 2];
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?.parse().ok()?)),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p.parse().ok()?)),
                None => (rest, None),
            }
        };
        if scheme.is_empty() || host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return None;
        }
        Some(Origin { scheme, host, port })
    }

    fn effective_port(&self) -> Option<u16> {
        self.port.or(if self.scheme.eq_ignore_ascii_case("http") {
            Some(80)
        } else if self.scheme.eq_ignore_ascii_case("https") {
            Some(443)
        } else {
            None
        })
    }

    /// Whether this allowed origin (possibly with a wildcard host) allows
    /// `origin`.
    fn allows(&self, origin: &Origin<'_>) -> bool {
        if !self.scheme.eq_ignore_ascii_case(origin.scheme)
            || self.effective_port() != origin.effective_port()
        {
            return false;
        }
        match self.host.strip_prefix('*') {
            None => self.host.eq_ignore_ascii_case(origin.host),
            Some(suffix) => {
                let (h, s) = (origin.host.as_bytes(), suffix.as_bytes());
                h.len() > s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}
