//! The finalizer of an ETCDSnapshotFile (see [`consts::FINALIZER`]): releasing it once the stored
//! copy is deleted, checking that it can be released, and releasing and adopting records around
//! `etcd-snapshot uninstall`. Shared by the controller, the agent and the CLI.

use crate::api::ETCDSnapshotFile;
use crate::consts;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

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
    let finalizers = without_ours(esf);
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
    let finalizers = without_ours(esf);
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

/// The record's finalizers without ours.
fn without_ours(esf: &ETCDSnapshotFile) -> Vec<String> {
    esf.finalizers()
        .iter()
        .filter(|f| f.as_str() != consts::FINALIZER)
        .cloned()
        .collect()
}
