//! Endpoints as the proxy talks to them: an [`Upstream`] knows how to carry a
//! request to one endpoint — straight in the application's own protocol when
//! the endpoint is not meshed, or over the shared multiplexed connection to
//! its pod's proxy when it is (see [`crate::mesh`]).

use crate::{
    accrual::Accrual,
    balance::Load,
    body::{Body, ReqBody},
    client::{self, Dial, H1Pool, H2Conn},
    mesh::{self, Connect, Peer, Preamble},
};
use http::{HeaderValue, Request, Response, Uri, Version, header, uri};
use hyper::body::Incoming;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Weak},
};
use trellis_policy::SpiffeId;

/// One endpoint of a backend.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub identity: Option<SpiffeId>,
    pub load: Arc<Load>,
    /// Consecutive failures; takes the endpoint out of balancing.
    pub accrual: Accrual,
    route: Route,
}

#[derive(Debug)]
enum Route {
    Direct {
        h1: Arc<H1Pool>,
        h2: Arc<H2Conn>,
    },
    Mesh {
        peer: Arc<H2Conn>,
        dial: Dial,
        /// The endpoint's port as the mesh header carries it, rendered once.
        dst_port: HeaderValue,
    },
}

impl Upstream {
    pub fn is_meshed(&self) -> bool {
        matches!(self.route, Route::Mesh { .. })
    }

    /// Sends one request and returns the response head with its streaming
    /// body.
    pub async fn send(
        &self,
        req: Request<impl Into<ReqBody>>,
    ) -> Result<Response<Body>, client::Error> {
        let mut req = req.map(Into::into);
        match &self.route {
            Route::Direct { h1, h2 } => {
                if req.version() == Version::HTTP_2 {
                    Ok(h2.send(req).await?.map(Body::Incoming))
                } else {
                    h1.send(req).await
                }
            }
            Route::Mesh { peer, dst_port, .. } => {
                to_mesh(&mut req, dst_port.clone());
                Ok(peer.send(req).await?.map(Body::Incoming))
            }
        }
    }

    /// Sends a request that upgrades the connection, on a connection of its
    /// own.
    pub async fn send_upgrade(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, client::Error> {
        client::send_upgrade(&self.dial(), self.addr.port(), req).await
    }

    /// Opens a connection for one opaque stream to the endpoint.
    pub async fn open_opaque(&self) -> Result<mesh::BoxIo, client::Error> {
        self.dial().open(Preamble::opaque(self.addr.port())).await
    }

    fn dial(&self) -> Dial {
        match &self.route {
            Route::Direct { .. } => Dial::Direct(self.addr),
            Route::Mesh { dial, .. } => dial.clone(),
        }
    }
}

/// Prepares a request for the multiplexed mesh connection: note the
/// application port and protocol, and give it the absolute URI HTTP/2 needs
/// (from `Host` for HTTP/1 requests).
fn to_mesh<B>(req: &mut Request<B>, port: HeaderValue) {
    let proto = if req.version() == Version::HTTP_2 {
        "h2"
    } else {
        "h1"
    };
    let h = req.headers_mut();
    h.insert(&mesh::header::DST_PORT_NAME, port);
    h.insert(
        &mesh::header::ORIG_PROTO_NAME,
        HeaderValue::from_static(proto),
    );
    if req.uri().authority().is_none() {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority =
            Some(authority.unwrap_or_else(|| uri::Authority::from_static("localhost")));
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    }
    *req.version_mut() = Version::HTTP_2;
}

/// Undoes [`to_mesh`] at the inbound side: returns the application port and
/// restores the original protocol. `None` when the headers are missing or
/// malformed.
pub fn from_mesh<B>(req: &mut Request<B>) -> Option<u16> {
    let h = req.headers_mut();
    let port = h
        .remove(&mesh::header::DST_PORT_NAME)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let h1 = h.remove(&mesh::header::ORIG_PROTO_NAME)? == "h1";
    if h1 {
        *req.version_mut() = Version::HTTP_11;
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    Some(port)
}

/// Shares connections between endpoints that lead to the same place: one
/// multiplexed connection per peer pod (whatever port), one HTTP/1 pool and
/// one HTTP/2 connection per unmeshed endpoint.
#[derive(Debug)]
pub struct Upstreams {
    mesh_port: u16,
    connector: Arc<dyn Connect>,
    h1: Mutex<HashMap<SocketAddr, Weak<H1Pool>>>,
    h2: Mutex<HashMap<SocketAddr, Weak<H2Conn>>>,
    peers: Mutex<HashMap<IpAddr, Weak<H2Conn>>>,
}

impl Upstreams {
    pub fn new(mesh_port: u16, connector: Arc<dyn Connect>) -> Arc<Self> {
        Arc::new(Self {
            mesh_port,
            connector,
            h1: Mutex::default(),
            h2: Mutex::default(),
            peers: Mutex::default(),
        })
    }

    /// Plaintext mesh connections (no identity yet).
    pub fn plain(mesh_port: u16) -> Arc<Self> {
        Self::new(mesh_port, Arc::new(mesh::Plain))
    }

    pub fn endpoint(&self, addr: SocketAddr, identity: Option<&SpiffeId>) -> Arc<Upstream> {
        match identity {
            Some(id) => self.meshed(addr, id.clone()),
            None => self.direct(addr),
        }
    }

    pub fn direct(&self, addr: SocketAddr) -> Arc<Upstream> {
        let h1 = shared(&self.h1, addr, || H1Pool::new(addr));
        let h2 = shared(&self.h2, addr, || H2Conn::new(Dial::Direct(addr)));
        Arc::new(Upstream {
            addr,
            identity: None,
            load: Arc::new(Load::new()),
            accrual: Accrual::new(),
            route: Route::Direct { h1, h2 },
        })
    }

    pub fn meshed(&self, addr: SocketAddr, identity: SpiffeId) -> Arc<Upstream> {
        let dial = Dial::Mesh {
            peer: Peer {
                addr: SocketAddr::new(addr.ip(), self.mesh_port),
                identity: identity.clone(),
            },
            connector: self.connector.clone(),
        };
        let peer = shared(&self.peers, addr.ip(), || H2Conn::new(dial.clone()));
        Arc::new(Upstream {
            addr,
            identity: Some(identity),
            load: Arc::new(Load::new()),
            accrual: Accrual::new(),
            route: Route::Mesh {
                peer,
                dial,
                dst_port: HeaderValue::from(addr.port()),
            },
        })
    }
}

fn shared<K: std::hash::Hash + Eq + Copy, V>(
    map: &Mutex<HashMap<K, Weak<V>>>,
    key: K,
    make: impl FnOnce() -> Arc<V>,
) -> Arc<V> {
    let mut map = map.lock();
    if let Some(v) = map.get(&key).and_then(Weak::upgrade) {
        return v;
    }
    if map.len() > 64 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    let v = make();
    map.insert(key, Arc::downgrade(&v));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_headers_round_trip_an_http1_request() {
        let mut req = Request::builder()
            .uri("/a/b?c=d")
            .header(header::HOST, "web.shop:8080")
            .body(())
            .unwrap();
        to_mesh(&mut req, HeaderValue::from(8080u16));
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "http://web.shop:8080/a/b?c=d");
        assert_eq!(req.headers()[mesh::header::ORIG_PROTO], "h1");
        assert_eq!(from_mesh(&mut req), Some(8080));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert!(req.headers().get(mesh::header::DST_PORT).is_none());
        assert_eq!(req.headers()[header::HOST], "web.shop:8080");
    }

    #[test]
    fn requests_without_mesh_headers_are_refused() {
        let mut req = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(from_mesh(&mut req), None);
    }

    #[tokio::test]
    async fn endpoints_of_one_pod_share_the_peer_connection() {
        let u = Upstreams::plain(15106);
        let id = SpiffeId::for_service_account("cluster.local", "shop", "web");
        let a = u.meshed("10.0.0.1:80".parse().unwrap(), id.clone());
        let b = u.meshed("10.0.0.1:9090".parse().unwrap(), id);
        match (&a.route, &b.route) {
            (Route::Mesh { peer: pa, .. }, Route::Mesh { peer: pb, .. }) => {
                assert!(Arc::ptr_eq(pa, pb));
            }
            _ => panic!("meshed endpoints route over the mesh"),
        }
        assert!(!u.direct("10.0.0.2:80".parse().unwrap()).is_meshed());
    }
}
