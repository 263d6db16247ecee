//! Once nothing of a schedule is in flight: which copies to verify and by whom, and what
//! retention deletes.

use super::run_time;
use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase, RetentionScope, Storage};
use crate::controller::validate::ValidSchedule;
use crate::operator::AgentInfo;
use crate::prune::Scope;
use crate::storage::catalog::StoredCopy;
use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

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
