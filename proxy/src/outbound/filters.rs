//! The filters stage: a rule's (then the chosen backend's) filters applied
//! to the request, and afterwards to the response. Each filter is a pure
//! function of `trellis_policy::filter`; this module only decides the order
//! and turns their answers into responses.
//!
//! Request side, in this order:
//! 1. an `Invalid` filter anywhere answers 500 (the spec: never skip one);
//! 2. CORS: a preflight is answered here (200), otherwise the response's
//!    CORS headers are noted for later;
//! 3. the others in the order written: header modifiers and `URLRewrite`
//!    change the request, `RequestRedirect` answers with its status and
//!    exact `Location` (no backend is called), `RequestMirror`s are noted
//!    for the exchange stage.
//!
//! A filter that cannot be applied (a bad header value, `ReplacePrefixMatch`
//! on a path it does not prefix) answers 500 rather than forward a request
//! that was only half filtered.

use super::http::Refusal;
use crate::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use trellis_policy::{
    HttpFilter, HttpMatch, RequestMirror,
    filter::{self, CorsAction, CorsResponse, FilterError},
    find,
};

/// What the request filters leave for later stages.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Headers every response gets (CORS of an actual request).
    pub cors: Option<CorsResponse>,
    pub mirrors: Vec<&'a RequestMirror>,
}

/// Where the request is going, for redirects: in the mesh the scheme is
/// `http` and the port the Service port the client called; at a gateway the
/// listener's scheme and port.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub scheme: &'static str,
    pub port: u16,
    /// The Service name, for a request that names no host.
    pub service: &'a str,
}

fn invalid(e: FilterError) -> Refusal {
    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Applies request filters. `Ok(Some(answer))` when a filter answers the
/// request itself (a redirect, a CORS preflight).
pub fn request<'a, B>(
    filters: &'a [HttpFilter],
    matched: Option<&HttpMatch>,
    req: &mut Request<B>,
    origin: Origin<'_>,
    plan: &mut Plan<'a>,
) -> Result<Option<Response<Body>>, Refusal> {
    if filters.is_empty() {
        return Ok(None);
    }
    for f in filters {
        if let HttpFilter::Invalid { message } = f {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                message.clone(),
            ));
        }
    }
    for f in filters {
        if let HttpFilter::Cors(cors) = f {
            match cors.evaluate(req.method(), req.headers()) {
                CorsAction::Preflight(headers) => {
                    let mut rsp = Response::new(Body::empty());
                    *rsp.headers_mut() = headers;
                    return Ok(Some(rsp));
                }
                CorsAction::Actual(r) => plan.cors = Some(r),
            }
        }
    }
    for f in filters {
        match f {
            HttpFilter::RequestHeaderModifier(m) => m.apply(req.headers_mut()).map_err(invalid)?,
            HttpFilter::UrlRewrite(r) => filter::rewrite(r, matched, req.uri())
                .and_then(|rw| rw.apply(req))
                .map_err(invalid)?,
            HttpFilter::RequestRedirect(r) => {
                let host = find::host_of(req).unwrap_or(origin.service);
                let redirect =
                    filter::redirect(r, matched, origin.scheme, host, req.uri(), origin.port)
                        .map_err(invalid)?;
                let mut rsp = Response::new(Body::empty());
                *rsp.status_mut() = redirect.status;
                rsp.headers_mut()
                    .insert(header::LOCATION, redirect.location);
                rsp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                return Ok(Some(rsp));
            }
            HttpFilter::RequestMirror(m) => plan.mirrors.push(m),
            HttpFilter::ResponseHeaderModifier(_)
            | HttpFilter::Cors(_)
            | HttpFilter::Invalid { .. } => {}
        }
    }
    Ok(None)
}

/// Applies the response header modifiers of `filters`.
pub fn response(filters: &[HttpFilter], rsp: &mut Response<Body>) -> Result<(), Refusal> {
    for f in filters {
        if let HttpFilter::ResponseHeaderModifier(m) = f {
            m.apply(rsp.headers_mut()).map_err(invalid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
