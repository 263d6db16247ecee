//! Prometheus metrics of the controller and the agents, in the OpenMetrics text format.
//!
//! Every label value is bounded: storage kinds are an enum, reasons and controller names are
//! `&'static str` (taken from the `reason()` functions, never free text), and node and schedule
//! names come from cluster objects. Snapshot names (one per snapshot) and anything from a Secret
//! never become labels.

use crate::api::Storage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buckets of the snapshot duration histogram, in seconds: from 1 s to 1 h.
const SNAPSHOT_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets of the reconcile duration histogram, in seconds: from 10 ms to 60 s.
const RECONCILE_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// Labels {storage, node}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageNode {
    storage: &'static str,
    node: String,
}

/// Labels {schedule, node, storage}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleNodeStorage {
    schedule: String,
    node: String,
    storage: &'static str,
}

/// Labels {storage, reason}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageReason {
    storage: &'static str,
    reason: &'static str,
}

/// Labels {storage, schedule}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageSchedule {
    storage: &'static str,
    schedule: String,
}

/// Labels {schedule}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

/// Labels {controller}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

/// Labels {controller, reason}.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerReason {
    controller: &'static str,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn snapshot_histogram() -> Histogram {
    Histogram::new(SNAPSHOT_BUCKETS)
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

struct Inner {
    registry: Registry,
    snapshot_duration: HistogramFamily<StorageNode>,
    last_size: Family<StorageNode, Gauge>,
    bytes: Family<StorageNode, Counter>,
    last_success: Family<ScheduleNodeStorage, Gauge>,
    failures: Family<StorageReason, Counter>,
    pruned: Family<StorageSchedule, Counter>,
    prune_failures: Family<StorageSchedule, Counter>,
    backups_healthy: Family<ScheduleLabel, Gauge>,
    schedule_period: Family<ScheduleLabel, Gauge>,
    /// Schedules with series in the two families above (to drop those of deleted schedules).
    schedules: std::sync::Mutex<std::collections::BTreeSet<String>>,
    verify_failures: Counter,
    verified: Counter,
    last_verified: Gauge,
    reconciles: Family<ControllerLabel, Counter>,
    reconcile_errors: Family<ControllerReason, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabel>,
    leader: Gauge,
}

/// The operator's metrics and their registry. Cheap to clone: clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every metric of the operator, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let snapshot_duration =
            HistogramFamily::new_with_constructor(snapshot_histogram as fn() -> _);
        registry.register_with_unit(
            "etcd_snapshot_duration",
            "Time taken to save one snapshot copy (etcd stream, checks, compression, store)",
            Unit::Seconds,
            snapshot_duration.clone(),
        );
        let last_size = Family::default();
        registry.register_with_unit(
            "etcd_snapshot_last_size",
            "Stored size of the last successful snapshot copy",
            Unit::Bytes,
            last_size.clone(),
        );
        let bytes = Family::default();
        registry.register_with_unit(
            "etcd_snapshot",
            "Bytes of snapshots stored successfully",
            Unit::Bytes,
            bytes.clone(),
        );
        let last_success = Family::default();
        registry.register_with_unit(
            "etcd_snapshot_last_success_timestamp",
            "Unix time of the last successful snapshot copy (alert when it gets old)",
            Unit::Seconds,
            last_success.clone(),
        );
        let failures = Family::default();
        registry.register(
            "etcd_snapshot_failures",
            "Snapshot copies that failed, by storage and reason",
            failures.clone(),
        );
        let pruned = Family::default();
        registry.register(
            "etcd_snapshot_pruned",
            "Snapshot copies deleted by retention",
            pruned.clone(),
        );
        let prune_failures = Family::default();
        registry.register(
            "etcd_snapshot_prune_failures",
            "Attempts to delete a stored copy that retention (or a user) deleted the record of, and that failed",
            prune_failures.clone(),
        );
        let backups_healthy = Family::default();
        registry.register(
            "etcd_snapshot_schedule_backups_healthy",
            "1 while a schedule's BackupsHealthy condition is True, 0 while it is False (no sample while Unknown); controller",
            backups_healthy.clone(),
        );
        let schedule_period = Family::default();
        registry.register_with_unit(
            "etcd_snapshot_schedule_period",
            "Time between two ticks of a schedule (freshness alerts compare against twice this); controller",
            Unit::Seconds,
            schedule_period.clone(),
        );
        let verify_failures = Counter::default();
        registry.register(
            "etcd_snapshot_verify_failures",
            "Snapshots that failed verification (checksum or test restore)",
            verify_failures.clone(),
        );
        let verified = Counter::default();
        registry.register(
            "etcd_snapshot_verified",
            "Snapshots that passed verification (every checksum and a test restore)",
            verified.clone(),
        );
        let last_verified = Gauge::default();
        registry.register_with_unit(
            "etcd_snapshot_last_verified_timestamp",
            "Unix time of the last snapshot that passed verification",
            Unit::Seconds,
            last_verified.clone(),
        );
        let reconciles = Family::default();
        registry.register(
            "etcd_snapshot_reconcile",
            "Reconciles started, by controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "etcd_snapshot_reconcile_errors",
            "Reconciles that failed, by controller and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            HistogramFamily::new_with_constructor(reconcile_histogram as fn() -> _);
        registry.register_with_unit(
            "etcd_snapshot_reconcile_duration",
            "Time taken by one reconcile, by controller",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "etcd_snapshot_leader",
            "1 when this replica holds the leader lease, else 0",
            leader.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                snapshot_duration,
                last_size,
                bytes,
                last_success,
                failures,
                pruned,
                prune_failures,
                backups_healthy,
                schedule_period,
                schedules: Default::default(),
                verify_failures,
                verified,
                last_verified,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                leader,
            }),
        }
    }

    /// Record one successful snapshot copy: its duration, stored size, and now as the last
    /// success of `schedule` (`None` for on-demand snapshots, labelled `schedule=""`).
    pub fn record_snapshot(
        &self,
        storage: Storage,
        node: &str,
        schedule: Option<&str>,
        duration: Duration,
        bytes: u64,
    ) {
        let labels = StorageNode {
            storage: storage.as_str(),
            node: node.to_owned(),
        };
        let i = &self.inner;
        i.snapshot_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        i.last_size
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        i.bytes.get_or_create(&labels).inc_by(bytes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        i.last_success
            .get_or_create(&ScheduleNodeStorage {
                schedule: schedule.unwrap_or_default().to_owned(),
                node: labels.node,
                storage: labels.storage,
            })
            .set(now);
    }

    /// Record one failed snapshot copy; `reason` comes from a `reason()` function
    /// (e.g. [`crate::snapshot::SnapshotError::reason`]).
    pub fn record_failure(&self, storage: Storage, reason: &'static str) {
        self.inner
            .failures
            .get_or_create(&StorageReason {
                storage: storage.as_str(),
                reason,
            })
            .inc();
    }

    /// Record `n` snapshot copies of `schedule` deleted by retention.
    pub fn record_prune(&self, storage: Storage, schedule: &str, n: u64) {
        self.inner
            .pruned
            .get_or_create(&StorageSchedule {
                storage: storage.as_str(),
                schedule: schedule.to_owned(),
            })
            .inc_by(n);
    }

    /// Record one failed attempt to delete a stored copy of `schedule` (`""` for copies of no
    /// schedule) whose record was deleted.
    pub fn record_prune_failure(&self, storage: Storage, schedule: &str) {
        self.inner
            .prune_failures
            .get_or_create(&StorageSchedule {
                storage: storage.as_str(),
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    /// Set a schedule's health (`None`: Unknown, no sample) and period.
    pub fn set_schedule_health(&self, schedule: &str, healthy: Option<bool>, period_seconds: i64) {
        let labels = ScheduleLabel {
            schedule: schedule.to_owned(),
        };
        match healthy {
            Some(h) => {
                self.inner
                    .backups_healthy
                    .get_or_create(&labels)
                    .set(i64::from(h));
            }
            None => {
                self.inner.backups_healthy.remove(&labels);
            }
        }
        self.inner
            .schedule_period
            .get_or_create(&labels)
            .set(period_seconds);
        if let Ok(mut known) = self.inner.schedules.lock() {
            known.insert(labels.schedule);
        }
    }

    /// Drop the schedule series of schedules not in `existing` (deleted ones: a deleted unhealthy
    /// schedule must not keep an alert firing).
    pub fn retain_schedules(&self, existing: &std::collections::BTreeSet<String>) {
        let Ok(mut known) = self.inner.schedules.lock() else {
            return;
        };
        for gone in known.difference(existing).cloned().collect::<Vec<_>>() {
            let labels = ScheduleLabel { schedule: gone };
            self.inner.backups_healthy.remove(&labels);
            self.inner.schedule_period.remove(&labels);
            known.remove(&labels.schedule);
        }
    }

    /// Record one snapshot that passed verification, at `unix` seconds.
    pub fn record_verified(&self, unix: i64) {
        self.inner.verified.inc();
        self.inner.last_verified.set(unix);
    }

    /// Record one snapshot that failed verification.
    pub fn record_verify_failure(&self) {
        self.inner.verify_failures.inc();
    }

    /// Count one reconcile of `controller` and time it: the duration is observed when the
    /// returned guard is dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        let labels = ControllerLabel { controller };
        self.inner.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self.clone(),
            labels,
            start: Instant::now(),
        }
    }

    /// Count one failed reconcile of `controller`; `reason` comes from a `reason()` function.
    pub fn record_reconcile_error(&self, controller: &'static str, reason: &'static str) {
        self.inner
            .reconcile_errors
            .get_or_create(&ControllerReason { controller, reason })
            .inc();
    }

    /// Set whether this replica is the leader.
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// The registry in the OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// Times one reconcile; observes the duration into `etcd_snapshot_reconcile_duration_seconds`
/// when dropped. Made by [`Metrics::reconcile_started`].
#[must_use = "the duration is observed when the timer is dropped"]
#[derive(Debug)]
pub struct ReconcileTimer {
    metrics: Metrics,
    labels: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .inner
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_openmetrics_with_help_and_eof() {
        let m = Metrics::new();
        m.record_snapshot(
            Storage::S3,
            "n1",
            Some("daily"),
            Duration::from_secs(42),
            1000,
        );
        m.record_failure(Storage::Local, "HashMismatch");
        m.record_prune(Storage::Local, "daily", 2);
        m.record_prune_failure(Storage::S3, "daily");
        drop(m.reconcile_started("schedule"));
        m.record_reconcile_error("schedule", "InvalidSchedule");
        m.set_leader(true);
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for family in [
            "etcd_snapshot_duration_seconds",
            "etcd_snapshot_last_size_bytes",
            "etcd_snapshot_bytes",
            "etcd_snapshot_last_success_timestamp_seconds",
            "etcd_snapshot_failures",
            "etcd_snapshot_pruned",
            "etcd_snapshot_prune_failures",
            "etcd_snapshot_verify_failures",
            "etcd_snapshot_reconcile",
            "etcd_snapshot_reconcile_errors",
            "etcd_snapshot_reconcile_duration_seconds",
            "etcd_snapshot_leader",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}: {text}"
            );
        }
        assert!(text.contains(r#"etcd_snapshot_bytes_total{storage="s3",node="n1"} 1000"#));
        assert!(
            text.contains(
                r#"etcd_snapshot_failures_total{storage="local",reason="HashMismatch"} 1"#
            )
        );
        assert!(text.contains(r#"etcd_snapshot_pruned_total{storage="local",schedule="daily"} 2"#));
        assert!(
            text.contains(r#"etcd_snapshot_prune_failures_total{storage="s3",schedule="daily"} 1"#)
        );
        assert!(
            text.contains(
                r#"etcd_snapshot_duration_seconds_bucket{le="60.0",storage="s3",node="n1"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("etcd_snapshot_leader 1"));
        assert!(text.contains(
            r#"etcd_snapshot_reconcile_duration_seconds_count{controller="schedule"} 1"#
        ));
    }

    #[test]
    fn deleted_schedules_lose_their_health_series() {
        let m = Metrics::new();
        m.set_schedule_health("kept", Some(true), 60);
        m.set_schedule_health("gone", Some(false), 60);
        assert!(
            m.encode()
                .contains(r#"etcd_snapshot_schedule_backups_healthy{schedule="gone"} 0"#)
        );
        m.retain_schedules(&["kept".to_string()].into_iter().collect());
        let text = m.encode();
        assert!(!text.contains(r#"schedule="gone""#), "{text}");
        assert!(text.contains(r#"etcd_snapshot_schedule_backups_healthy{schedule="kept"} 1"#));
        assert!(text.contains(r#"etcd_snapshot_schedule_period_seconds{schedule="kept"} 60"#));
        // Unknown health: no sample, the period stays.
        m.set_schedule_health("kept", None, 60);
        let text = m.encode();
        assert!(
            !text.contains("etcd_snapshot_schedule_backups_healthy{"),
            "{text}"
        );
    }

    #[test]
    fn clones_share_values() {
        let m = Metrics::new();
        m.clone().record_verify_failure();
        assert!(m.encode().contains("etcd_snapshot_verify_failures_total 1"));
    }

    #[test]
    fn verification_successes_count_and_stamp_the_time() {
        let m = Metrics::new();
        m.record_verified(1_700_000_000);
        let text = m.encode();
        assert!(text.contains("etcd_snapshot_verified_total 1"), "{text}");
        assert!(
            text.contains("etcd_snapshot_last_verified_timestamp_seconds 1700000000"),
            "{text}"
        );
    }
}
