//! Tests of the client library with real certificates from an in-process
//! [`TestCa`](crate::testing::TestCa) and real TLS on loopback.

mod bundle;
mod config;
mod renew;
mod tls;

use trellis_policy::SpiffeId;

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", ns, sa)
}
