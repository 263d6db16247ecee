//! Reconcile of an ETCDSnapshotSchedule: validate -> dereference S3 -> decide what is due ->
//! create the tick's Pending ETCDSnapshotFiles (idempotently) -> retention -> storage preflight
//! -> status (conditions, backup health) -> events.

use super::backups;
use super::health::{
    RunCopy, Verdict, apply_last_run, apply_verdict, failure_message, last_finished_run,
};
use super::preflight;
use super::util::{as_copy, from_time, phase, set_condition_status, storage, to_time};
use super::validate::{S3Source, ValidSchedule, validate};
use super::{Context, ControllerError};
use crate::api::{
    Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotSchedule,
    ETCDSnapshotScheduleStatus, Members, Phase,
};
use crate::consts::{self, conditions};
use crate::naming::{
    Storage, esf_name, label_value, request_label, snapshot_name, with_encryption_suffix,
};
use crate::operator::{
    AgentInfo, OperatorError, encryption_key_from_secret, s3_config_from_secret,
};
use crate::prune::{Scope, plan};
use crate::schedule::Due;
use crate::storage::config::S3Config;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What one run (a tick or an on-demand request) is labelled with.
struct Run {
    unix: i64,
    label: (&'static str, String),
}

/// Reconcile one schedule. A transient failure on a generation not observed yet is reported as
/// `Reconciling=True` (kstatus: InProgress) before it is retried.
pub async fn reconcile(
    s: Arc<ETCDSnapshotSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let _timer = ctx.metrics.reconcile_started("schedule");
    let result = reconcile_schedule(s.clone(), ctx.clone()).await;
    if result.is_ok() {
        ctx.failures.succeeded(&super::reconcile_key(s.as_ref()));
    }
    if let Err(e) = &result {
        let observed = s.status.as_ref().and_then(|st| st.observed_generation);
        if observed != s.meta().generation
            && !matches!(e, ControllerError::CacheClosed)
            && let Err(write) = retrying(&s, &ctx, e).await
        {
            tracing::debug!(schedule = %s.name_any(), error = %write, "could not report the retry");
        }
    }
    result
}

async fn reconcile_schedule(
    s: Arc<ETCDSnapshotSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let now = Utc::now();
    let valid = match validate(&s.spec, &ctx.namespace) {
        Ok(v) => v,
        Err(message) => {
            return invalid(&s, &ctx, conditions::REASON_INVALID_SPEC, &message, now).await;
        }
    };
    let s3 = match dereference_s3(&valid, &ctx).await {
        Ok(cfg) => cfg,
        Err(e) if e.is_config() => {
            return invalid(&s, &ctx, e.reason(), &e.to_string(), now).await;
        }
        Err(e) => return Err(e.into()),
    };
    // The encryption key must be there and usable before anything is snapshotted.
    if let Some(r) = &valid.encryption {
        match encryption_key_from_secret(&ctx.client, &ctx.namespace, r).await {
            Ok(_) => {}
            Err(e) if e.is_config() => {
                return invalid(&s, &ctx, e.reason(), &e.to_string(), now).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    ctx.caches_ready().await?;
    let schedule = s.name_any();
    tracing::debug!(%schedule, "reconciling schedule");
    let files = ctx.schedule_files(&schedule);
    let mut status = s.status.clone().unwrap_or_default();
    // Whether this reconcile started a run (the cache may not show its records yet).
    let mut started = false;
    // When to look again at an on-demand request no agent could serve yet.
    let mut pending_retry = None;
    if s.spec.verify.is_some() {
        // The verification counter must not come from a cache that has not seen the last
        // status write yet (it would request a verification twice).
        status.runs_since_verify = fresh_runs_since_verify(&ctx, &s.name_any()).await?;
    }

    // On-demand request through the annotation.
    if let Some(requested) = s.annotations().get(consts::ANNOTATION_REQUESTED_AT)
        && status.last_requested_at.as_deref() != Some(requested.as_str())
    {
        // Snapshot names carry whole seconds: a run must not reuse a second another run of
        // this schedule already has, or its records would collide with that run's.
        let taken = files
            .iter()
            .filter_map(run_time)
            .chain(ctx.last_run(&schedule))
            .max()
            .unwrap_or(i64::MIN);
        let run = Run {
            unix: now.timestamp().max(taken.saturating_add(1)),
            label: (consts::LABEL_REQUEST, request_label(requested)),
        };
        let already = files
            .iter()
            .any(|f| f.labels().get(run.label.0) == Some(&run.label.1));
        let served = already || create_run(&s, &ctx, &valid, s3.as_ref(), &run).await?;
        let key = pending_request_key(&schedule);
        if served {
            started |= !already;
            if !already {
                count_run(&s, &mut status);
            }
            status.last_requested_at = Some(requested.clone());
            ctx.failures.succeeded(&key);
        } else {
            // No live agent matches (e.g. right after a control-plane restart or a restore, before
            // the agents' next renewal): the request stays pending rather than being dropped, and
            // is retried with backoff (an agent's registration also re-reconciles the schedule).
            pending_retry = Some(ctx.failures.failed(&key).after);
        }
    }

    // Scheduled ticks.
    let created = s
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    let last = status.last_schedule_time.as_ref().map(from_time);
    let next = match valid
        .schedule
        .due(last, created, now, valid.starting_deadline)
    {
        Due::Run { tick } if !s.spec.suspend => {
            let run = Run {
                unix: tick.timestamp(),
                label: (consts::LABEL_TICK, tick.timestamp().to_string()),
            };
            started |= create_run(&s, &ctx, &valid, s3.as_ref(), &run).await?;
            count_run(&s, &mut status);
            status.last_schedule_time = Some(to_time(tick));
            valid.schedule.next_after(now)
        }
        Due::Run { tick } => {
            status.last_schedule_time = Some(to_time(tick));
            valid.schedule.next_after(now)
        }
        Due::Missed { latest, next } => {
            if !s.spec.suspend {
                ctx.events
                    .publish(
                        s.as_ref(),
                        true,
                        consts::REASON_MISSED_SCHEDULE,
                        consts::actions::SCHEDULE,
                        format!(
                            "missed the tick of {} (more than the starting deadline late); waiting for the next",
                            latest.to_rfc3339()
                        ),
                    )
                    .await;
            }
            status.last_schedule_time = Some(to_time(latest));
            next
        }
        Due::Wait { next } => next,
    };

    // Retention once nothing of this schedule is in flight.
    let files = ctx.schedule_files(&schedule);
    let in_flight = started
        || files.iter().any(|f| {
            matches!(phase(f), Phase::Pending | Phase::Running)
                && f.meta().deletion_timestamp.is_none()
        });
    if !in_flight {
        request_verification(&s, &ctx, &mut status, &files, now).await?;
        prune(&s, &ctx, &valid, &files, now).await?;
    }

    let storage_check = storage_preflight(&s, &ctx, s3.as_ref()).await;
    let run_failed = update_status(&s, &ctx, &valid, &mut status, &files, next, now);
    let storage_failed = preflight::apply(
        &mut status.conditions,
        storage_check.as_ref(),
        s.meta().generation,
        now,
    );
    write_status(&s, &ctx, &status).await?;
    // Announced once the status says so (a failed write retries the whole reconcile).
    if let Some(message) = run_failed {
        ctx.events
            .publish(
                s.as_ref(),
                true,
                consts::REASON_RUN_FAILED,
                consts::actions::SCHEDULE,
                message,
            )
            .await;
    }
    if let Some(message) = storage_failed {
        tracing::warn!(%schedule, %message, "S3 storage preflight failed");
        ctx.events
            .publish(
                s.as_ref(),
                true,
                consts::REASON_STORAGE_CHECK_FAILED,
                consts::actions::PREFLIGHT,
                message,
            )
            .await;
    }
    let mut wait = next
        .map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_secs(1))
        .unwrap_or(Duration::from_secs(3600))
        .min(ctx.config.resync);
    if storage_check.is_some() {
        wait = wait.min(ctx.config.s3_preflight_interval + Duration::from_secs(1));
    }
    if let Some(retry) = pending_retry {
        wait = wait.min(retry);
    }
    Ok(Action::requeue(wait))
}

/// Key of a schedule's pending on-demand request in [`Context::failures`].
fn pending_request_key(schedule: &str) -> String {
    format!("on-demand/{schedule}")
}

/// The S3 storage check of the schedule: the remembered outcome while the settings are the same
/// and the interval has not passed, else a new preflight. `None` without S3 storage.
async fn storage_preflight(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    secret_cfg: Option<&(S3Config, Option<String>)>,
) -> Option<preflight::Outcome> {
    let cfg = match secret_cfg {
        Some((cfg, _)) => cfg.clone(),
        None => {
            let inline = s.spec.s3.as_ref().filter(|s3| s3.enabled)?;
            S3Config::from_schedule_inline(inline).ok()?
        }
    };
    let schedule = s.name_any();
    if let Some(o) = ctx
        .preflights
        .fresh(&schedule, &cfg, ctx.config.s3_preflight_interval)
    {
        return Some(o);
    }
    let o = preflight::check(&cfg).await;
    tracing::debug!(%schedule, ok = o.ok, message = %o.message, "S3 storage preflight");
    ctx.preflights.record(&schedule, &cfg, &o);
    Some(o)
}

async fn dereference_s3(
    valid: &ValidSchedule,
    ctx: &Context,
) -> Result<Option<(S3Config, Option<String>)>, OperatorError> {
    match &valid.s3 {
        None => Ok(None),
        Some((S3Source::Secret(name), _, _)) => {
            let cfg = s3_config_from_secret(&ctx.client, &ctx.namespace, name).await?;
            Ok(Some((cfg, Some(name.clone()))))
        }
        Some((S3Source::Inline, _, _)) => Ok(None),
    }
}

/// Live agents that may take part, per the node selector.
async fn candidate_agents(
    ctx: &Context,
    valid: &ValidSchedule,
) -> Result<Vec<AgentInfo>, ControllerError> {
    let mut agents = super::live_agents(ctx);
    if !valid.node_selector.is_empty() {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let mut keep = Vec::new();
        for agent in agents {
            let matches = match nodes
                .get_opt(&agent.node)
                .await
                .map_err(ControllerError::kube("reading a Node"))?
            {
                Some(node) => valid
                    .node_selector
                    .iter()
                    .all(|(k, v)| node.labels().get(k) == Some(v)),
                None => false,
            };
            if matches {
                keep.push(agent);
            }
        }
        agents = keep;
    }
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(agents)
}

/// Create the Pending ESFs of one run. Names are derived from the run's time, so creating
/// them twice (a restart, a second replica) finds them already there. Returns whether any
/// record was asked for.
async fn create_run(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
    s3: Option<&(S3Config, Option<String>)>,
    run: &Run,
) -> Result<bool, ControllerError> {
    let agents = candidate_agents(ctx, valid).await?;
    let chosen: Vec<&AgentInfo> = match valid.members {
        Members::All => agents.iter().collect(),
        Members::One => {
            let healthy: Vec<&AgentInfo> = agents.iter().filter(|a| a.etcd_healthy).collect();
            let n = healthy.len() as i64;
            if n == 0 {
                Vec::new()
            } else {
                // Rotate through the healthy members from tick to tick.
                let i = usize::try_from(run.unix.rem_euclid(n)).unwrap_or(0);
                vec![healthy[i]]
            }
        }
    };
    if chosen.is_empty() {
        let on_demand = run.label.0 == consts::LABEL_REQUEST;
        tracing::warn!(schedule = %s.name_any(), agents = agents.len(), on_demand, "no live agent with a healthy etcd member matches");
        let note = if on_demand {
            "no live agent with a healthy etcd member matches this schedule; the on-demand request stays pending and is retried"
        } else {
            "no live agent with a healthy etcd member matches this schedule; nothing was snapshotted"
        };
        ctx.events
            .publish(
                s,
                true,
                consts::REASON_FAILED,
                consts::actions::SCHEDULE,
                note.into(),
            )
            .await;
        ctx.metrics.record_failure(Storage::Local, "NoAgent");
        return Ok(false);
    }
    ctx.record_run(&s.name_any(), run.unix);
    let metadata = extra_metadata(ctx).await?;
    let compression = if valid.zstd_level.is_some() {
        Compression::Zstd
    } else {
        Compression::None
    };
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let schedule = s.name_any();
    for agent in chosen {
        let name = with_encryption_suffix(
            snapshot_name(&valid.prefix, &agent.node, run.unix, compression),
            valid.encryption.is_some(),
        );
        let mut copies = Vec::new();
        if valid.local.is_some() {
            let dir = agent.snapshot_dir.trim_end_matches('/');
            copies.push((Storage::Local, format!("file://{dir}/{name}"), None, None));
        }
        if let Some((cfg, secret)) = s3 {
            copies.push((
                Storage::S3,
                cfg.location(&name),
                Some(cfg.to_location()),
                secret.clone(),
            ));
        } else if let Some(inline) = s.spec.s3.as_ref().filter(|s3| s3.enabled)
            && let Ok(cfg) = S3Config::from_schedule_inline(inline)
        {
            copies.push((
                Storage::S3,
                cfg.location(&name),
                Some(cfg.to_location()),
                None,
            ));
        }
        for (storage, location, s3_location, secret) in copies {
            let mut esf = ETCDSnapshotFile::new(
                &esf_name(storage, &name, &agent.node, &location),
                ETCDSnapshotFileSpec {
                    snapshot_name: name.clone(),
                    node_name: agent.node.clone(),
                    location,
                    s3: s3_location,
                    metadata: (!metadata.is_empty()).then(|| metadata.clone()),
                    compression,
                    compression_level: valid.zstd_level,
                    schedule_name: Some(schedule.clone()),
                    s3_config_secret_name: secret,
                    encryption: s.spec.encryption.clone(),
                },
            );
            let storage_label = match storage {
                Storage::Local => label_value(&agent.node),
                Storage::S3 => consts::STORAGE_S3.to_string(),
            };
            let mut labels = BTreeMap::from([
                (consts::LABEL_STORAGE.to_string(), storage_label),
                (consts::LABEL_NODE.to_string(), label_value(&agent.node)),
                (consts::LABEL_SCHEDULE.to_string(), label_value(&schedule)),
                (run.label.0.to_string(), run.label.1.clone()),
            ]);
            if let Some(id) = &agent.cluster_id {
                labels.insert(consts::LABEL_CLUSTER_ID.to_string(), label_value(id));
            }
            esf.metadata.labels = Some(labels);
            esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
            match api.create(&PostParams::default(), &esf).await {
                Ok(_) => {
                    tracing::info!(schedule = %schedule, file = %esf.name_any(), "requested snapshot");
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(ControllerError::kube("creating a snapshot file")(e)),
            }
        }
    }
    Ok(true)
}

/// `status.runs_since_verify` as the API server has it now (a list, which reads through to
/// etcd, rather than the watch cache; the controller has no `get` on schedules).
async fn fresh_runs_since_verify(
    ctx: &Context,
    name: &str,
) -> Result<Option<u32>, ControllerError> {
    let api: Api<ETCDSnapshotSchedule> = Api::all(ctx.client.clone());
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api
        .list(&lp)
        .await
        .map_err(ControllerError::kube("reading the schedule's status"))?
        .items
        .into_iter()
        .next()
        .and_then(|s| s.status)
        .and_then(|st| st.runs_since_verify))
}

/// Count a created run towards the next scheduled verification.
fn count_run(s: &ETCDSnapshotSchedule, status: &mut ETCDSnapshotScheduleStatus) {
    if s.spec.verify.is_some() {
        status.runs_since_verify = Some(status.runs_since_verify.unwrap_or(0).saturating_add(1));
    }
}

/// With `spec.verify`, once `everyRuns` runs were created and none is in flight: ask the agents
/// to verify every Ready copy of the newest run that has one (a new
/// `verify-requested-at` value on each copy), and start counting again.
async fn request_verification(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    status: &mut ETCDSnapshotScheduleStatus,
    files: &[ETCDSnapshotFile],
    now: DateTime<Utc>,
) -> Result<(), ControllerError> {
    let Some(verify) = &s.spec.verify else {
        return Ok(());
    };
    if status.runs_since_verify.unwrap_or(0) < verify.every_runs.max(1) {
        return Ok(());
    }
    let ready: Vec<&ETCDSnapshotFile> = files
        .iter()
        .filter(|f| phase(f) == Phase::Ready && f.meta().deletion_timestamp.is_none())
        .collect();
    let Some(newest) = ready.iter().filter_map(|f| run_time(f)).max() else {
        return Ok(());
    };
    let value = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let mut live: Vec<String> = super::live_agents(ctx)
        .into_iter()
        .map(|a| a.node)
        .collect();
    live.sort();
    for f in ready.iter().filter(|f| run_time(f) == Some(newest)) {
        // A local copy can only be read on its node (its agent verifies it when it is back);
        // an S3 copy by any agent.
        let node = &f.spec.node_name;
        let by = match storage(f) {
            Storage::S3 if !live.contains(node) => live.first().unwrap_or(node),
            _ => node,
        };
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                consts::ANNOTATION_VERIFY_REQUESTED_AT: value,
                consts::ANNOTATION_VERIFY_BY: by,
            }}
        });
        match api
            .patch(
                &f.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(schedule = %s.name_any(), file = %f.name_any(), "requested verification");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(ControllerError::kube("requesting a verification")(e)),
        }
    }
    status.runs_since_verify = Some(0);
    Ok(())
}

/// The data of the optional extra-metadata ConfigMap.
async fn extra_metadata(ctx: &Context) -> Result<BTreeMap<String, String>, ControllerError> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(cms
        .get_opt(consts::EXTRA_METADATA_CONFIGMAP)
        .await
        .map_err(ControllerError::kube(
            "reading the extra-metadata ConfigMap",
        ))?
        .and_then(|cm| cm.data)
        .unwrap_or_default())
}

/// Apply retention to the schedule's Ready copies of this cluster; deleting an ESF lets its
/// finalizer delete the file or object.
async fn prune(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
    files: &[ETCDSnapshotFile],
    now: DateTime<Utc>,
) -> Result<(), ControllerError> {
    let live = files
        .iter()
        .filter(|f| f.meta().deletion_timestamp.is_none());
    let copies: Vec<_> = live.clone().filter_map(as_copy).collect();
    let cluster_id = super::current_cluster_id(ctx);
    let local = valid.local.clone().unwrap_or_default();
    let (s3_policy, scope) = match &valid.s3 {
        Some((_, p, scope)) => (
            p.clone(),
            match scope {
                crate::api::RetentionScope::Node => Scope::Node,
                crate::api::RetentionScope::Cluster => Scope::Cluster,
            },
        ),
        None => (Default::default(), Scope::Node),
    };
    let mut plan = plan(
        &copies,
        &valid.prefix,
        &local,
        &s3_policy,
        scope,
        cluster_id.as_deref(),
        now,
    );
    // Local copies of a schedule with local storage off, or S3 copies with S3 off, are left to
    // the user: only prune what the policy covers.
    plan.decisions.retain(|(c, _)| match c.storage {
        Storage::Local => valid.local.is_some(),
        Storage::S3 => valid.s3.is_some(),
    });
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let schedule = s.name_any();
    for (copy, decision) in plan.deletions() {
        let Some(esf) = live
            .clone()
            .find(|f| f.spec.location == copy.location && storage(f) == copy.storage)
        else {
            continue;
        };
        match api.delete(&esf.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(ControllerError::kube("deleting a pruned snapshot file")(e)),
        }
        ctx.metrics.record_prune(copy.storage, &schedule, 1);
        ctx.events
            .publish(
                esf,
                false,
                consts::REASON_PRUNED,
                consts::actions::PRUNE,
                format!(
                    "Snapshot {} pruned from {} by schedule {schedule}: {}",
                    copy.name,
                    copy.storage.as_str(),
                    decision.reason
                ),
            )
            .await;
    }
    Ok(())
}

/// Fill in the status from the records (counts, times, `Ready`, `LastRunSucceeded`,
/// `BackupsHealthy`). Returns the message of a failed run the status did not show yet (to be
/// announced once the status is written).
fn update_status(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
    status: &mut ETCDSnapshotScheduleStatus,
    files: &[ETCDSnapshotFile],
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    let live: Vec<&ETCDSnapshotFile> = files
        .iter()
        .filter(|f| f.meta().deletion_timestamp.is_none())
        .collect();
    status.ready_snapshots = count(&live, Phase::Ready);
    status.failed_snapshots = count(&live, Phase::Failed);
    // The newest run whose copies all finished decides lastSuccessfulTime.
    let mut runs: BTreeMap<i64, Vec<Phase>> = BTreeMap::new();
    for f in &live {
        if let Some(t) = run_time(f) {
            runs.entry(t).or_default().push(phase(f));
        }
    }
    if let Some((t, _)) = runs
        .iter()
        .rev()
        .find(|(_, phases)| phases.iter().all(|p| *p == Phase::Ready))
    {
        let t = DateTime::from_timestamp(*t, 0).unwrap_or_default();
        let newer = status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| from_time(old) < t);
        if newer {
            status.last_successful_time = Some(to_time(t));
        }
    }
    status.next_schedule_time = next.map(to_time);
    status.observed_generation = s.meta().generation;
    let generation = s.meta().generation;
    apply_verdict(
        &mut status.conditions,
        Verdict::Valid {
            suspended: s.spec.suspend,
        },
        generation,
        now,
    );
    let copies: Vec<RunCopy> = live.iter().filter_map(|f| run_copy(f)).collect();
    let outcome = last_finished_run(&copies);
    let failure = outcome.as_ref().and_then(failure_message);
    let reported = |list: &[Condition]| {
        list.iter()
            .find(|c| c.type_ == conditions::LAST_RUN_SUCCEEDED && c.status == "False")
            .map(|c| c.message.clone())
    };
    let already = s.status.as_ref().and_then(|st| reported(&st.conditions));
    apply_last_run(&mut status.conditions, outcome.as_ref(), generation, now);
    let health = backup_health(s, ctx, valid, status, files, failure.as_deref(), now);
    set_condition_status(
        &mut status.conditions,
        conditions::BACKUPS_HEALTHY,
        health.status,
        health.reason,
        &health.message,
        generation,
        now,
    );
    failure.filter(|m| already.as_ref() != Some(m))
}

/// Advance `status.storages` and `status.newestBackupTime` from the records, and decide
/// `BackupsHealthy`.
fn backup_health(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
    status: &mut ETCDSnapshotScheduleStatus,
    files: &[ETCDSnapshotFile],
    last_run_failure: Option<&str>,
    now: DateTime<Utc>,
) -> backups::Health {
    let facts: Vec<backups::CopyFact> = files.iter().filter_map(copy_fact).collect();
    let mut nodes: Vec<String> = super::live_agents(ctx)
        .into_iter()
        .map(|a| a.node)
        .collect();
    nodes.sort();
    let (local, s3) = (valid.local.is_some(), valid.s3.is_some());
    status.storages = backups::merge_storages(&status.storages, &facts, local, s3, &nodes);
    status.newest_backup_time = backups::newest_backup(&status.storages).map(to_time);
    let created = s
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    let period = valid.schedule.period_estimate(now);
    let health = backups::decide(&backups::HealthInput {
        copies: &facts,
        storages: &status.storages,
        period,
        created,
        now,
        suspended: s.spec.suspend,
        local,
        s3,
        per_node: valid.members == Members::All,
        nodes: &nodes,
        last_run_failure,
    });
    let healthy = match health.status {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    };
    ctx.metrics
        .set_schedule_health(&s.name_any(), healthy, period.num_seconds());
    let existing = ctx
        .cache
        .schedules
        .state()
        .iter()
        .map(|s| s.name_any())
        .collect();
    ctx.metrics.retain_schedules(&existing);
    health
}

/// A record as health sees it. A record being deleted whose `status.error` is newer than its
/// deletion is a copy whose deletion failed (the controller or agent wrote why).
fn copy_fact(f: &ETCDSnapshotFile) -> Option<backups::CopyFact> {
    let error = f.status.as_ref().and_then(|st| st.error.as_ref());
    let delete_failed = match (&f.meta().deletion_timestamp, error) {
        (Some(deleting), Some(e)) if e.time.as_ref().is_some_and(|t| t.0 >= deleting.0) => {
            Some(e.message.clone().unwrap_or_default())
        }
        _ => None,
    };
    Some(backups::CopyFact {
        storage: storage(f),
        node: f.spec.node_name.clone(),
        at: DateTime::from_timestamp(run_time(f)?, 0)?,
        phase: phase(f),
        delete_failed,
    })
}

/// A record as a copy of its run (records whose name carries no run time are not run copies).
fn run_copy(f: &ETCDSnapshotFile) -> Option<RunCopy> {
    Some(RunCopy {
        run: run_time(f)?,
        name: f.name_any(),
        phase: phase(f),
        error: f
            .status
            .as_ref()
            .and_then(|st| st.error.as_ref())
            .and_then(|e| e.message.clone()),
    })
}

fn count(files: &[&ETCDSnapshotFile], p: Phase) -> u32 {
    u32::try_from(files.iter().filter(|f| phase(f) == p).count()).unwrap_or(u32::MAX)
}

/// The unix time of the run an ESF belongs to (from its snapshot name).
fn run_time(f: &ETCDSnapshotFile) -> Option<i64> {
    crate::naming::parse_snapshot_name(&f.spec.snapshot_name).map(|p| p.unix_seconds)
}

async fn write_status(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    status: &ETCDSnapshotScheduleStatus,
) -> Result<(), ControllerError> {
    if s.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ETCDSnapshotSchedule> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &s.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| {
        tracing::debug!(patch = %patch, "status patch refused");
        ControllerError::kube("updating schedule status")(e)
    })?;
    Ok(())
}

/// Mark the schedule Stalled with `reason` and `message`; the Warning event is published only
/// when the message changes, so resyncs do not spam.
async fn invalid(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<Action, ControllerError> {
    let mut status = s.status.clone().unwrap_or_default();
    let before = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::STALLED && c.status == "True")
        .map(|c| c.message.clone());
    let generation = s.meta().generation;
    apply_verdict(
        &mut status.conditions,
        Verdict::Stalled { reason, message },
        generation,
        now,
    );
    status.observed_generation = generation;
    status.next_schedule_time = None;
    write_status(s, ctx, &status).await?;
    if before.as_deref() != Some(message) {
        tracing::warn!(schedule = %s.name_any(), %message, "invalid schedule");
        ctx.events
            .publish(
                s,
                true,
                consts::REASON_INVALID,
                consts::actions::VALIDATE,
                message.to_string(),
            )
            .await;
    }
    ctx.metrics
        .record_reconcile_error("schedule", "InvalidSchedule");
    // Wait for a change of the schedule (or of its Secret, which is watched).
    Ok(Action::requeue(ctx.config.resync))
}

/// Report that the reconcile of a new generation failed on `error` and is retried
/// (`Reconciling=True`: kstatus InProgress, not Failed).
async fn retrying(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    error: &ControllerError,
) -> Result<(), ControllerError> {
    let mut status = s.status.clone().unwrap_or_default();
    let generation = s.meta().generation;
    let message = format!(
        "generation {} is not reconciled yet ({error}); retrying",
        generation.unwrap_or_default()
    );
    apply_verdict(
        &mut status.conditions,
        Verdict::Retrying { message: &message },
        generation,
        Utc::now(),
    );
    status.observed_generation = generation;
    write_status(s, ctx, &status).await
}
