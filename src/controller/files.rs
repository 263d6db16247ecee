//! Reconcile of ETCDSnapshotFiles on the controller side: S3 copies' finalizer (delete the
//! object), local copies of nodes that are gone (release the finalizer so nothing is stuck), and
//! garbage collection of Failed records.

use super::util::{from_time, phase, remove_finalizer, storage};
use super::{Context, ControllerError};
use crate::api::{ETCDSnapshotFile, Phase};
use crate::consts;
use crate::naming::Storage;
use crate::operator::{AgentInfo, leases, s3_config_for_file};
use crate::storage::s3::S3Store;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Reconcile one ETCDSnapshotFile.
pub async fn reconcile(
    esf: Arc<ETCDSnapshotFile>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let _timer = ctx.metrics.reconcile_started("file");
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    if esf.meta().deletion_timestamp.is_some() {
        if !esf.finalizers().iter().any(|f| f == consts::FINALIZER) {
            return Ok(Action::await_change());
        }
        return match storage(&esf) {
            Storage::S3 => delete_s3_copy(&esf, &api, &ctx).await,
            Storage::Local => release_if_node_gone(&esf, &api, &ctx).await,
        };
    }
    if phase(&esf) == Phase::Failed {
        let failed_at = esf
            .status
            .as_ref()
            .and_then(|s| s.error.as_ref())
            .and_then(|e| e.time.as_ref())
            .map(from_time)
            .or_else(|| esf.meta().creation_timestamp.as_ref().map(from_time));
        if let Some(at) = failed_at {
            let ttl = chrono::Duration::from_std(ctx.config.failed_ttl).unwrap_or_default();
            let age = chrono::Utc::now() - at;
            if age >= ttl {
                tracing::info!(file = %esf.name_any(), "garbage-collecting a failed snapshot record");
                match api.delete(&esf.name_any(), &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(ControllerError::kube("deleting a failed snapshot file")(e));
                    }
                }
                return Ok(Action::await_change());
            }
            return Ok(Action::requeue((ttl - age).to_std().unwrap_or_default()));
        }
    }
    Ok(Action::await_change())
}

/// Delete the S3 object of a deleted S3 copy, then release the finalizer. An ESF whose location
/// is not where its S3 settings say (made by hand, pointing at another bucket) is released
/// without touching anything.
async fn delete_s3_copy(
    esf: &ETCDSnapshotFile,
    api: &Api<ETCDSnapshotFile>,
    ctx: &Context,
) -> Result<Action, ControllerError> {
    // A copy that never got stored has nothing to delete.
    if matches!(phase(esf), Phase::Pending | Phase::Failed) {
        remove_finalizer(api, esf)
            .await
            .map_err(ControllerError::kube("releasing the finalizer"))?;
        return Ok(Action::await_change());
    }
    let cfg = match s3_config_for_file(&ctx.client, &ctx.namespace, esf).await {
        Ok(cfg) => cfg,
        Err(e) if e.is_config() => return release_unreachable(esf, api, ctx, &e).await,
        Err(e) => return Err(e.into()),
    };
    let name = &esf.spec.snapshot_name;
    let note = if cfg.location(name) == esf.spec.location {
        let store = S3Store::connect(&cfg).await?;
        let found = store.delete(name).await?;
        if found {
            format!("Snapshot {name} deleted")
        } else {
            format!("Snapshot {name} was already gone from S3")
        }
    } else {
        format!(
            "Snapshot {name}: location {} is not under the configured bucket and folder; nothing was deleted",
            esf.spec.location
        )
    };
    remove_finalizer(api, esf)
        .await
        .map_err(ControllerError::kube("releasing the finalizer"))?;
    ctx.events
        .publish(esf, false, consts::REASON_DELETED, "Delete", note)
        .await;
    Ok(Action::await_change())
}

/// The S3 settings of a deleted S3 copy cannot be read (its Secret was deleted or is invalid).
/// Retry until [`super::ControllerConfig::s3_release_after`] has passed since the deletion was
/// asked for, then release the finalizer WITHOUT deleting the object and say so in a Warning
/// event naming the object: a finalizer never sticks for good, and data is never lost silently.
async fn release_unreachable(
    esf: &ETCDSnapshotFile,
    api: &Api<ETCDSnapshotFile>,
    ctx: &Context,
    error: &crate::operator::OperatorError,
) -> Result<Action, ControllerError> {
    let since = esf
        .meta()
        .deletion_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or_else(chrono::Utc::now);
    let waited = (chrono::Utc::now() - since).to_std().unwrap_or_default();
    let grace = ctx.config.s3_release_after;
    if waited < grace {
        tracing::warn!(file = %esf.name_any(), error = %error, "cannot delete the S3 object yet");
        return Ok(Action::requeue(
            (grace - waited).min(Duration::from_secs(60)) + Duration::from_millis(200),
        ));
    }
    remove_finalizer(api, esf)
        .await
        .map_err(ControllerError::kube("releasing the finalizer"))?;
    ctx.metrics.record_failure(Storage::S3, error.reason());
    ctx.events
        .publish(
            esf,
            true,
            consts::REASON_DELETED,
            "Delete",
            format!(
                "Snapshot {} was NOT deleted from S3: {error} (waited {}s); released the record and left the object at {}",
                esf.spec.snapshot_name,
                waited.as_secs(),
                esf.spec.location
            ),
        )
        .await;
    Ok(Action::await_change())
}

/// The agent of a node deletes its local files. If the node is gone and no agent is alive for
/// it, nobody ever will: release the finalizer so the record does not get stuck.
async fn release_if_node_gone(
    esf: &ETCDSnapshotFile,
    api: &Api<ETCDSnapshotFile>,
    ctx: &Context,
) -> Result<Action, ControllerError> {
    let node = &esf.spec.node_name;
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node_exists = nodes
        .get_opt(node)
        .await
        .map_err(ControllerError::kube("reading a Node"))?
        .is_some();
    let agent_live = leases(&ctx.client, &ctx.namespace)
        .get_opt(&AgentInfo::lease_name(node))
        .await
        .map_err(ControllerError::kube("reading an agent lease"))?
        .as_ref()
        .and_then(AgentInfo::from_lease)
        .is_some_and(|a| a.is_live(jiff::Timestamp::now()));
    if node_exists || agent_live {
        // The agent will handle it; look again later in case the node goes away.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    remove_finalizer(api, esf)
        .await
        .map_err(ControllerError::kube("releasing the finalizer"))?;
    ctx.events
        .publish(
            esf,
            true,
            consts::REASON_DELETED,
            "Delete",
            format!(
                "Node {node} no longer exists and has no agent: released the record of {}; the file, if any, was left on the node",
                esf.spec.snapshot_name
            ),
        )
        .await;
    Ok(Action::await_change())
}
