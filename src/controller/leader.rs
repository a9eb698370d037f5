//! Leader election on a `coordination.k8s.io` Lease, as client-go does it: the holder renews the
//! Lease every [`RETRY`]; another replica takes it over once it has seen no renewal for
//! [`LEASE_DURATION`] by its own clock (so clock skew between nodes does not matter), within
//! `LEASE_DURATION + RETRY` = 12 s of the holder dying. Writes use the object's
//! resourceVersion, so of two replicas racing for an expired Lease exactly one wins. Only the
//! status writer cares: every replica serves traffic from its own table.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::shutdown::until_stopped;

pub const LEASE_DURATION: Duration = Duration::from_secs(10);
pub const RETRY: Duration = Duration::from_secs(2);

/// Who holds the Lease and when they last renewed it.
type LeaseRecord = (Option<String>, Option<MicroTime>);

pub struct LeaderElection {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    /// The holder and renew time last seen, and when (local clock) they last changed.
    observed: Option<(LeaseRecord, Instant)>,
    /// When this replica last renewed successfully.
    renewed_at: Option<Instant>,
}

impl LeaderElection {
    pub fn new(client: kube::Client, namespace: &str, lease_name: &str, identity: &str) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            observed: None,
            renewed_at: None,
        }
    }

    /// Takes part in the election until `stop`, publishing whether this replica leads. On a
    /// clean stop the Lease is released so the next leader need not wait for it to expire.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = until_stopped(&mut stop) => break,
            }
            let leads = match self.try_acquire_or_renew().await {
                Ok(leads) => leads,
                Err(error) => {
                    // Keep leading only while the Lease we last renewed cannot have expired
                    // for the others.
                    let still_valid = self
                        .renewed_at
                        .is_some_and(|at| at.elapsed() < LEASE_DURATION - RETRY);
                    tracing::warn!(%error, still_valid, "cannot renew or acquire the leader Lease");
                    still_valid
                }
            };
            if *leading.borrow() != leads {
                tracing::info!(identity = %self.identity, leads, "leadership changed");
            }
            leading.send_replace(leads);
        }
        if *leading.borrow() {
            leading.send_replace(false);
            self.release().await;
        }
    }

    fn now() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::now())
    }

    /// One round: create the Lease, renew ours, or take over an expired one.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let ours = spec.holder_identity.as_deref() == Some(&self.identity);
        let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(1) as u64));
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= duration);
        if !(ours || vacant || expired) {
            self.renewed_at = None;
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(Self::now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        }
        spec.renew_time = Some(Self::now());
        let replaced = self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await;
        self.write(replaced)
    }

    /// The outcome of a create or replace: a conflict means another replica won.
    fn write(&mut self, result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match result {
            Ok(_) => {
                self.renewed_at = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.renewed_at = None;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.lease_name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(Self::now());
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("leader Lease released"),
            Err(error) => {
                tracing::warn!(%error, "cannot release the leader Lease; it expires by itself")
            }
        }
    }
}
