//! S3 sync: list the S3 folders the schedules use; an object without a record gets one (uploads
//! by the CLI, an older install, or k3s — `.zip` ones included); a Ready record whose object is
//! gone is removed. Records younger than a grace period are left alone, so an upload in flight
//! is never mistaken for a missing object. Objects recorded for another etcd cluster are not
//! imported: deleting such a record would delete another cluster's backup.

use super::validate::{S3Source, validate};
use super::{Context, ControllerError};
use crate::api::{ETCDSnapshotFile, Phase, Storage};
use crate::consts;
use crate::finalizer::remove_finalizer;
use crate::operator::{patch_file_status, s3_config_from_secret};
use crate::storage::catalog::StoredCopy;
use crate::storage::config::S3Config;
use crate::storage::s3::S3Store;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Records younger than this are never removed for a missing object.
const GRACE_SECONDS: i64 = 300;

/// One pass over every S3 folder in use.
pub async fn sync_s3(ctx: &Context) -> Result<(), ControllerError> {
    ctx.caches_ready().await?;
    let mut targets: BTreeMap<String, (S3Config, Option<String>)> = BTreeMap::new();
    for s in ctx.cache.schedules.state() {
        let Ok(valid) = validate(&s.spec, &ctx.namespace) else {
            continue;
        };
        let resolved = match valid.s3 {
            Some((S3Source::Secret(name), _, _)) => {
                match s3_config_from_secret(&ctx.client, &ctx.namespace, &name).await {
                    Ok(cfg) => Some((cfg, Some(name))),
                    Err(_) => None,
                }
            }
            Some((S3Source::Inline, _, _)) => s
                .spec
                .s3
                .as_ref()
                .and_then(|inline| S3Config::from_schedule_inline(inline).ok())
                .map(|cfg| (cfg, None)),
            None => None,
        };
        if let Some((cfg, secret)) = resolved {
            targets.entry(cfg.location("")).or_insert((cfg, secret));
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let cluster_id = super::current_cluster_id(ctx);
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let records: Vec<Arc<ETCDSnapshotFile>> = ctx
        .cache
        .files
        .state()
        .into_iter()
        .filter(|f| f.storage() == Storage::S3)
        .collect();
    for (prefix, (cfg, secret)) in targets {
        let store = match S3Store::connect(&cfg).await {
            Ok(store) => store,
            Err(e) => {
                let retry = ctx.failures.failed(&format!("s3-sync/{prefix}"));
                if retry.log {
                    tracing::warn!(location = %prefix, error = %e, attempt = retry.attempt, "S3 sync: cannot reach the bucket");
                }
                continue;
            }
        };
        let objects = store.list().await?;
        let listed: HashSet<String> = objects.iter().map(|o| cfg.location(&o.name)).collect();
        let known: HashSet<&str> = records.iter().map(|r| r.spec.location.as_str()).collect();
        for object in &objects {
            let copy = StoredCopy::from_s3(object, cfg.location(&object.name), cfg.to_location());
            if known.contains(copy.location.as_str()) {
                continue;
            }
            if copy.cluster_id.is_some() && cluster_id.is_some() && copy.cluster_id != cluster_id {
                continue;
            }
            import(&api, &copy, secret.as_deref()).await?;
        }
        let now = jiff::Timestamp::now().as_second();
        for record in records
            .iter()
            .filter(|r| r.spec.location.starts_with(&prefix))
        {
            let old_enough = record
                .meta()
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| now - t.0.as_second() > GRACE_SECONDS);
            if record.phase() == Phase::Ready
                && old_enough
                && record.meta().deletion_timestamp.is_none()
                && !listed.contains(&record.spec.location)
            {
                tracing::info!(file = %record.name_any(), "S3 object is gone; removing its record");
                remove_finalizer(&api, record)
                    .await
                    .map_err(ControllerError::kube("releasing the finalizer"))?;
                match api.delete(&record.name_any(), &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(ControllerError::kube("removing a record")(e)),
                }
            }
        }
    }
    Ok(())
}

async fn import(
    api: &Api<ETCDSnapshotFile>,
    copy: &StoredCopy,
    secret: Option<&str>,
) -> Result<(), ControllerError> {
    let mut esf = copy.to_esf();
    let status = esf.status.take();
    esf.spec.s3_config_secret_name = secret.map(String::from);
    esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
    match api.create(&PostParams::default(), &esf).await {
        Ok(created) => {
            if let Some(status) = status {
                patch_file_status(
                    api,
                    &created.name_any(),
                    &status,
                    consts::MANAGER_CONTROLLER,
                )
                .await?;
            }
            tracing::info!(location = %copy.location, "recorded an S3 snapshot without a record");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(ControllerError::kube("recording an S3 snapshot")(e)),
    }
}
