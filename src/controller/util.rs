//! Small helpers of the controller: times, conditions, finalizers, ESF views.

use crate::api::{ETCDSnapshotFile, Phase};
use crate::consts;
use crate::naming::Storage;
use crate::storage::catalog::StoredCopy;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

/// chrono -> Kubernetes time.
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// Kubernetes time -> chrono.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

/// Set a condition in `conditions`, keeping its transition time when the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, generation, now);
}

/// As [`set_condition`], with the status as written (`True`, `False` or `Unknown`).
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => to_time(now),
    };
    conditions.retain(|c| c.type_ != type_);
    // Some API servers turn an empty message into null, which the schema refuses.
    let message = if message.is_empty() { reason } else { message };
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Remove the condition of `type_`, if there is one.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The phase of an ESF (`Pending` when it has no status yet).
pub fn phase(esf: &ETCDSnapshotFile) -> Phase {
    esf.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

/// Local or S3, from the storage label (falling back to the location's scheme).
pub fn storage(esf: &ETCDSnapshotFile) -> Storage {
    match esf.labels().get(consts::LABEL_STORAGE).map(String::as_str) {
        Some(consts::STORAGE_S3) => Storage::S3,
        Some(_) => Storage::Local,
        None if esf.spec.location.starts_with("s3://") => Storage::S3,
        None => Storage::Local,
    }
}

/// A Ready ESF as a stored copy, for retention.
pub fn as_copy(esf: &ETCDSnapshotFile) -> Option<StoredCopy> {
    let status = esf.status.as_ref()?;
    if status.phase != Some(Phase::Ready) {
        return None;
    }
    Some(StoredCopy {
        storage: storage(esf),
        name: esf.spec.snapshot_name.clone(),
        location: esf.spec.location.clone(),
        node_name: esf.spec.node_name.clone(),
        size: status
            .size
            .as_ref()
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0),
        created_unix: status
            .creation_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_default(),
        compression: esf.spec.compression,
        sha256: status.sha256.clone(),
        cluster_id: status
            .etcd_cluster_id
            .clone()
            .or_else(|| esf.labels().get(consts::LABEL_CLUSTER_ID).cloned()),
        revision: status.etcd_revision,
        s3: esf.spec.s3.clone(),
        encryption: status.encryption.clone(),
    })
}

/// Remove our finalizer from an ESF (a no-op if it is not there).
pub async fn remove_finalizer(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
) -> kube::Result<()> {
    remove_finalizer_with(api, esf, &PatchParams::default()).await
}

/// Check, without changing anything (a server-side dry run, through admission and RBAC), that
/// our finalizer can be removed from an ESF: run before deleting what it guards, so that a
/// process whose rights are already gone (e.g. during an uninstall) never deletes a file it
/// then cannot release the record of.
pub async fn can_remove_finalizer(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
) -> kube::Result<()> {
    remove_finalizer_with(api, esf, &PatchParams::default().dry_run()).await
}

/// Remove our finalizer from an ESF for an uninstall, marking it with
/// [`consts::ANNOTATION_RELEASED`] so that a later controller adopts it again. Conflicts (the
/// record changed) are errors to retry.
pub async fn release_for_uninstall(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
    now: &str,
) -> kube::Result<()> {
    let finalizers: Vec<String> = esf
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != consts::FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": esf.resource_version(),
            "finalizers": finalizers,
            "annotations": {consts::ANNOTATION_RELEASED: now},
        }
    });
    patch_metadata(api, esf, &patch).await
}

/// Whether an ESF was released by `etcd-snapshot uninstall` and is to be adopted again.
pub fn released_for_uninstall(esf: &ETCDSnapshotFile) -> bool {
    esf.annotations().contains_key(consts::ANNOTATION_RELEASED)
}

/// Adopt an ESF released by `etcd-snapshot uninstall`: put our finalizer back and remove the
/// [`consts::ANNOTATION_RELEASED`] mark.
pub async fn adopt(api: &Api<ETCDSnapshotFile>, esf: &ETCDSnapshotFile) -> kube::Result<()> {
    let mut finalizers = esf.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == consts::FINALIZER) {
        finalizers.push(consts::FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": esf.resource_version(),
            "finalizers": finalizers,
            "annotations": {consts::ANNOTATION_RELEASED: null},
        }
    });
    patch_metadata(api, esf, &patch).await
}

async fn patch_metadata(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
    patch: &serde_json::Value,
) -> kube::Result<()> {
    match api
        .patch(
            &esf.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer_with(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
    params: &PatchParams,
) -> kube::Result<()> {
    let finalizers: Vec<String> = esf
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != consts::FINALIZER)
        .cloned()
        .collect();
    if finalizers.len() == esf.finalizers().len() {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": esf.resource_version(),
            "finalizers": finalizers,
        }
    });
    match api
        .patch(&esf.name_any(), params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
