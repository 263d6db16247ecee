//! Records left Running with no stream of this agent taking them: left by a previous run of the
//! agent (killed mid-snapshot, or between storing a copy and recording it), or restored with
//! etcd. After a restore of the cluster's etcd from a snapshot the operator took, the records of
//! that very snapshot come back as they were while it was being saved: Running. No agent
//! finishes them (the stream that was taking them ended before the restore), so they would stay
//! Running for ever and hold the schedule's retention and verification (both wait while a run is
//! in flight). The agent settles each one by its stored copy: complete (the file in the snapshot
//! directory, the S3 object with its recorded sha256) -> Ready, with what the copy says; missing
//! -> Failed (interrupted). Marking them Failed without looking would be worse than leaving
//! them: a Failed local record is garbage-collected after a day, and its finalizer deletes the
//! file, the very snapshot the cluster was restored from.

use super::{Agent, AgentError};
use crate::api::conditions::set_condition;
use crate::api::{ETCDSnapshotFile, ETCDSnapshotFileStatus, Phase, Storage};
use crate::consts;
use crate::operator::s3_config_for_file;
use crate::storage::s3::S3Store;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::ListParams;

/// What the stored copy of a record says, when it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// Size of the stored bytes.
    pub size: u64,
    /// sha256 of the stored bytes, when recorded beside them.
    pub sha256: Option<String>,
    /// etcd revision, when recorded (S3 metadata).
    pub revision: Option<i64>,
    /// etcd cluster ID, when recorded (S3 metadata).
    pub cluster_id: Option<String>,
}

/// The Ready status of a Running record nobody is taking whose stored copy `f` is complete:
/// what the copy says, over what the record knew. Pure.
pub(super) fn ready_status(
    old: Option<&ETCDSnapshotFileStatus>,
    f: &Found,
    generation: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> ETCDSnapshotFileStatus {
    let old = old.cloned().unwrap_or_default();
    let mut status = ETCDSnapshotFileStatus {
        phase: Some(Phase::Ready),
        ready_to_use: Some(true),
        size: Some(Quantity(f.size.to_string())),
        sha256: f.sha256.clone().or(old.sha256.clone()),
        etcd_revision: f.revision.or(old.etcd_revision),
        etcd_cluster_id: f.cluster_id.clone().or(old.etcd_cluster_id.clone()),
        error: None,
        ..old
    };
    set_condition(
        &mut status.conditions,
        consts::conditions::READY,
        true,
        consts::conditions::REASON_FOUND_STORED,
        FOUND_MESSAGE,
        generation,
        now,
    );
    status
}

const FOUND_MESSAGE: &str = "the record was Running with no agent taking it (restored from a snapshot taken while it was \
     being saved?) and its stored copy is complete";
const MISSING_MESSAGE: &str = "nothing is stored and no agent is taking this snapshot: it was interrupted (the agent \
     restarted while taking it, or etcd was restored from a snapshot taken then)";

/// Settle `esf` (Running, and not being taken by this agent) by its stored copy. The record is
/// read again from the API server first: the cache may still show a copy this agent has just
/// finished as Running.
pub(super) async fn settle(agent: &Agent, esf: &ETCDSnapshotFile) -> Result<(), AgentError> {
    let name = esf.name_any();
    // A list of this one record (the agent may list and watch records, not get them), read
    // from etcd (no resourceVersion: a quorum read).
    let only = ListParams::default()
        .labels(&agent.selector())
        .fields(&format!("metadata.name={name}"));
    let Some(fresh) = agent
        .api()
        .list(&only)
        .await
        .map_err(AgentError::kube("reading a Running record"))?
        .items
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    if fresh.phase() != Phase::Running || !agent.owns(&fresh) || agent.is_taking(&fresh) {
        return Ok(());
    }
    let found = match fresh.storage() {
        Storage::Local => found_local(agent, &fresh)?,
        Storage::S3 => found_s3(agent, &fresh).await?,
    };
    let snapshot = &fresh.spec.snapshot_name;
    let Some(found) = found else {
        agent.fail(&fresh, MISSING_MESSAGE, "Interrupted").await;
        return Ok(());
    };
    let status = ready_status(
        fresh.status.as_ref(),
        &found,
        fresh.metadata.generation,
        chrono::Utc::now(),
    );
    agent.record_status(&name, &status).await?;
    tracing::info!(file = %name, "a Running record nobody was taking has a complete stored copy: Ready");
    agent
        .events
        .publish(
            &fresh,
            false,
            consts::REASON_CREATED,
            consts::actions::SAVE,
            format!(
                "Snapshot {snapshot} found stored on {}: {FOUND_MESSAGE}",
                place(agent, &fresh)
            ),
        )
        .await;
    Ok(())
}

fn place(agent: &Agent, esf: &ETCDSnapshotFile) -> String {
    match esf.storage() {
        Storage::Local => agent.config.node.clone(),
        Storage::S3 => "S3".to_string(),
    }
}

/// The record's file in this agent's snapshot directory (only there: a record pointing
/// elsewhere has no copy this agent can vouch for).
fn found_local(agent: &Agent, esf: &ETCDSnapshotFile) -> Result<Option<Found>, AgentError> {
    let dir = &agent.config.dir;
    let Some(name) = super::plan::local_name(esf, dir) else {
        return Ok(None);
    };
    Ok(dir.get(&name)?.map(|entry| Found {
        size: entry.size,
        sha256: dir.read_checksum(&name).ok().flatten(),
        revision: None,
        cluster_id: None,
    }))
}

/// The record's S3 object, complete when it carries the sha256 recorded at upload.
async fn found_s3(agent: &Agent, esf: &ETCDSnapshotFile) -> Result<Option<Found>, AgentError> {
    const OP: &str = "checking the S3 object of a Running record";
    let cfg = s3_config_for_file(&agent.client, &agent.config.namespace, esf).await?;
    let s3 = |source| AgentError::S3 { op: OP, source };
    let store = S3Store::connect(&cfg).await.map_err(s3)?;
    let entry = store.head(&esf.spec.snapshot_name).await.map_err(s3)?;
    Ok(entry.and_then(|e| {
        let meta = |k: &str| e.metadata.get(k).filter(|v| !v.is_empty()).cloned();
        let sha256 = meta(consts::s3_metadata::SHA256)?;
        Some(Found {
            size: e.size,
            sha256: Some(sha256),
            revision: meta(consts::s3_metadata::REVISION).and_then(|r| r.parse().ok()),
            cluster_id: meta(consts::s3_metadata::CLUSTER_ID),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> ETCDSnapshotFileStatus {
        ETCDSnapshotFileStatus {
            phase: Some(Phase::Running),
            ready_to_use: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_record_with_a_complete_copy_becomes_ready_with_what_the_copy_says() {
        let found = Found {
            size: 4096,
            sha256: Some("ab".repeat(32)),
            revision: Some(562),
            cluster_id: Some("cafe".into()),
        };
        let s = ready_status(Some(&running()), &found, Some(1), chrono::Utc::now());
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.ready_to_use, Some(true));
        assert_eq!(s.size, Some(Quantity("4096".into())));
        assert_eq!(s.sha256, found.sha256);
        assert_eq!(s.etcd_revision, Some(562));
        assert_eq!(s.etcd_cluster_id.as_deref(), Some("cafe"));
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == consts::conditions::READY)
            .expect("Ready condition");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, consts::conditions::REASON_FOUND_STORED);
    }

    #[test]
    fn what_the_record_already_knew_is_kept_when_the_copy_does_not_say() {
        let old = ETCDSnapshotFileStatus {
            etcd_revision: Some(7),
            etcd_cluster_id: Some("beef".into()),
            sha256: Some("cd".repeat(32)),
            ..running()
        };
        let found = Found {
            size: 1,
            sha256: None,
            revision: None,
            cluster_id: None,
        };
        let s = ready_status(Some(&old), &found, None, chrono::Utc::now());
        assert_eq!(s.etcd_revision, Some(7));
        assert_eq!(s.etcd_cluster_id.as_deref(), Some("beef"));
        assert_eq!(s.sha256, old.sha256);
    }
}
