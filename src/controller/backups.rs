//! `BackupsHealthy`: whether a schedule's backups can be relied on, decided from plain data.
//!
//! False when a storage's newest stored copy (local per node with `members: All`, local on any
//! node with `members: One`, S3) is older than two schedule periods, when the newest finished
//! run failed, or when retention could not delete a copy it pruned. Unknown while no copy was
//! stored yet (and the schedule is younger than two periods). True otherwise.
//!
//! Not a kstatus condition: Helm's `--wait`, Flux and Argo CD read `Ready` (see
//! [`super::health`]), so an unhealthy backup never fails a release; alert on this condition or
//! on the metrics instead.

use crate::api::time::{from_time, to_time};
use crate::api::{Phase, Storage, StorageBackupStatus};
use crate::consts::conditions as c;
use crate::duration::format_human;
use chrono::{DateTime, Duration, Utc};

/// What health needs to know of one record of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFact {
    /// Local or S3.
    pub storage: Storage,
    /// The node that took it.
    pub node: String,
    /// Time of its run.
    pub at: DateTime<Utc>,
    /// Its phase.
    pub phase: Phase,
    /// The record is being deleted and deleting its stored copy failed: the error.
    pub delete_failed: Option<String>,
}

/// Everything the decision reads.
#[derive(Debug, Clone)]
pub struct HealthInput<'a> {
    /// The schedule's records.
    pub copies: &'a [CopyFact],
    /// Per-storage state after [`merge_storages`].
    pub storages: &'a [StorageBackupStatus],
    /// Gap between two ticks.
    pub period: Duration,
    /// When the schedule was created.
    pub created: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
    /// `spec.suspend`: no tick is expected, so no copy can get old.
    pub suspended: bool,
    /// Local copies are part of the policy.
    pub local: bool,
    /// S3 copies are part of the policy.
    pub s3: bool,
    /// `members: All`: every node keeps its own local copies (checked per node).
    pub per_node: bool,
    /// Nodes with a live agent (only those are checked per node: a node that left does not keep
    /// the schedule unhealthy).
    pub nodes: &'a [String],
    /// The failure of the newest finished run, if it failed.
    pub last_run_failure: Option<&'a str>,
}

/// The condition to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// PascalCase reason.
    pub reason: &'static str,
    /// For a person.
    pub message: String,
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// The per-storage state: the previous status, advanced by what the records show (times only
/// move forward: a pruned copy does not erase that it succeeded). Storages the policy no longer
/// uses, and nodes with neither a live agent nor a record, are dropped.
pub fn merge_storages(
    previous: &[StorageBackupStatus],
    copies: &[CopyFact],
    local: bool,
    s3: bool,
    nodes: &[String],
) -> Vec<StorageBackupStatus> {
    let key = |storage: &str, node: Option<&str>| (storage.to_string(), node.map(str::to_string));
    let mut out = std::collections::BTreeMap::new();
    for p in previous {
        out.insert(key(&p.storage, p.node.as_deref()), p.clone());
    }
    for copy in copies {
        let node = (copy.storage == Storage::Local).then_some(copy.node.as_str());
        let entry = out
            .entry(key(copy.storage.as_str(), node))
            .or_insert_with(|| StorageBackupStatus {
                storage: copy.storage.as_str().to_string(),
                node: node.map(str::to_string),
                ..Default::default()
            });
        let at = Some(copy.at);
        match copy.phase {
            Phase::Ready => {
                let t = later(entry.last_success_time.as_ref().map(from_time), at);
                entry.last_success_time = t.map(to_time);
            }
            Phase::Failed => {
                let t = later(entry.last_failure_time.as_ref().map(from_time), at);
                entry.last_failure_time = t.map(to_time);
            }
            Phase::Pending | Phase::Running => {}
        }
    }
    out.into_values()
        .filter(|s| match s.storage.as_str() {
            "s3" => s3,
            _ => {
                local
                    && s.node.as_ref().is_some_and(|n| {
                        nodes.contains(n)
                            || copies
                                .iter()
                                .any(|c| c.storage == Storage::Local && &c.node == n)
                    })
            }
        })
        .collect()
}

/// The newest successful copy in any storage.
pub fn newest_backup(storages: &[StorageBackupStatus]) -> Option<DateTime<Utc>> {
    storages
        .iter()
        .filter_map(|s| s.last_success_time.as_ref().map(from_time))
        .max()
}

/// A time for people (and stable across reconciles).
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Decide `BackupsHealthy`.
pub fn decide(input: &HealthInput<'_>) -> Health {
    let threshold = input.period * 2;
    let mut problems: Vec<(&'static str, String)> = Vec::new();

    let stuck: Vec<&CopyFact> = input
        .copies
        .iter()
        .filter(|c| c.delete_failed.is_some())
        .collect();
    if let Some(first) = stuck.first() {
        problems.push((
            c::REASON_PRUNE_FAILED,
            format!(
                "retention could not delete {} cop{} ({} of {}: {})",
                stuck.len(),
                if stuck.len() == 1 { "y" } else { "ies" },
                first.storage.as_str(),
                first.node,
                first.delete_failed.as_deref().unwrap_or_default()
            ),
        ));
    }
    if let Some(failure) = input.last_run_failure {
        problems.push((c::REASON_LAST_RUN_FAILED, failure.to_string()));
    }

    // Freshness: (what, newest success) per group the policy expects a copy in.
    let mut groups: Vec<(String, Option<DateTime<Utc>>)> = Vec::new();
    if input.s3 {
        let s3 = input
            .storages
            .iter()
            .find(|s| s.storage == Storage::S3.as_str());
        groups.push((
            "S3 copy".to_string(),
            s3.and_then(|s| s.last_success_time.as_ref().map(from_time)),
        ));
    }
    if input.local {
        let local = input
            .storages
            .iter()
            .filter(|s| s.storage == Storage::Local.as_str());
        if input.per_node && !input.nodes.is_empty() {
            for node in input.nodes {
                let newest = local
                    .clone()
                    .filter(|s| s.node.as_ref() == Some(node))
                    .filter_map(|s| s.last_success_time.as_ref().map(from_time))
                    .max();
                groups.push((format!("local copy on {node}"), newest));
            }
        } else {
            let newest = local
                .filter_map(|s| s.last_success_time.as_ref().map(from_time))
                .max();
            groups.push(("local copy".to_string(), newest));
        }
    }
    let any_success = groups.iter().any(|(_, t)| t.is_some());
    if !input.suspended {
        for (what, newest) in &groups {
            // A storage (or node) with no copy at all yet is judged once the whole schedule has
            // had two periods to store one.
            if let Some(t) = newest
                && input.now - *t > threshold
            {
                // No age in the message: it would change at every reconcile (and every status
                // write wakes the schedule again).
                problems.push((
                    c::REASON_STALE,
                    format!(
                        "the newest {what} is from {}, more than two schedule periods ({}) ago",
                        stamp(*t),
                        format_human(threshold)
                    ),
                ));
            }
        }
        if !any_success && !groups.is_empty() && input.now - input.created > threshold {
            problems.push((
                c::REASON_STALE,
                format!(
                    "no copy was stored since the schedule was created at {}, more than two schedule periods ({}) ago",
                    stamp(input.created),
                    format_human(threshold)
                ),
            ));
        }
    }

    if let Some((reason, _)) = problems.first() {
        let message = problems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return Health {
            status: "False",
            reason,
            message,
        };
    }
    match newest_backup(input.storages) {
        None => Health {
            status: "Unknown",
            reason: c::REASON_NO_BACKUP_YET,
            message: "no copy of this schedule was stored yet".to_string(),
        },
        Some(t) => Health {
            status: "True",
            reason: c::REASON_HEALTHY,
            message: if input.suspended {
                format!(
                    "the schedule is suspended; the newest copy is from {} and nothing failed",
                    stamp(t)
                )
            } else {
                format!(
                    "the newest copy is from {}; every storage has a copy newer than two schedule periods ({}) and nothing failed",
                    stamp(t),
                    format_human(threshold)
                )
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn copy(storage: Storage, node: &str, at: i64, phase: Phase) -> CopyFact {
        CopyFact {
            storage,
            node: node.into(),
            at: t(at),
            phase,
            delete_failed: None,
        }
    }

    const HOUR: i64 = 3600;

    fn check(copies: &[CopyFact], now: i64, per_node: bool, failure: Option<&str>) -> Health {
        let nodes = ["n1".to_string(), "n2".to_string()];
        let storages = merge_storages(&[], copies, true, true, &nodes);
        decide(&HealthInput {
            copies,
            storages: &storages,
            period: Duration::hours(1),
            created: t(0),
            now: t(now),
            suspended: false,
            local: true,
            s3: true,
            per_node,
            nodes: &nodes,
            last_run_failure: failure,
        })
    }

    #[test]
    fn a_new_schedule_is_unknown_until_two_periods_pass_without_a_copy() {
        let h = check(&[], 60, false, None);
        assert_eq!((h.status, h.reason), ("Unknown", "NoBackupYet"));
        let h = check(&[], 2 * HOUR + 60, false, None);
        assert_eq!((h.status, h.reason), ("False", "BackupTooOld"));
        assert_eq!(
            h.message,
            "no copy was stored since the schedule was created at 2027-01-15T08:00:00Z, more than two schedule periods (2h) ago"
        );
    }

    #[test]
    fn fresh_copies_in_every_storage_are_healthy() {
        let copies = [
            copy(Storage::Local, "n1", HOUR, Phase::Ready),
            copy(Storage::S3, "n1", HOUR, Phase::Ready),
        ];
        let h = check(&copies, 2 * HOUR, false, None);
        assert_eq!((h.status, h.reason), ("True", "Healthy"), "{}", h.message);
        assert!(
            h.message
                .starts_with("the newest copy is from 2027-01-15T09:00:00Z;"),
            "{}",
            h.message
        );
        // The message does not change as time passes (no status write per reconcile).
        assert_eq!(check(&copies, 2 * HOUR + 60, false, None), h);
    }

    #[test]
    fn a_storage_older_than_two_periods_is_unhealthy_and_named() {
        // Local keeps up, S3 stopped three hours ago.
        let copies = [
            copy(Storage::S3, "n1", HOUR, Phase::Ready),
            copy(Storage::Local, "n1", 4 * HOUR, Phase::Ready),
        ];
        assert_eq!(check(&copies, 3 * HOUR, false, None).status, "True");
        let h = check(&copies, 3 * HOUR + 1, false, None);
        assert_eq!((h.status, h.reason), ("False", "BackupTooOld"));
        assert_eq!(
            h.message,
            "the newest S3 copy is from 2027-01-15T09:00:00Z, more than two schedule periods (2h) ago"
        );
    }

    #[test]
    fn with_members_all_each_live_node_needs_its_own_fresh_copy() {
        let copies = [
            copy(Storage::S3, "n1", 10 * HOUR, Phase::Ready),
            copy(Storage::Local, "n1", 10 * HOUR, Phase::Ready),
            copy(Storage::Local, "n2", HOUR, Phase::Ready),
        ];
        // members: One rotates: any node's copy keeps local fresh.
        assert_eq!(check(&copies, 10 * HOUR, false, None).status, "True");
        let h = check(&copies, 10 * HOUR, true, None);
        assert_eq!(h.status, "False");
        assert!(
            h.message
                .contains("the newest local copy on n2 is from 2027-01-15T09:00:00Z"),
            "{}",
            h.message
        );
        // A node that left (no live agent, no record) is not checked and its entry is dropped.
        let gone = [StorageBackupStatus {
            storage: "local".into(),
            node: Some("n9".into()),
            last_success_time: Some(to_time(t(0))),
            last_failure_time: None,
        }];
        assert!(
            merge_storages(&gone, &copies, true, true, &["n1".into()])
                .iter()
                .all(|s| s.node.as_deref() != Some("n9"))
        );
    }

    #[test]
    fn a_failed_last_run_is_unhealthy_even_with_fresh_copies() {
        let copies = [
            copy(Storage::Local, "n1", HOUR, Phase::Ready),
            copy(Storage::S3, "n1", HOUR, Phase::Failed),
        ];
        let h = check(
            &copies,
            HOUR + 60,
            false,
            Some("the run of X: 1 of 2 copies failed"),
        );
        assert_eq!((h.status, h.reason), ("False", "LastRunFailed"));
        assert_eq!(h.message, "the run of X: 1 of 2 copies failed");
    }

    #[test]
    fn a_copy_retention_could_not_delete_is_unhealthy() {
        let mut stuck = copy(Storage::S3, "n1", HOUR, Phase::Ready);
        stuck.delete_failed = Some("DeleteObject refused: AccessDenied".into());
        let copies = [
            copy(Storage::Local, "n1", 2 * HOUR, Phase::Ready),
            copy(Storage::S3, "n1", 2 * HOUR, Phase::Ready),
            stuck,
        ];
        let h = check(&copies, 2 * HOUR + 60, false, None);
        assert_eq!((h.status, h.reason), ("False", "PruneFailed"));
        assert_eq!(
            h.message,
            "retention could not delete 1 copy (s3 of n1: DeleteObject refused: AccessDenied)"
        );
    }

    #[test]
    fn a_suspended_schedule_never_gets_old() {
        let copies = [copy(Storage::Local, "n1", 0, Phase::Ready)];
        let storages = merge_storages(&[], &copies, true, false, &[]);
        let h = decide(&HealthInput {
            copies: &copies,
            storages: &storages,
            period: Duration::hours(1),
            created: t(0),
            now: t(100 * HOUR),
            suspended: true,
            local: true,
            s3: false,
            per_node: false,
            nodes: &[],
            last_run_failure: None,
        });
        assert_eq!(h.status, "True");
    }

    #[test]
    fn storage_times_only_move_forward() {
        let first = merge_storages(
            &[],
            &[
                copy(Storage::S3, "n1", 100, Phase::Ready),
                copy(Storage::S3, "n1", 200, Phase::Failed),
            ],
            true,
            true,
            &[],
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].last_success_time, Some(to_time(t(100))));
        assert_eq!(first[0].last_failure_time, Some(to_time(t(200))));
        // The copies were pruned: the times stay.
        let again = merge_storages(
            &first,
            &[copy(Storage::S3, "n1", 50, Phase::Ready)],
            true,
            true,
            &[],
        );
        assert_eq!(again, first);
        assert_eq!(newest_backup(&again), Some(t(100)));
        // S3 turned off: its entry goes.
        assert!(merge_storages(&first, &[], true, false, &[]).is_empty());
    }
}
