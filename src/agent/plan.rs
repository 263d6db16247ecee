//! The agent's decisions, as pure functions of what it read (a record, this node, the time, the
//! outcome of a save): what to do with a record, which records one etcd stream serves, where a
//! copy may go, and the status each record gets. The reconcile and [`super::execute`] read the
//! cluster, call these, and write what they return; nothing here does I/O.

use crate::api::conditions::set_condition;
use crate::api::time::to_time;
use crate::api::{
    ETCDSnapshotFile, ETCDSnapshotFileStatus, EncryptionStatus, Phase, SnapshotError, Storage,
};
use crate::consts;
use crate::naming::{SnapshotName, label_value};
use crate::snapshot::crypt::ALGORITHM_NAME;
use crate::snapshot::{SaveReport, SnapshotError as SaveError, SnapshotRecord};
use crate::storage::local::LocalDir;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

/// What the agent does about one record it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing now (not this node's record, the agent is stopping, or nothing to do in its
    /// phase); the next change of the record wakes the agent again.
    Wait,
    /// The record of a local copy is being deleted and still holds the finalizer: delete the
    /// file, then release the finalizer.
    DeleteLocalFile,
    /// A Ready copy: verify it if a verification was requested.
    VerifyIfRequested,
    /// A Running copy that no stream of this agent is taking (a restore of etcd brought it back
    /// as it was while being saved): settle it by its stored copy (see `agent/settle.rs`).
    SettleOrphan,
    /// A Pending copy: take the snapshot (with every other Pending copy of it on this node).
    TakeSnapshot,
}

/// Whether `esf` is the agent's of `node` to act on: its node label and its `spec.nodeName` both
/// name the node. RBAC cannot restrict an agent's writes to its own node's records (rules have no
/// label conditions), so every path goes through this before running, patching or releasing a
/// record; a record whose label and `spec.nodeName` disagree (made or edited by hand) is never
/// touched.
pub fn owns(esf: &ETCDSnapshotFile, node: &str) -> bool {
    esf.spec.node_name == node && esf.labels().get(consts::LABEL_NODE) == Some(&label_value(node))
}

/// The next step for `esf` on the agent of `node`; `stopping` once SIGTERM came (what is left is
/// the next agent's: a Pending record waits for it); `taking` while a stream of this agent takes
/// the record's snapshot.
pub fn next_step(esf: &ETCDSnapshotFile, node: &str, stopping: bool, taking: bool) -> Next {
    if stopping || !owns(esf, node) {
        return Next::Wait;
    }
    if esf.meta().deletion_timestamp.is_some() {
        let holds_finalizer = esf.finalizers().iter().any(|f| f == consts::FINALIZER);
        return if esf.storage() == Storage::Local && holds_finalizer {
            Next::DeleteLocalFile
        } else {
            Next::Wait
        };
    }
    match esf.phase() {
        Phase::Ready => Next::VerifyIfRequested,
        Phase::Pending => Next::TakeSnapshot,
        Phase::Running if !taking => Next::SettleOrphan,
        _ => Next::Wait,
    }
}

/// The Pending copies of snapshot `name` among `records` that the agent of `node` takes in one
/// stream (not being deleted).
pub fn pending_copies<'a>(
    records: impl IntoIterator<Item = &'a ETCDSnapshotFile>,
    node: &str,
    name: &str,
) -> Vec<ETCDSnapshotFile> {
    records
        .into_iter()
        .filter(|f| {
            f.spec.snapshot_name == name
                && owns(f, node)
                && f.phase() == Phase::Pending
                && f.meta().deletion_timestamp.is_none()
        })
        .cloned()
        .collect()
}

/// The snapshot name of a local record, checked once here: `None` unless it is a valid name
/// and the record's location is the file of that name in this agent's snapshot directory `dir`
/// (a record made by hand may point anywhere).
pub fn local_name(esf: &ETCDSnapshotFile, dir: &LocalDir) -> Option<SnapshotName> {
    SnapshotName::new(esf.spec.snapshot_name.as_str())
        .ok()
        .filter(|name| dir.location(name) == esf.spec.location)
}

/// Why a local copy cannot be written where its record says, if it cannot: the location must be
/// the file of that name in this agent's snapshot directory.
pub fn local_placement_error(esf: &ETCDSnapshotFile, dir: &LocalDir) -> Option<String> {
    if local_name(esf, dir).is_some() {
        return None;
    }
    Some(format!(
        "location {} is not in this agent's snapshot directory {}",
        esf.spec.location,
        dir.path().display()
    ))
}

/// Why an S3 copy cannot be written where its record says, if it cannot: `configured` is where
/// the record's S3 settings put the snapshot.
pub fn s3_placement_error(esf: &ETCDSnapshotFile, configured: &str) -> Option<String> {
    (configured != esf.spec.location).then(|| {
        format!(
            "location {} is not where the S3 settings point ({configured})",
            esf.spec.location
        )
    })
}

/// The status of a record whose snapshot is being taken.
pub fn running_status(esf: &ETCDSnapshotFile) -> ETCDSnapshotFileStatus {
    ETCDSnapshotFileStatus {
        phase: Some(Phase::Running),
        ready_to_use: Some(false),
        ..esf.status.clone().unwrap_or_default()
    }
}

/// The status of a record whose copy failed with `message`.
pub fn failed_status(
    esf: &ETCDSnapshotFile,
    message: &str,
    now: DateTime<Utc>,
) -> ETCDSnapshotFileStatus {
    ETCDSnapshotFileStatus {
        phase: Some(Phase::Failed),
        ready_to_use: Some(false),
        error: Some(SnapshotError {
            time: Some(to_time(now)),
            message: Some(message.to_string()),
        }),
        ..esf.status.clone().unwrap_or_default()
    }
}

/// The status of a record whose copy is stored: what the stream recorded, and `Ready` True.
pub fn ready_status(
    esf: &ETCDSnapshotFile,
    record: &SnapshotRecord,
    now: DateTime<Utc>,
) -> ETCDSnapshotFileStatus {
    let mut status = ETCDSnapshotFileStatus {
        phase: Some(Phase::Ready),
        ready_to_use: Some(true),
        size: Some(Quantity(record.size.to_string())),
        creation_time: DateTime::from_timestamp(record.created_unix, 0).map(to_time),
        sha256: Some(record.sha256.clone()),
        etcd_revision: Some(record.etcd_revision),
        etcd_cluster_id: Some(record.cluster_id.clone()),
        etcd_member_name: Some(record.member_name.clone()),
        etcd_version: Some(record.etcd_version.clone()),
        error: None,
        encryption: record
            .encryption_key_id
            .as_ref()
            .map(|id| EncryptionStatus {
                algorithm: ALGORITHM_NAME.to_string(),
                key_id: id.clone(),
            }),
        ..esf.status.clone().unwrap_or_default()
    };
    set_condition(
        &mut status.conditions,
        consts::conditions::READY,
        true,
        consts::conditions::REASON_SAVED,
        "the snapshot is stored and its hashes checked",
        esf.metadata.generation,
        now,
    );
    status
}

/// What became of one record's copy in a save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Stored: the record becomes Ready.
    Stored,
    /// Not stored: the record becomes Failed with this message and metric/event reason.
    Failed {
        /// One line for the record and the event.
        message: String,
        /// The failure's category (metric label).
        reason: &'static str,
    },
}

/// The outcome of `esf`'s copy in `report`, a save by the agent of `node`.
pub fn copy_outcome(esf: &ETCDSnapshotFile, report: &SaveReport, node: &str) -> CopyOutcome {
    let st = esf.storage();
    match report.copies.iter().find(|c| c.storage == st) {
        Some(copy) => match &copy.result {
            Ok(()) => CopyOutcome::Stored,
            Err(e) => CopyOutcome::Failed {
                message: failure_message(node, e),
                reason: e.reason(),
            },
        },
        None => CopyOutcome::Failed {
            message: "the copy was not attempted".to_string(),
            reason: "Internal",
        },
    }
}

/// The message a record gets for a failed save: a cancellation says that the agent was stopping.
pub fn failure_message(node: &str, e: &SaveError) -> String {
    match e {
        SaveError::Cancelled => {
            format!("the agent on {node} was stopped (SIGTERM) while taking this snapshot: {e}")
        }
        _ => e.to_string(),
    }
}

/// The `ETCDSnapshotCreated` event's note for a stored copy.
pub fn saved_note(esf: &ETCDSnapshotFile, node: &str) -> String {
    let place = match esf.storage() {
        Storage::Local => node,
        Storage::S3 => "S3",
    };
    format!("Snapshot {} saved on {place}", esf.spec.snapshot_name)
}

/// The `ETCDSnapshotFailed` event's note.
pub fn failed_note(esf: &ETCDSnapshotFile, node: &str, message: &str) -> String {
    format!(
        "Failed to save snapshot {} on {node}: {message}",
        esf.spec.snapshot_name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Compression;
    use crate::snapshot::CopyReport;
    use std::path::Path;

    const NODE: &str = "cp-1";

    /// A local record of node cp-1 of a scheduled run, as the controller creates it.
    const LOCAL_PENDING: &str = r#"
apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotFile
metadata:
  name: local-etcd-snapshot-cp-1-1764633600-5f2a1c
  generation: 1
  labels:
    etcdsnapshot.io/node: cp-1
    etcdsnapshot.io/storage: cp-1
    etcdsnapshot.io/schedule: nightly
    etcdsnapshot.io/tick: "1764633600"
  finalizers: [etcdsnapshot.io/snapshot-file]
spec:
  snapshotName: etcd-snapshot-cp-1-1764633600
  nodeName: cp-1
  location: file:///var/lib/etcd-snapshots/etcd-snapshot-cp-1-1764633600
  scheduleName: nightly
  compression: none
status:
  phase: Pending
"#;

    /// The S3 record of the same snapshot.
    const S3_PENDING: &str = r#"
apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotFile
metadata:
  name: s3-etcd-snapshot-cp-1-1764633600-9b0e44
  generation: 1
  labels:
    etcdsnapshot.io/node: cp-1
    etcdsnapshot.io/storage: s3
    etcdsnapshot.io/schedule: nightly
    etcdsnapshot.io/tick: "1764633600"
  finalizers: [etcdsnapshot.io/snapshot-file]
spec:
  snapshotName: etcd-snapshot-cp-1-1764633600
  nodeName: cp-1
  location: s3://backups/cluster-a/etcd-snapshot-cp-1-1764633600
  scheduleName: nightly
  compression: none
status:
  phase: Pending
"#;

    fn esf(yaml: &str) -> ETCDSnapshotFile {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn with(yaml: &str, edit: impl FnOnce(&mut ETCDSnapshotFile)) -> ETCDSnapshotFile {
        let mut f = esf(yaml);
        edit(&mut f);
        f
    }

    fn set_phase(f: &mut ETCDSnapshotFile, p: Phase) {
        f.status.get_or_insert_with(Default::default).phase = Some(p);
    }

    fn deleting(f: &mut ETCDSnapshotFile) {
        f.metadata.deletion_timestamp = Some(to_time(now()));
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_633_700, 0).expect("valid time")
    }

    fn record() -> SnapshotRecord {
        SnapshotRecord {
            name: "etcd-snapshot-cp-1-1764633600".into(),
            node_name: NODE.into(),
            created_unix: 1_764_633_600,
            size: 4096,
            raw_size: 4096,
            sha256: "ab".repeat(32),
            etcd_revision: 42,
            cluster_id: "cdf818194e3a8c32".into(),
            member_name: "cp-1".into(),
            etcd_version: "3.5.30".into(),
            compression: Compression::None,
            encryption_key_id: None,
            duration: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn a_pending_record_of_this_node_is_taken_others_wait() {
        assert_eq!(
            next_step(&esf(LOCAL_PENDING), NODE, false, false),
            Next::TakeSnapshot
        );
        assert_eq!(
            next_step(&esf(LOCAL_PENDING), "cp-2", false, false),
            Next::Wait
        );
        // Stopping: the next agent takes it.
        assert_eq!(
            next_step(&esf(LOCAL_PENDING), NODE, true, false),
            Next::Wait
        );
        // Label and spec.nodeName disagree (edited by hand): never touched.
        let relabelled = with(LOCAL_PENDING, |f| {
            f.labels_mut()
                .insert(consts::LABEL_NODE.into(), "cp-2".into());
        });
        assert_eq!(next_step(&relabelled, NODE, false, false), Next::Wait);
        let failed = with(LOCAL_PENDING, |f| set_phase(f, Phase::Failed));
        assert_eq!(next_step(&failed, NODE, false, false), Next::Wait);
        // Running: this agent's stream finishes it; with no stream it is an orphan to settle.
        let running = with(LOCAL_PENDING, |f| set_phase(f, Phase::Running));
        assert_eq!(next_step(&running, NODE, false, true), Next::Wait);
        assert_eq!(next_step(&running, NODE, false, false), Next::SettleOrphan);
        assert_eq!(next_step(&running, NODE, true, false), Next::Wait);
        let ready = with(LOCAL_PENDING, |f| set_phase(f, Phase::Ready));
        assert_eq!(
            next_step(&ready, NODE, false, false),
            Next::VerifyIfRequested
        );
    }

    #[test]
    fn a_deleted_local_record_with_the_finalizer_gets_its_file_deleted() {
        let f = with(LOCAL_PENDING, deleting);
        assert_eq!(next_step(&f, NODE, false, false), Next::DeleteLocalFile);
        // The S3 copy's finalizer is the controller's.
        let f = with(S3_PENDING, deleting);
        assert_eq!(next_step(&f, NODE, false, false), Next::Wait);
        // Released already.
        let f = with(LOCAL_PENDING, |f| {
            deleting(f);
            f.metadata.finalizers = None;
        });
        assert_eq!(next_step(&f, NODE, false, false), Next::Wait);
    }

    #[test]
    fn one_stream_serves_the_pending_local_and_s3_copies_of_one_snapshot() {
        let other_snapshot = with(LOCAL_PENDING, |f| {
            f.spec.snapshot_name = "etcd-snapshot-cp-1-1764637200".into();
        });
        let running = with(S3_PENDING, |f| set_phase(f, Phase::Running));
        let gone = with(LOCAL_PENDING, deleting);
        let other_node = with(LOCAL_PENDING, |f| f.spec.node_name = "cp-2".into());
        let records = [
            esf(LOCAL_PENDING),
            esf(S3_PENDING),
            other_snapshot,
            running,
            gone,
            other_node,
        ];
        let group = pending_copies(&records, NODE, "etcd-snapshot-cp-1-1764633600");
        let names: Vec<_> = group.iter().map(|f| f.name_any()).collect();
        assert_eq!(
            names,
            [
                "local-etcd-snapshot-cp-1-1764633600-5f2a1c",
                "s3-etcd-snapshot-cp-1-1764633600-9b0e44"
            ]
        );
    }

    #[test]
    fn a_copy_goes_only_where_its_record_says_and_the_settings_agree() {
        let dir = LocalDir::new(Path::new("/var/lib/etcd-snapshots"));
        assert_eq!(local_placement_error(&esf(LOCAL_PENDING), &dir), None);
        let elsewhere = with(LOCAL_PENDING, |f| {
            f.spec.location = "file:///etc/passwd".into();
        });
        let message = local_placement_error(&elsewhere, &dir).expect("refused");
        assert!(
            message.contains("file:///etc/passwd") && message.contains("/var/lib/etcd-snapshots"),
            "{message}"
        );
        let traversal = with(LOCAL_PENDING, |f| {
            f.spec.snapshot_name = "../../etc/passwd".into();
        });
        assert!(local_placement_error(&traversal, &dir).is_some());

        let s3 = esf(S3_PENDING);
        assert_eq!(s3_placement_error(&s3, &s3.spec.location.clone()), None);
        let message =
            s3_placement_error(&s3, "s3://other/etcd-snapshot-cp-1-1764633600").expect("refused");
        assert!(message.contains("s3://other/"), "{message}");
    }

    #[test]
    fn statuses_keep_what_was_there_and_say_what_happened() {
        let f = with(LOCAL_PENDING, |f| {
            f.status
                .get_or_insert_with(Default::default)
                .last_verify_request = Some("r1".into());
        });
        let running = running_status(&f);
        assert_eq!(running.phase, Some(Phase::Running));
        assert_eq!(running.ready_to_use, Some(false));
        assert_eq!(running.last_verify_request.as_deref(), Some("r1"));

        let failed = failed_status(&f, "etcd is down", now());
        assert_eq!(failed.phase, Some(Phase::Failed));
        let error = failed.error.expect("error");
        assert_eq!(error.message.as_deref(), Some("etcd is down"));
        assert_eq!(error.time, Some(to_time(now())));

        let mut r = record();
        r.encryption_key_id = Some("k1".into());
        let ready = ready_status(&f, &r, now());
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(ready.ready_to_use, Some(true));
        assert_eq!(ready.size, Some(Quantity("4096".into())));
        assert_eq!(ready.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(ready.etcd_revision, Some(42));
        assert_eq!(ready.etcd_version.as_deref(), Some("3.5.30"));
        assert_eq!(ready.error, None);
        assert_eq!(ready.last_verify_request.as_deref(), Some("r1"));
        assert_eq!(
            ready.encryption.map(|e| (e.algorithm, e.key_id)),
            Some((ALGORITHM_NAME.to_string(), "k1".to_string()))
        );
        let cond = ready
            .conditions
            .iter()
            .find(|c| c.type_ == consts::conditions::READY)
            .expect("Ready condition");
        assert_eq!(cond.status, "True");
        assert_eq!(cond.reason, consts::conditions::REASON_SAVED);
        assert_eq!(cond.observed_generation, Some(1));
    }

    #[test]
    fn each_copy_gets_its_own_outcome_of_one_stream() {
        let report = SaveReport {
            record: record(),
            copies: vec![
                CopyReport {
                    storage: Storage::Local,
                    location: esf(LOCAL_PENDING).spec.location,
                    result: Ok(()),
                },
                CopyReport {
                    storage: Storage::S3,
                    location: esf(S3_PENDING).spec.location,
                    result: Err(SaveError::Cancelled),
                },
            ],
        };
        assert_eq!(
            copy_outcome(&esf(LOCAL_PENDING), &report, NODE),
            CopyOutcome::Stored
        );
        match copy_outcome(&esf(S3_PENDING), &report, NODE) {
            CopyOutcome::Failed { message, reason } => {
                assert!(
                    message.starts_with("the agent on cp-1 was stopped (SIGTERM)"),
                    "{message}"
                );
                assert_eq!(reason, SaveError::Cancelled.reason());
            }
            other => panic!("{other:?}"),
        }
        let local_only = SaveReport {
            record: record(),
            copies: vec![],
        };
        assert_eq!(
            copy_outcome(&esf(S3_PENDING), &local_only, NODE),
            CopyOutcome::Failed {
                message: "the copy was not attempted".into(),
                reason: "Internal"
            }
        );
    }

    #[test]
    fn event_notes_name_the_snapshot_and_where_it_went() {
        assert_eq!(
            saved_note(&esf(LOCAL_PENDING), NODE),
            "Snapshot etcd-snapshot-cp-1-1764633600 saved on cp-1"
        );
        assert_eq!(
            saved_note(&esf(S3_PENDING), NODE),
            "Snapshot etcd-snapshot-cp-1-1764633600 saved on S3"
        );
        assert_eq!(
            failed_note(&esf(S3_PENDING), NODE, "S3 is down"),
            "Failed to save snapshot etcd-snapshot-cp-1-1764633600 on cp-1: S3 is down"
        );
    }
}
