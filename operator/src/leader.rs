//! Lease-based leader election (coordination.k8s.io/v1), so that two replicas never both write.
//!
//! The leader renews its Lease every `renew_every`; a standby takes over when the Lease's
//! renewTime is older than its duration. Leadership lost means the process exits, as
//! controller-runtime does: a replica that might be stale must not keep writing.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{Error, Result};

/// What a replica should do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder let it expire): take it over.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease: wait.
    Wait,
}

/// Decides from the Lease's spec alone (pure, tested without a cluster).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            match &spec.renew_time {
                Some(renewed)
                    if renewed
                        .0
                        .saturating_add(duration)
                        .is_ok_and(|expiry| expiry > now) =>
                {
                    Decision::Wait
                }
                _ => Decision::Acquire,
            }
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&self) -> Result<()> {
        let mut announced = false;
        loop {
            if self.try_acquire_or_renew().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                return Ok(());
            }
            if !announced {
                tracing::info!(lease = %self.name, "another replica leads; standing by");
                announced = true;
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the Lease until it cannot be renewed within its duration; then returns the error.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::LeadershipLost(format!("lease {} taken by another replica", self.name));
                }
                Err(error) if last_renewal.elapsed() < self.lease_duration => {
                    tracing::warn!(%error, "lease renewal failed; retrying while the lease is still ours");
                }
                Err(error) => return error,
            }
        }
    }

    /// Gives the Lease up on clean shutdown, so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
        {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(%error, "could not release the leader lease; a standby takes over when it expires");
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("reading the leader lease"))?;
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        if decision == Decision::Wait {
            return Ok(false);
        }
        let duration_secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion we read makes this replace fail if another replica won.
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::Acquire {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration_secs);
                spec.renew_time = Some(MicroTime(now));
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(Error::kube("writing the leader lease")(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed_at: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
            ..Default::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_missing_or_released_lease_is_acquired() {
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("x", 100)
        };
        assert_eq!(decide(Some(&released), "a", at(100)), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(decide(Some(&held_by("a", 100)), "a", at(200)), Decision::Renew);
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected_until_it_expires() {
        assert_eq!(decide(Some(&held_by("b", 100)), "a", at(110)), Decision::Wait);
        assert_eq!(decide(Some(&held_by("b", 100)), "a", at(116)), Decision::Acquire);
    }
}
