//! The schedule reconcile's decisions, as pure functions of what it read (the schedule, its
//! [`ValidSchedule`], the cached records, the live agents, the S3 settings, the time): which runs
//! are due, the records of a run, which copies to verify and by whom, what to prune and why, and
//! the status to write. `schedule.rs` reads the cluster, calls these, and applies what they
//! return; nothing here does I/O.

use super::backups;
use super::health::{
    RunCopy, Verdict, apply_last_run, apply_verdict, failure_message, last_finished_run,
};
use super::preflight;
use super::validate::ValidSchedule;
use crate::api::conditions::set_condition_status;
use crate::api::time::{from_time, to_time};
use crate::api::{
    Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotSchedule,
    ETCDSnapshotScheduleStatus, Members, Phase, RetentionScope, Storage,
};
use crate::consts::{self, conditions};
use crate::naming::{esf_name, label_value, request_label, snapshot_name, with_encryption_suffix};
use crate::operator::AgentInfo;
use crate::prune::Scope;
use crate::schedule::Due;
use crate::storage::catalog::StoredCopy;
use crate::storage::config::S3Config;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a schedule's S3 copies go: the resolved settings, and the name of the config Secret they
/// came from (`None` for inline settings).
pub type S3Target = (S3Config, Option<String>);

/// Node labels by node name (nodes that do not exist are absent).
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

/// One run of a schedule (a tick or an on-demand request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The run's time: the second its snapshot names carry.
    pub unix: i64,
    /// The label that marks the run's records: the tick label with the tick's unix seconds, or
    /// the request label with a hash of the `requested-at` value.
    pub label: (&'static str, String),
}

/// What is due now.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The runs to create, in order (an on-demand request first, then a tick).
    pub runs: Vec<Run>,
    /// The note of the `MissedSchedule` Warning event, when a tick was missed (more than the
    /// starting deadline late) and the schedule is not suspended.
    pub missed: Option<String>,
    /// The next tick.
    pub next: Option<DateTime<Utc>>,
    /// The status with the handled request, the last tick and the run count advanced.
    pub status: ETCDSnapshotScheduleStatus,
}

/// The runs that are due at `now`. `fresh_runs_since_verify` is the verification counter as the
/// API server has it (used with `spec.verify`); `last_run` is the newest run second this process
/// created for the schedule (the cache may not show its records yet).
///
/// An on-demand request (a new `requested-at` value) runs once: not when `files` already hold
/// records of it, and never in a second another run of the schedule has (snapshot names carry
/// whole seconds). A tick runs unless the schedule is suspended; a tick missed by more than the
/// starting deadline is skipped with an event.
pub fn runs(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    files: &[ETCDSnapshotFile],
    fresh_runs_since_verify: Option<u32>,
    last_run: Option<i64>,
    now: DateTime<Utc>,
) -> RunPlan {
    let mut status = s.status.clone().unwrap_or_default();
    if s.spec.verify.is_some() {
        status.runs_since_verify = fresh_runs_since_verify;
    }
    let mut runs = Vec::new();
    if let Some(requested) = s.annotations().get(consts::ANNOTATION_REQUESTED_AT)
        && status.last_requested_at.as_deref() != Some(requested.as_str())
    {
        let taken = files
            .iter()
            .filter_map(run_time)
            .chain(last_run)
            .max()
            .unwrap_or(i64::MIN);
        let run = Run {
            unix: now.timestamp().max(taken.saturating_add(1)),
            label: (consts::LABEL_REQUEST, request_label(requested)),
        };
        let already = files
            .iter()
            .any(|f| f.labels().get(run.label.0) == Some(&run.label.1));
        if !already {
            runs.push(run);
            count_run(s, &mut status);
        }
        status.last_requested_at = Some(requested.clone());
    }

    let created = s
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    let last = status.last_schedule_time.as_ref().map(from_time);
    let mut missed = None;
    let next = match valid
        .schedule
        .due(last, created, now, valid.starting_deadline)
    {
        Due::Run { tick } => {
            if !s.spec.suspend {
                runs.push(Run {
                    unix: tick.timestamp(),
                    label: (consts::LABEL_TICK, tick.timestamp().to_string()),
                });
                count_run(s, &mut status);
            }
            status.last_schedule_time = Some(to_time(tick));
            valid.schedule.next_after(now)
        }
        Due::Missed { latest, next } => {
            if !s.spec.suspend {
                missed = Some(format!(
                    "missed the tick of {} (more than the starting deadline late); waiting for the next",
                    latest.to_rfc3339()
                ));
            }
            status.last_schedule_time = Some(to_time(latest));
            next
        }
        Due::Wait { next } => next,
    };
    RunPlan {
        runs,
        missed,
        next,
        status,
    }
}

/// Count a created run towards the next scheduled verification.
fn count_run(s: &ETCDSnapshotSchedule, status: &mut ETCDSnapshotScheduleStatus) {
    if s.spec.verify.is_some() {
        status.runs_since_verify = Some(status.runs_since_verify.unwrap_or(0).saturating_add(1));
    }
}

/// Where the schedule's S3 copies go: the settings read from its config Secret, else its inline
/// settings when S3 is enabled. `None` without S3 copies.
pub fn s3_target(s: &ETCDSnapshotSchedule, from_secret: Option<&S3Target>) -> Option<S3Target> {
    match from_secret {
        Some(t) => Some(t.clone()),
        None => {
            let inline = s.spec.s3.as_ref().filter(|s3| s3.enabled)?;
            S3Config::from_schedule_inline(inline)
                .ok()
                .map(|cfg| (cfg, None))
        }
    }
}

/// Whether a node with `labels` (`None`: the node does not exist) matches `selector`: every
/// selector label is on the node. An empty selector matches every node, even a missing one.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if selector.is_empty() {
        return true;
    }
    labels.is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The live agents that may take part in a run of the schedule (their node matches the node
/// selector; `nodes` holds the labels of the nodes that exist), sorted by node name.
pub fn candidates(
    valid: &ValidSchedule,
    agents: Vec<AgentInfo>,
    nodes: &NodeLabels,
) -> Vec<AgentInfo> {
    let mut keep: Vec<AgentInfo> = agents
        .into_iter()
        .filter(|a| selects(&valid.node_selector, nodes.get(&a.node)))
        .collect();
    keep.sort_by(|a, b| a.node.cmp(&b.node));
    keep
}

/// The records of one run.
#[derive(Debug, Clone)]
pub enum Records {
    /// Create these Pending records (names derived from the run's time, so creating them twice
    /// finds them there).
    Create(Vec<ETCDSnapshotFile>),
    /// No live agent with a healthy etcd member matches: nothing is snapshotted, and a Warning
    /// event with this note says so.
    NoAgent {
        /// The event note.
        note: String,
    },
}

/// The records of `run`: with `members: All` one per candidate agent (sorted by node) and
/// storage, with `members: One` those of one healthy member, rotating from run to run. Each
/// carries the storage, node, schedule, run and cluster-id labels and the finalizer;
/// `metadata` is the data of the extra-metadata ConfigMap.
pub fn records(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    s3: Option<&S3Target>,
    agents: &[AgentInfo],
    metadata: &BTreeMap<String, String>,
    run: &Run,
) -> Records {
    let chosen: Vec<&AgentInfo> = match valid.members {
        Members::All => agents.iter().collect(),
        Members::One => {
            let healthy: Vec<&AgentInfo> = agents.iter().filter(|a| a.etcd_healthy).collect();
            let n = healthy.len() as i64;
            if n == 0 {
                Vec::new()
            } else {
                // Rotate through the healthy members from tick to tick.
                let i = usize::try_from(run.unix.rem_euclid(n)).unwrap_or(0);
                healthy.get(i).copied().into_iter().collect()
            }
        }
    };
    if chosen.is_empty() {
        return Records::NoAgent {
            note: "no live agent with a healthy etcd member matches this schedule; nothing was snapshotted".into(),
        };
    }
    let compression = if valid.zstd_level.is_some() {
        Compression::Zstd
    } else {
        Compression::None
    };
    let schedule = s.name_any();
    let mut out = Vec::new();
    for agent in chosen {
        let name = with_encryption_suffix(
            snapshot_name(&valid.prefix, &agent.node, run.unix, compression),
            valid.encryption.is_some(),
        );
        let mut copies = Vec::new();
        if valid.local.is_some() {
            let dir = agent.snapshot_dir.trim_end_matches('/');
            copies.push((Storage::Local, format!("file://{dir}/{name}"), None, None));
        }
        if let Some((cfg, secret)) = s3 {
            copies.push((
                Storage::S3,
                cfg.location(&name),
                Some(cfg.to_location()),
                secret.clone(),
            ));
        }
        for (storage, location, s3_location, secret) in copies {
            let mut esf = ETCDSnapshotFile::new(
                &esf_name(storage, &name, &agent.node, &location),
                ETCDSnapshotFileSpec {
                    snapshot_name: name.clone(),
                    node_name: agent.node.clone(),
                    location,
                    s3: s3_location,
                    metadata: (!metadata.is_empty()).then(|| metadata.clone()),
                    compression,
                    compression_level: valid.zstd_level,
                    schedule_name: Some(schedule.clone()),
                    s3_config_secret_name: secret,
                    encryption: s.spec.encryption.clone(),
                },
            );
            let storage_label = match storage {
                Storage::Local => label_value(&agent.node),
                Storage::S3 => consts::STORAGE_S3.to_string(),
            };
            let mut labels = BTreeMap::from([
                (consts::LABEL_STORAGE.to_string(), storage_label),
                (consts::LABEL_NODE.to_string(), label_value(&agent.node)),
                (consts::LABEL_SCHEDULE.to_string(), label_value(&schedule)),
                (run.label.0.to_string(), run.label.1.clone()),
            ]);
            if let Some(id) = &agent.cluster_id {
                labels.insert(consts::LABEL_CLUSTER_ID.to_string(), label_value(id));
            }
            esf.metadata.labels = Some(labels);
            esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
            out.push(esf);
        }
    }
    Records::Create(out)
}

/// Whether a copy of the schedule is still being taken: a run was started by this reconcile
/// (the cache may not show its records yet), or a record not being deleted is Pending or Running.
/// Verification and retention wait until nothing is.
pub fn in_flight(started: bool, files: &[ETCDSnapshotFile]) -> bool {
    started
        || files.iter().any(|f| {
            matches!(f.phase(), Phase::Pending | Phase::Running)
                && f.meta().deletion_timestamp.is_none()
        })
}

/// The verifications to request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The new `verify-requested-at` value.
    pub requested_at: String,
    /// Record name and the node whose agent verifies it (`verify-by`).
    pub requests: Vec<(String, String)>,
}

/// With `spec.verify`, once `everyRuns` runs were counted (`runs_since_verify`): a verification
/// of every Ready copy of the newest run that has one. A local copy is verified by its node's
/// agent (when it is back); an S3 copy by its node's agent, or by the first live agent
/// (`live`, sorted) when its node has none. After the requests the counter starts again at 0.
pub fn verification(
    s: &ETCDSnapshotSchedule,
    runs_since_verify: Option<u32>,
    files: &[ETCDSnapshotFile],
    live: &[String],
    now: DateTime<Utc>,
) -> Option<Verification> {
    let verify = s.spec.verify.as_ref()?;
    if runs_since_verify.unwrap_or(0) < verify.every_runs.max(1) {
        return None;
    }
    let ready: Vec<&ETCDSnapshotFile> = files
        .iter()
        .filter(|f| f.phase() == Phase::Ready && f.meta().deletion_timestamp.is_none())
        .collect();
    let newest = ready.iter().filter_map(|f| run_time(f)).max()?;
    let requests = ready
        .iter()
        .filter(|f| run_time(f) == Some(newest))
        .map(|f| {
            let node = &f.spec.node_name;
            let by = match f.storage() {
                Storage::S3 if !live.contains(node) => live.first().unwrap_or(node),
                _ => node,
            };
            (f.name_any(), by.clone())
        })
        .collect();
    Some(Verification {
        requested_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        requests,
    })
}

/// One record retention deletes.
#[derive(Debug, Clone)]
pub struct Pruning<'a> {
    /// The record (deleting it lets its finalizer delete the file or object).
    pub esf: &'a ETCDSnapshotFile,
    /// Its storage (metric label).
    pub storage: Storage,
    /// The `Pruned` event's note: the snapshot, the storage, and the rule that dropped it.
    pub note: String,
}

/// Retention over the schedule's Ready copies of cluster `cluster_id`: the records to delete, in
/// the order retention lists them. Copies of a storage the schedule has turned off are left to
/// the user.
pub fn prune<'a>(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    files: &'a [ETCDSnapshotFile],
    cluster_id: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<Pruning<'a>> {
    let live: Vec<&ETCDSnapshotFile> = files
        .iter()
        .filter(|f| f.meta().deletion_timestamp.is_none())
        .collect();
    let copies: Vec<_> = live
        .iter()
        .filter_map(|f| StoredCopy::from_record(f))
        .collect();
    let local = valid.local.clone().unwrap_or_default();
    let (s3_policy, scope) = match &valid.s3 {
        Some((_, p, scope)) => (
            p.clone(),
            match scope {
                RetentionScope::Node => Scope::Node,
                RetentionScope::Cluster => Scope::Cluster,
            },
        ),
        None => (Default::default(), Scope::Node),
    };
    let mut plan = crate::prune::plan(
        &copies,
        &valid.prefix,
        &local,
        &s3_policy,
        scope,
        cluster_id,
        now,
    );
    plan.decisions.retain(|(c, _)| match c.storage {
        Storage::Local => valid.local.is_some(),
        Storage::S3 => valid.s3.is_some(),
    });
    let schedule = s.name_any();
    plan.deletions()
        .filter_map(|(copy, decision)| {
            let esf = live
                .iter()
                .find(|f| f.spec.location == copy.location && f.storage() == copy.storage)?;
            Some(Pruning {
                esf,
                storage: copy.storage,
                note: format!(
                    "Snapshot {} pruned from {} by schedule {schedule}: {}",
                    copy.name,
                    copy.storage.as_str(),
                    decision.reason
                ),
            })
        })
        .collect()
}

/// The etcd cluster ID the live agents report (the most common one).
pub fn cluster_id(agents: &[AgentInfo]) -> Option<String> {
    let mut counts = BTreeMap::<&str, usize>::new();
    for id in agents.iter().filter_map(|a| a.cluster_id.as_deref()) {
        *counts.entry(id).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(id, _)| id.to_string())
}

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
/// per-storage backup times. `status` is the one [`runs`] and [`verification`] advanced; `live`
/// the live agents' nodes, sorted; `storage_check` the S3 preflight outcome, if S3 is used.
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
    let created = s
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
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

/// The unix time of the run an ESF belongs to (from its snapshot name).
pub fn run_time(f: &ETCDSnapshotFile) -> Option<i64> {
    crate::naming::parse_snapshot_name(&f.spec.snapshot_name).map(|p| p.unix_seconds)
}

#[cfg(test)]
mod tests;
