//! Reconcile of ETCDSnapshotFiles on the controller side: S3 copies' finalizer (delete the
//! object), local copies of nodes that are gone (release the finalizer so nothing is stuck), and
//! garbage collection of Failed records.

use super::validate::{S3Source, validate};
use super::{Context, ControllerError};
use crate::api::time::from_time;
use crate::api::{ETCDSnapshotFile, Phase, Storage};
use crate::consts;
use crate::finalizer::{adopt, released_for_uninstall, remove_finalizer};
use crate::naming::{SnapshotName, label_value};
use crate::operator::{OperatorError, s3_config_for_file};
use crate::storage::config::S3Config;
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
    let key = super::reconcile_key(esf.as_ref());
    crate::backoff::tracked(&ctx.failures, &key, reconcile_file(esf, ctx.clone())).await
}

async fn reconcile_file(
    esf: Arc<ETCDSnapshotFile>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let _timer = ctx.metrics.reconcile_started("file");
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    if esf.meta().deletion_timestamp.is_some() {
        if !esf.finalizers().iter().any(|f| f == consts::FINALIZER) {
            return Ok(Action::await_change());
        }
        return match esf.storage() {
            Storage::S3 => delete_s3_copy(&esf, &api, &ctx).await,
            Storage::Local => release_if_node_gone(&esf, &api, &ctx).await,
        };
    }
    // A record released by `etcd-snapshot uninstall` is adopted by this (re)installed operator:
    // deleting it deletes its file or object again.
    if released_for_uninstall(&esf) {
        adopt(&api, &esf)
            .await
            .map_err(ControllerError::kube("adopting a released record"))?;
        tracing::info!(file = %esf.name_any(), "adopted a record released by an uninstall (finalizer put back)");
        return Ok(Action::await_change());
    }
    if esf.phase() == Phase::Failed {
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
    if matches!(esf.phase(), Phase::Pending | Phase::Failed) {
        remove_finalizer(api, esf)
            .await
            .map_err(ControllerError::kube("releasing the finalizer"))?;
        return Ok(Action::await_change());
    }
    let name = &esf.spec.snapshot_name;
    let cfg = match s3_config_for_file(&ctx.client, &ctx.namespace, esf).await {
        Ok(cfg) => cfg,
        // The Secret may come back: keep the record (and say why) until it does, or until
        // --s3-release-after has passed (then release it, saying the object was left).
        Err(
            e @ (OperatorError::SecretMissing { .. } | OperatorError::CaConfigMapMissing { .. }),
        ) => {
            ctx.events
                .publish(
                    esf,
                    true,
                    consts::REASON_DELETED,
                    consts::actions::DELETE,
                    format!("Snapshot {name} cannot be deleted from S3 yet: {e}"),
                )
                .await;
            return release_unreachable(esf, api, ctx, &e).await;
        }
        // Settings that can never work (a hand-made record, a Secret of another type or with
        // invalid values): nothing can be deleted, and waiting would leave the record stuck.
        Err(e) if e.is_config() => {
            release(
                esf,
                api,
                ctx,
                format!("Snapshot {name}: its S3 settings are invalid ({e}); nothing was deleted"),
            )
            .await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    // Without a Secret the settings come from the record itself and the credentials from the
    // controller's environment: delete only in a bucket and folder a schedule names inline, so
    // a hand-made record cannot make the controller delete objects anywhere its identity can.
    if esf.spec.s3_config_secret_name.is_none() && !inline_target_in_use(ctx, &cfg).await? {
        let note = format!(
            "Snapshot {name}: location {} is not the inline S3 target of any schedule; nothing was deleted",
            esf.spec.location
        );
        release(esf, api, ctx, note).await?;
        return Ok(Action::await_change());
    }
    // The name comes from the record: checked once, here. A name that is not a valid snapshot
    // name is never under the folder (and would otherwise be retried for good).
    let inside = SnapshotName::new(name.as_str())
        .ok()
        .filter(|n| cfg.location(n) == esf.spec.location);
    let note = if let Some(name) = &inside {
        let deleted = match S3Store::connect(&cfg).await {
            Ok(store) => store.delete(name).await,
            Err(e) => Err(e),
        };
        let found = match deleted {
            Ok(found) => found,
            Err(e) => return delete_failed(esf, api, ctx, &e.to_string()).await,
        };
        ctx.failures.succeeded(&esf.name_any());
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
        .publish(
            esf,
            inside.is_none(),
            consts::REASON_DELETED,
            consts::actions::DELETE,
            note,
        )
        .await;
    Ok(Action::await_change())
}

/// Deleting the S3 object of a deleted record failed (S3 down, DeleteObject refused): say so
/// loudly but without a storm — a `PruneFailed` Warning (repeats continue one event series),
/// `etcd_snapshot_prune_failures_total`, the error in the record's `status.error` (the schedule's
/// `BackupsHealthy` goes False), a log line at attempts 1, 2, 4, 8, ... — and retry with a
/// jittered, capped exponential backoff. The record keeps its finalizer: the object is still
/// there.
async fn delete_failed(
    esf: &ETCDSnapshotFile,
    api: &Api<ETCDSnapshotFile>,
    ctx: &Context,
    error: &str,
) -> Result<Action, ControllerError> {
    let retry = ctx.failures.failed(&esf.name_any());
    let schedule = esf.spec.schedule_name.clone().unwrap_or_default();
    ctx.metrics.record_prune_failure(Storage::S3, &schedule);
    let message = format!("could not delete the S3 object: {error}");
    if retry.log {
        tracing::warn!(file = %esf.name_any(), attempt = retry.attempt, retry_in = ?retry.after, error = %error, "could not delete the S3 object of a deleted record");
    }
    if let Err(e) =
        crate::operator::record_delete_failure(api, esf, &message, consts::MANAGER_CONTROLLER).await
        && retry.log
    {
        tracing::warn!(file = %esf.name_any(), error = %e, "could not record the failed deletion");
    }
    ctx.events
        .publish(
            esf,
            true,
            consts::REASON_PRUNE_FAILED,
            consts::actions::DELETE,
            format!(
                "Snapshot {} was NOT deleted from S3 ({error}); the record stays until it is, retrying",
                esf.spec.snapshot_name
            ),
        )
        .await;
    Ok(Action::requeue(retry.after))
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
    ctx.metrics.record_failure(Storage::S3, error.reason());
    let note = format!(
        "Snapshot {} was NOT deleted from S3: {error} (waited {}s); released the record and left the object at {}",
        esf.spec.snapshot_name,
        waited.as_secs(),
        esf.spec.location
    );
    release(esf, api, ctx, note).await?;
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
    if esf.labels().get(consts::LABEL_NODE) != Some(&label_value(node)) {
        // Agents act only on records whose node label names their node (the watch selects by
        // it, and the agent checks both): no agent will ever release this one.
        let note = format!(
            "Snapshot {}: the node label does not match spec.nodeName {node:?}, so no agent handles this record; released it, nothing was deleted",
            esf.spec.snapshot_name
        );
        release(esf, api, ctx, note).await?;
        return Ok(Action::await_change());
    }
    // The agent is usually alive and about to delete the file: ask the cache first, and the
    // API server about the Node only when no agent is.
    let agent_live = super::live_agents(ctx).iter().any(|a| &a.node == node);
    let node_exists = !agent_live
        && Api::<Node>::all(ctx.client.clone())
            .get_opt(node)
            .await
            .map_err(ControllerError::kube("reading a Node"))?
            .is_some();
    if node_exists || agent_live {
        // The agent will handle it; look again later in case the node goes away.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let note = format!(
        "Node {node} no longer exists and has no agent: released the record of {}; the file, if any, was left on the node",
        esf.spec.snapshot_name
    );
    release(esf, api, ctx, note).await?;
    Ok(Action::await_change())
}

/// Release the finalizer of a record whose copy is not deleted, with a Warning saying why.
async fn release(
    esf: &ETCDSnapshotFile,
    api: &Api<ETCDSnapshotFile>,
    ctx: &Context,
    note: String,
) -> Result<(), ControllerError> {
    remove_finalizer(api, esf)
        .await
        .map_err(ControllerError::kube("releasing the finalizer"))?;
    tracing::warn!(file = %esf.name_any(), %note, "released a record without deleting its copy");
    ctx.events
        .publish(
            esf,
            true,
            consts::REASON_DELETED,
            consts::actions::DELETE,
            note,
        )
        .await;
    Ok(())
}

/// Whether a valid schedule stores to `cfg`'s endpoint, bucket and folder through inline fields.
async fn inline_target_in_use(ctx: &Context, cfg: &S3Config) -> Result<bool, ControllerError> {
    ctx.caches_ready().await?;
    Ok(ctx.cache.schedules.state().iter().any(|s| {
        matches!(
            validate(&s.spec, &ctx.namespace).map(|v| v.s3),
            Ok(Some((S3Source::Inline, _, _)))
        ) && s
            .spec
            .s3
            .as_ref()
            .and_then(|inline| S3Config::from_schedule_inline(inline).ok())
            .is_some_and(|c| {
                c.endpoint == cfg.endpoint && c.bucket == cfg.bucket && c.folder == cfg.folder
            })
    }))
}
