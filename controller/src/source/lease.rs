//! Leadership for status writing: a `coordination.k8s.io/v1` Lease. Every
//! replica serves streams; only the holder of the lease writes status, so
//! replicas never fight over it.

use super::kube::LeaseConfig;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others check).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// Tries to hold the lease forever, reporting leadership on `leader`.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
) -> Result<(), kube::Error> {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    loop {
        tick.tick().await;
        let held = match try_hold(&api, &config).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("lease {}/{}: {e}", config.namespace, config.name);
                // A holder that cannot renew must assume it lost the lease.
                false
            }
        };
        if leader.send_replace(held) != held {
            tracing::info!(leader = held, "status-writing leadership changed");
        }
    }
}

fn spec(identity: &str, now: Timestamp, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
        acquire_time: acquire.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// One round: create, renew or take over the lease; whether we hold it.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(&config.identity, now, 0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.as_deref().unwrap_or_default();
    let duration = SignedDuration::from_secs(i64::from(
        current
            .lease_duration_seconds
            .unwrap_or(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
    ));
    let expired = current
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0.saturating_add(duration).is_ok_and(|end| end < now));
    let transitions = current.lease_transitions.unwrap_or(0);
    let new_spec = if holder == config.identity {
        spec(
            &config.identity,
            now,
            transitions,
            current.acquire_time.clone(),
        )
    } else if holder.is_empty() || expired {
        spec(&config.identity, now, transitions + 1, None)
    } else {
        return Ok(false);
    };
    lease.spec = Some(new_spec);
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
