//! Reading the identity configuration from the environment.

use std::collections::HashMap;
use trellis_api::contract::env;

use super::id;
use crate::identity::{ConfigError, IdentityConfig};

fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

const POD: &[(&str, &str)] = &[
    (env::IDENTITY_ADDR, "198.18.0.2:8083"),
    (env::IDENTITY_TOKEN, "/var/run/secrets/trellis/token"),
    (env::TRUST_BUNDLE, "/var/run/trellis/ca-bundle.crt"),
    (env::POD_NAMESPACE, "shop"),
    (env::SERVICE_ACCOUNT, "web"),
];

#[test]
fn a_pod_environment_makes_a_config() {
    let config = IdentityConfig::from_env(environment(POD)).unwrap();
    assert_eq!(config.id, id("shop", "web"));
    assert_eq!(config.addr, "198.18.0.2:8083");
    assert_eq!(
        config.server_name, "198.18.0.2",
        "defaults to the address' host"
    );
    assert_eq!(
        config.trust_bundle.to_str(),
        Some("/var/run/trellis/ca-bundle.crt")
    );
}

#[test]
fn the_name_and_trust_domain_can_be_given() {
    let mut pairs = POD.to_vec();
    pairs.push((env::IDENTITY_NAME, "trellis-identity.trellis-system.svc"));
    pairs.push((env::TRUST_DOMAIN, "example.org"));
    let config = IdentityConfig::from_env(environment(&pairs)).unwrap();
    assert_eq!(config.server_name, "trellis-identity.trellis-system.svc");
    assert_eq!(config.id.as_str(), "spiffe://example.org/ns/shop/sa/web");
}

#[test]
fn a_missing_variable_is_named() {
    for (name, _) in POD {
        let pairs: Vec<_> = POD.iter().copied().filter(|(n, _)| n != name).collect();
        let error = IdentityConfig::from_env(environment(&pairs)).unwrap_err();
        assert!(
            matches!(error, ConfigError::Missing { name: n } if n == *name),
            "{name}: {error}"
        );
    }
}

#[test]
fn a_service_account_that_makes_no_spiffe_id_is_refused() {
    let pairs: Vec<_> = POD
        .iter()
        .copied()
        .filter(|(n, _)| *n != env::SERVICE_ACCOUNT)
        .collect();
    for bad in ["web/../admin", "web/admin", "Web App"] {
        let mut pairs = pairs.clone();
        pairs.push((env::SERVICE_ACCOUNT, bad));
        let error = IdentityConfig::from_env(environment(&pairs)).unwrap_err();
        assert!(
            error.to_string().contains(env::SERVICE_ACCOUNT),
            "{bad}: {error}"
        );
    }
}

#[test]
fn an_ipv6_address_gives_its_host() {
    let mut pairs: Vec<_> = POD
        .iter()
        .copied()
        .filter(|(n, _)| *n != env::IDENTITY_ADDR)
        .collect();
    pairs.push((env::IDENTITY_ADDR, "[fd00::2]:8083"));
    let config = IdentityConfig::from_env(environment(&pairs)).unwrap();
    assert_eq!(config.server_name, "fd00::2");
}
