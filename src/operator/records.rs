//! Status writes of ETCDSnapshotFiles shared by the controller and the agents.

use super::{OperatorError, kube_err};
use crate::api::{ETCDSnapshotFile, ETCDSnapshotFileStatus};
use kube::api::{Api, Patch, PatchParams};

/// Merge-patch the status of an ETCDSnapshotFile.
pub async fn patch_file_status(
    api: &Api<ETCDSnapshotFile>,
    name: &str,
    status: &ETCDSnapshotFileStatus,
    manager: &str,
) -> Result<(), OperatorError> {
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("updating status of {name}")))?;
    Ok(())
}

/// Deleting the stored copy of a record being deleted failed with `message`: write it into
/// `status.error` (the schedule's `BackupsHealthy` reads it), unless the record already says so
/// since its deletion (a retry writes nothing, so it triggers no watch event).
pub async fn record_delete_failure(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
    message: &str,
    manager: &str,
) -> Result<(), OperatorError> {
    let error = esf.status.as_ref().and_then(|s| s.error.as_ref());
    let deleting = esf.metadata.deletion_timestamp.as_ref();
    let recorded = match (deleting, error) {
        (Some(d), Some(e)) => {
            e.message.as_deref() == Some(message) && e.time.as_ref().is_some_and(|t| t.0 >= d.0)
        }
        _ => false,
    };
    if recorded {
        return Ok(());
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let patch = serde_json::json!({ "status": { "error": { "time": now, "message": message } } });
    let name = kube::ResourceExt::name_any(esf);
    api.patch_status(&name, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("updating status of {name}")))?;
    Ok(())
}
