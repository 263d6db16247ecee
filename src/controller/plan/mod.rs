//! The schedule reconcile's decisions, as pure functions of what it read (the schedule, its
//! [`ValidSchedule`](crate::controller::validate::ValidSchedule), the cached records, the live
//! agents, the S3 settings, the time): which runs are due, the records of a run, which copies to
//! verify and by whom, what to prune and why, and the status to write. `schedule.rs` reads the
//! cluster, calls these, and applies what they return; nothing here does I/O.

mod runs;
mod status;
mod upkeep;

pub use runs::{
    NodeLabels, Records, Run, RunPlan, S3Target, candidates, records, runs, s3_target, selects,
    unserved,
};
pub use status::{StatusPlan, invalid_status, requeue_after, retrying_status, status};
pub use upkeep::{Pruning, Verification, cluster_id, in_flight, prune, verification};

use crate::api::time::from_time;
use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule};
use chrono::{DateTime, Utc};
use kube::Resource;

/// The unix time of the run an ESF belongs to (from its snapshot name).
pub fn run_time(f: &ETCDSnapshotFile) -> Option<i64> {
    crate::naming::parse_snapshot_name(&f.spec.snapshot_name).map(|p| p.unix_seconds)
}

/// When the schedule was created (`now` if the API server did not say): no tick before it runs.
pub fn created_at(s: &ETCDSnapshotSchedule, now: DateTime<Utc>) -> DateTime<Utc> {
    s.meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests;
