//! Leader election on a `coordination.k8s.io/v1` Lease in the operator's namespace, so only one
//! controller replica acts at a time.
//!
//! The holder renews the Lease every retry period. A candidate takes it over only when it has no
//! holder or its `renewTime + leaseDurationSeconds` has passed. The holder stops acting (publishes
//! `false`) as soon as its renew deadline passes without a successful renew, which is before the
//! lease can expire for anyone else: so there are never two leaders, provided the replicas' clocks
//! differ by less than `lease_duration - renew_deadline` (5 s with the defaults). All writes use
//! optimistic concurrency (resourceVersion), so two candidates can never both win one round.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// Name of the controller's leader Lease.
pub const LEASE_NAME: &str = "etcd-snapshot-controller";
/// How long a Lease stays valid after its last renewal (as client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps acting without a successful renewal (as client-go's default).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two attempts to acquire or renew (as client-go's default).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Name and timing of the Lease. Needs `retry_period < renew_deadline < lease_duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// How long a Lease stays valid after its last renewal (written as whole seconds, rounded up).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            name: LEASE_NAME.into(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

impl LeaseConfig {
    /// Check the timing: without `renew_deadline < lease_duration` two leaders could overlap.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let fail = |why| Err(LeaderError::InvalidConfig(why));
        if self.name.is_empty() {
            return fail("the lease name is empty");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return fail("the retry period must be positive and shorter than the renew deadline");
        }
        if self.renew_deadline >= self.lease_duration {
            return fail("the renew deadline must be shorter than the lease duration");
        }
        Ok(())
    }

    /// The lease duration as written into the Lease: whole seconds, rounded up.
    fn duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Why an attempt on the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease timing or the identity is unusable.
    #[error("invalid leader election settings: {0}")]
    InvalidConfig(&'static str),
    /// RBAC refused the request.
    #[error(
        "cannot {verb} Lease {lease}: forbidden ({}); grant get, create and update on \
         leases.coordination.k8s.io in that namespace",
        api_message(source)
    )]
    Forbidden {
        /// The refused verb.
        verb: &'static str,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    /// Any other failure of the API request.
    #[error("cannot {verb} Lease {lease}: {}", api_message(source))]
    Api {
        /// The failed verb.
        verb: &'static str,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
}

impl LeaderError {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            LeaderError::InvalidConfig(_) => "InvalidLeaseConfig",
            LeaderError::Forbidden { .. } => "LeaseForbidden",
            LeaderError::Timeout(_) => "LeaseTimeout",
            LeaderError::Api { .. } => "LeaseApi",
        }
    }
}

/// Outcome of one round on the Lease.
enum Round {
    /// This replica holds the Lease (acquired or renewed).
    Leading,
    /// Someone else holds it (`None`: lost a write race to an unknown winner).
    Following(Option<String>),
}

/// Runs leader election for one identity (e.g. the pod name). Cheap to clone: spawn
/// `elector.clone().run(tx)` and keep `elector` to call [`LeaderElector::release`] on shutdown.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    leases: Api<Lease>,
    namespace: String,
    identity: String,
    config: LeaseConfig,
    /// Latched by `release`: no further rounds.
    stop: watch::Sender<bool>,
    /// Held for each round, so `release` can wait until no round is in flight.
    round: tokio::sync::Mutex<()>,
    /// The running `run`'s leadership channel, so `release` can publish `false` itself.
    state: Mutex<Option<watch::Sender<bool>>>,
}

/// Unregisters `run`'s channel when `run` ends or is aborted, publishing `false` last.
struct Registered<'a>(&'a Inner);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.0.slot().take() {
            tx.send_replace(false);
        }
    }
}

impl Inner {
    fn slot(&self) -> MutexGuard<'_, Option<watch::Sender<bool>>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, leading: bool) {
        if let Some(tx) = self.slot().as_ref() {
            tx.send_replace(leading);
        }
    }

    /// Replace the Lease; `lease` carries the resourceVersion read, so a concurrent writer makes
    /// this a 409: `Ok(false)`, someone else won.
    async fn replace(&self, lease: &Lease) -> Result<bool, LeaderError> {
        let params = PostParams::default();
        match self.leases.replace(&self.config.name, &params, lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.api_error("update", e)),
        }
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.config.name)
    }

    fn api_error(&self, verb: &'static str, source: kube::Error) -> LeaderError {
        let lease = self.lease_ref();
        match &source {
            kube::Error::Api(s) if s.code == 403 => LeaderError::Forbidden {
                verb,
                lease,
                source,
            },
            _ => LeaderError::Api {
                verb,
                lease,
                source,
            },
        }
    }
}

/// The API server's own message for API errors (kube's Display adds a debug dump).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether a Lease held by someone else may be taken over at `now`.
fn expired(spec: &LeaseSpec, now: Timestamp, default_seconds: i32) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = spec.lease_duration_seconds.unwrap_or(default_seconds);
    renewed
        .0
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .is_ok_and(|until| until <= now)
}

impl LeaderElector {
    /// An elector for the Lease `config.name` in `namespace`, competing as `identity`.
    pub fn new(client: Client, namespace: &str, identity: &str, config: LeaseConfig) -> Self {
        LeaderElector {
            inner: Arc::new(Inner {
                leases: Api::namespaced(client, namespace),
                namespace: namespace.into(),
                identity: identity.into(),
                config,
                stop: watch::Sender::new(false),
                round: tokio::sync::Mutex::new(()),
                state: Mutex::new(None),
            }),
        }
    }

    /// The identity this elector competes as.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// Acquire or renew the Lease until [`LeaderElector::release`] is called, publishing on
    /// `state` whether this replica leads. `false` is published at once when the Lease is lost
    /// or when the renew deadline passes without a successful renewal; also when this future is
    /// dropped. Errors are logged and retried every retry period.
    pub async fn run(self, state: watch::Sender<bool>) {
        let inner = &*self.inner;
        let span =
            tracing::info_span!("leader", lease = %inner.lease_ref(), identity = %inner.identity);
        async {
            state.send_replace(false);
            *inner.slot() = Some(state);
            let _registered = Registered(inner);
            let retry = inner.config.retry_period;
            let mut stop = inner.stop.subscribe();
            let mut leading_until = None;
            let mut failing = false;
            loop {
                let round = inner.round.lock().await;
                if *stop.borrow() {
                    return;
                }
                self.settle(&mut leading_until, &mut failing).await;
                drop(round);
                let pause = leading_until.map_or(retry, |until: Instant| {
                    retry.min(until.saturating_duration_since(Instant::now()))
                });
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopped| *stopped) => {}
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// One round of `run`, bounded so that leadership ends by the renew deadline.
    async fn settle(&self, leading_until: &mut Option<Instant>, failing: &mut bool) {
        let inner = &*self.inner;
        let deadline = inner.config.renew_deadline;
        let started = Instant::now();
        let budget =
            leading_until.map_or(deadline, |until| until.saturating_duration_since(started));
        let outcome = tokio::time::timeout(budget, self.round())
            .await
            .unwrap_or(Err(LeaderError::Timeout(budget)));
        match outcome {
            Ok(Round::Leading) => {
                *failing = false;
                let until = started + deadline;
                if Instant::now() < until && leading_until.replace(until).is_none() {
                    tracing::info!("became leader");
                    inner.publish(true);
                }
            }
            Ok(Round::Following(holder)) => {
                *failing = false;
                if leading_until.take().is_some() {
                    let holder = holder.as_deref().unwrap_or("unknown");
                    tracing::warn!(holder, "stopped leading: the lease was taken over");
                    inner.publish(false);
                }
            }
            Err(error) if !std::mem::replace(failing, true) => {
                tracing::warn!(%error, reason = error.reason(), "lease round failed; retrying");
            }
            Err(_) => {}
        }
        if leading_until.is_some_and(|until| Instant::now() >= until) {
            *leading_until = None;
            tracing::warn!("stopped leading: renew deadline passed without a renewal");
            inner.publish(false);
        }
    }

    /// One round: acquire the Lease if it is free or expired, renew it if held. Returns whether
    /// this identity now holds it. [`LeaderElector::run`] calls this every retry period.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        Ok(matches!(self.round().await?, Round::Leading))
    }

    async fn round(&self) -> Result<Round, LeaderError> {
        let inner = &*self.inner;
        let cfg = &inner.config;
        cfg.validate()?;
        if inner.identity.is_empty() {
            return Err(LeaderError::InvalidConfig("the identity is empty"));
        }
        let now = MicroTime(Timestamp::now());
        let lease = inner.leases.get_opt(&cfg.name).await;
        let Some(mut lease) = lease.map_err(|e| inner.api_error("get", e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(inner.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(inner.identity.clone()),
                    lease_duration_seconds: Some(cfg.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match inner.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round::Leading),
                Err(e) if is_conflict(&e) => Ok(Round::Following(None)),
                Err(e) => Err(inner.api_error("create", e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(inner.identity.as_str()) {
            if holder.is_some() && !expired(spec, now.0, cfg.duration_seconds()) {
                return Ok(Round::Following(holder));
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(inner.identity.clone());
        spec.lease_duration_seconds = Some(cfg.duration_seconds());
        spec.renew_time = Some(now);
        Ok(match inner.replace(&lease).await? {
            true => Round::Leading,
            false => Round::Following(holder),
        })
    }

    /// Graceful shutdown: stop [`LeaderElector::run`] (publishing `false` first) and clear the
    /// Lease's holder if it is this identity, so a standby takes over on its next round instead
    /// of waiting for the Lease to expire. This elector never leads again afterwards.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let inner = &*self.inner;
        inner.stop.send_replace(true);
        // After this no round is in flight and `run` starts no other one.
        let _round = inner.round.lock().await;
        inner.publish(false);
        // A conflict means someone wrote meanwhile: read again and retry.
        loop {
            let lease = inner.leases.get_opt(&inner.config.name).await;
            let Some(mut lease) = lease.map_err(|e| inner.api_error("get", e))? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(inner.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            if inner.replace(&lease).await? {
                let (lease, identity) = (inner.lease_ref(), &inner.identity);
                tracing::info!(%lease, %identity, "released the lease");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed: Option<i64>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_renew_time_plus_duration() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(!expired(&spec(Some(100), Some(15)), at(114), 15));
        assert!(expired(&spec(Some(100), Some(15)), at(115), 15));
        assert!(expired(&spec(Some(100), None), at(120), 20));
        assert!(expired(&spec(None, Some(15)), at(0), 15));
    }

    #[test]
    fn timing_must_leave_a_gap_between_renew_deadline_and_expiry() {
        assert!(LeaseConfig::default().validate().is_ok());
        let overlap = LeaseConfig {
            renew_deadline: LEASE_DURATION,
            ..LeaseConfig::default()
        };
        assert!(overlap.validate().is_err());
        let sub_second = LeaseConfig {
            lease_duration: Duration::from_millis(2500),
            ..LeaseConfig::default()
        };
        assert_eq!(sub_second.duration_seconds(), 3);
    }
}
