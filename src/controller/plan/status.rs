//! The status a schedule's reconcile writes (valid, invalid or retrying) and when it looks again.

use super::run_time;
use crate::api::conditions::set_condition_status;
use crate::api::time::{from_time, to_time};
use crate::api::{
    ETCDSnapshotFile, ETCDSnapshotSchedule, ETCDSnapshotScheduleStatus, Members, Phase,
};
use crate::consts::conditions;
use crate::controller::backups;
use crate::controller::health::{
    RunCopy, Verdict, apply_last_run, apply_verdict, failure_message, last_finished_run,
};
use crate::controller::preflight;
use crate::controller::validate::ValidSchedule;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// The status to write and what to announce once it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPlan {
    /// The new status.
    pub status: ETCDSnapshotScheduleStatus,
    /// The note of the `RunFailed` event: a failed run the status did not show yet.
    pub run_failed: Option<String>,
    /// The note of the `StorageCheckFailed` event: a storage check that newly failed.
    pub storage_failed: Option<String>,
    /// `BackupsHealthy` as a metric (`None`: unknown).
    pub healthy: Option<bool>,
    /// The estimated period between ticks (the health metric's expected interval).
    pub period: chrono::Duration,
}

/// The status of a valid schedule from its records: Ready/Failed counts, `lastSuccessfulTime`
/// (only from a run whose copies are all Ready, and never going back), `nextScheduleTime`,
/// the `Ready`, `LastRunSucceeded`, `BackupsHealthy` and storage-check conditions, and the
/// per-storage backup times. `status` is the one [`runs`](super::runs()) and
/// [`verification`](super::verification) advanced; `live` the live agents' nodes, sorted;
/// `storage_check` the S3 preflight outcome, if S3 is used.
#[allow(clippy::too_many_arguments)]
pub fn status(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    mut status: ETCDSnapshotScheduleStatus,
    files: &[ETCDSnapshotFile],
    live: &[String],
    storage_check: Option<&preflight::Outcome>,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StatusPlan {
    let not_deleted: Vec<&ETCDSnapshotFile> = files
        .iter()
        .filter(|f| f.meta().deletion_timestamp.is_none())
        .collect();
    status.ready_snapshots = count(&not_deleted, Phase::Ready);
    status.failed_snapshots = count(&not_deleted, Phase::Failed);
    // The newest run whose copies all finished decides lastSuccessfulTime.
    let mut runs: BTreeMap<i64, Vec<Phase>> = BTreeMap::new();
    for f in &not_deleted {
        if let Some(t) = run_time(f) {
            runs.entry(t).or_default().push(f.phase());
        }
    }
    if let Some((t, _)) = runs
        .iter()
        .rev()
        .find(|(_, phases)| phases.iter().all(|p| *p == Phase::Ready))
    {
        let t = DateTime::from_timestamp(*t, 0).unwrap_or_default();
        let newer = status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| from_time(old) < t);
        if newer {
            status.last_successful_time = Some(to_time(t));
        }
    }
    status.next_schedule_time = next.map(to_time);
    let generation = s.meta().generation;
    status.observed_generation = generation;
    apply_verdict(
        &mut status.conditions,
        Verdict::Valid {
            suspended: s.spec.suspend,
        },
        generation,
        now,
    );
    let copies: Vec<RunCopy> = not_deleted.iter().filter_map(|f| run_copy(f)).collect();
    let outcome = last_finished_run(&copies);
    let failure = outcome.as_ref().and_then(failure_message);
    let reported = |list: &[Condition]| {
        list.iter()
            .find(|c| c.type_ == conditions::LAST_RUN_SUCCEEDED && c.status == "False")
            .map(|c| c.message.clone())
    };
    let already = s.status.as_ref().and_then(|st| reported(&st.conditions));
    apply_last_run(&mut status.conditions, outcome.as_ref(), generation, now);

    // Backup health, from every record (a failed deletion counts too).
    let facts: Vec<backups::CopyFact> = files.iter().filter_map(copy_fact).collect();
    let (local, s3) = (valid.local.is_some(), valid.s3.is_some());
    status.storages = backups::merge_storages(&status.storages, &facts, local, s3, live);
    status.newest_backup_time = backups::newest_backup(&status.storages).map(to_time);
    let created = super::created_at(s, now);
    let period = valid.schedule.period_estimate(now);
    let health = backups::decide(&backups::HealthInput {
        copies: &facts,
        storages: &status.storages,
        period,
        created,
        now,
        suspended: s.spec.suspend,
        local,
        s3,
        per_node: valid.members == Members::All,
        nodes: live,
        last_run_failure: failure.as_deref(),
    });
    set_condition_status(
        &mut status.conditions,
        conditions::BACKUPS_HEALTHY,
        health.status,
        health.reason,
        &health.message,
        generation,
        now,
    );
    let healthy = match health.status {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    };
    let storage_failed = preflight::apply(&mut status.conditions, storage_check, generation, now);
    StatusPlan {
        status,
        run_failed: failure.filter(|m| already.as_ref() != Some(m)),
        storage_failed,
        healthy,
        period,
    }
}

/// The status of a schedule that is invalid (its spec, or the Secret it names): `Stalled` with
/// `reason` and `message`, and no next tick. The second value says whether the Warning event is
/// due: only when the message changed, so resyncs do not spam.
pub fn invalid_status(
    s: &ETCDSnapshotSchedule,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> (ETCDSnapshotScheduleStatus, bool) {
    let mut status = s.status.clone().unwrap_or_default();
    let before = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::STALLED && c.status == "True")
        .map(|c| c.message.clone());
    let generation = s.meta().generation;
    apply_verdict(
        &mut status.conditions,
        Verdict::Stalled { reason, message },
        generation,
        now,
    );
    status.observed_generation = generation;
    status.next_schedule_time = None;
    (status, before.as_deref() != Some(message))
}

/// The status of a schedule whose new generation failed to reconcile on `error` and is retried
/// (`Reconciling=True`: kstatus InProgress, not Failed).
pub fn retrying_status(
    s: &ETCDSnapshotSchedule,
    error: &str,
    now: DateTime<Utc>,
) -> ETCDSnapshotScheduleStatus {
    let mut status = s.status.clone().unwrap_or_default();
    let generation = s.meta().generation;
    let message = format!(
        "generation {} is not reconciled yet ({error}); retrying",
        generation.unwrap_or_default()
    );
    apply_verdict(
        &mut status.conditions,
        Verdict::Retrying { message: &message },
        generation,
        now,
    );
    status.observed_generation = generation;
    status
}

/// When to reconcile again: a second after the next tick (an hour without one), at most after
/// `resync`, and with S3 storage (`preflight_every` set) at most a second after the next storage
/// check is due.
pub fn requeue_after(
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    resync: Duration,
    preflight_every: Option<Duration>,
) -> Duration {
    let wait = next
        .map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_secs(1))
        .unwrap_or(Duration::from_secs(3600))
        .min(resync);
    match preflight_every {
        Some(every) => wait.min(every + Duration::from_secs(1)),
        None => wait,
    }
}

/// A record as health sees it. A record being deleted whose `status.error` is newer than its
/// deletion is a copy whose deletion failed (the controller or agent wrote why).
fn copy_fact(f: &ETCDSnapshotFile) -> Option<backups::CopyFact> {
    let error = f.status.as_ref().and_then(|st| st.error.as_ref());
    let delete_failed = match (&f.meta().deletion_timestamp, error) {
        (Some(deleting), Some(e)) if e.time.as_ref().is_some_and(|t| t.0 >= deleting.0) => {
            Some(e.message.clone().unwrap_or_default())
        }
        _ => None,
    };
    Some(backups::CopyFact {
        storage: f.storage(),
        node: f.spec.node_name.clone(),
        at: DateTime::from_timestamp(run_time(f)?, 0)?,
        phase: f.phase(),
        delete_failed,
    })
}

/// A record as a copy of its run (records whose name carries no run time are not run copies).
fn run_copy(f: &ETCDSnapshotFile) -> Option<RunCopy> {
    Some(RunCopy {
        run: run_time(f)?,
        name: f.name_any(),
        phase: f.phase(),
        error: f
            .status
            .as_ref()
            .and_then(|st| st.error.as_ref())
            .and_then(|e| e.message.clone()),
    })
}

fn count(files: &[&ETCDSnapshotFile], p: Phase) -> u32 {
    u32::try_from(files.iter().filter(|f| f.phase() == p).count()).unwrap_or(u32::MAX)
}
