//! Reconcile of an ETCDSnapshotSchedule: validate -> fetch (S3 settings, encryption key, the
//! records, the verification counter) -> plan the due runs -> create their records -> verify and
//! prune once nothing is in flight -> storage preflight -> status -> events. The decisions are
//! in [`super::plan`]; this file only reads and writes.

use super::plan::{self, NodeLabels, Records, Run, S3Target};
use super::preflight;
use super::validate::{S3Source, ValidSchedule, validate};
use super::{Context, ControllerError};
use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, ETCDSnapshotScheduleStatus, Storage};
use crate::consts::{self, conditions};
use crate::operator::{AgentInfo, encryption_key_from_secret, s3_config_from_secret};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reconcile one schedule. A transient failure on a generation not observed yet is reported as
/// `Reconciling=True` (kstatus: InProgress) before it is retried.
pub async fn reconcile(
    s: Arc<ETCDSnapshotSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let _timer = ctx.metrics.reconcile_started("schedule");
    let key = super::reconcile_key(s.as_ref());
    let result = crate::backoff::tracked(
        &ctx.failures,
        &key,
        reconcile_schedule(s.clone(), ctx.clone()),
    )
    .await;
    if let Err(e) = &result {
        let observed = s.status.as_ref().and_then(|st| st.observed_generation);
        if observed != s.meta().generation && !matches!(e, ControllerError::CacheClosed) {
            let status = plan::retrying_status(&s, &e.to_string(), Utc::now());
            if let Err(write) = write_status(&s, &ctx, &status).await {
                tracing::debug!(schedule = %s.name_any(), error = %write, "could not report the retry");
            }
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
    let seen = match fetch(&s, &ctx, &valid).await? {
        Fetched::Seen(seen) => seen,
        Fetched::Invalid { reason, message } => {
            return invalid(&s, &ctx, reason, &message, now).await;
        }
    };
    tracing::debug!(schedule = %s.name_any(), "reconciling schedule");
    let due = plan::runs(
        &s,
        &valid,
        &seen.files,
        seen.runs_since_verify,
        seen.last_run,
        now,
    );
    let (started, unserved) = create_runs(&s, &ctx, &valid, seen.s3.as_ref(), &due.runs).await?;
    if let Some(note) = due.missed {
        let (reason, action) = (consts::REASON_MISSED_SCHEDULE, consts::actions::SCHEDULE);
        ctx.events
            .publish(s.as_ref(), true, reason, action, note)
            .await;
    }
    let mut status = due.status;
    let pending_key = format!("on-demand/{}", s.name_any());
    let pending_retry = if plan::unserved(&s, &mut status, &unserved) {
        Some(ctx.failures.failed(&pending_key).after)
    } else {
        ctx.failures.succeeded(&pending_key);
        None
    };
    let files = ctx.schedule_files(&s.name_any());
    let agents = super::live_agents(&ctx);
    let live = live_nodes(&agents);
    if !plan::in_flight(started, &files) {
        let verification = plan::verification(&s, status.runs_since_verify, &files, &live, now);
        if let Some(v) = verification {
            request_verification(&s, &ctx, &v).await?;
            status.runs_since_verify = Some(0);
        }
        let cluster_id = plan::cluster_id(&agents);
        prune(
            &s,
            &ctx,
            &plan::prune(&s, &valid, &files, cluster_id.as_deref(), now),
        )
        .await?;
    }
    let storage_check = storage_preflight(&s, &ctx, seen.s3.as_ref()).await;
    let out = plan::status(
        &s,
        &valid,
        status,
        &files,
        &live,
        storage_check.as_ref(),
        due.next,
        now,
    );
    health_metrics(&s, &ctx, &out);
    write_status(&s, &ctx, &out.status).await?;
    // Announced once the status says so (a failed write retries the whole reconcile).
    announce(&s, &ctx, out.run_failed, out.storage_failed).await;
    let preflight_every = storage_check
        .is_some()
        .then_some(ctx.config.s3_preflight_interval);
    let wait = plan::requeue_after(due.next, now, ctx.config.resync, preflight_every);
    // An on-demand request no agent could take yet is retried with backoff (an agent that
    // registers also re-reconciles the schedule).
    Ok(Action::requeue(pending_retry.map_or(wait, |r| wait.min(r))))
}

/// What the reconcile read besides the schedule.
struct Seen {
    /// Where S3 copies go (from the config Secret or the inline settings).
    s3: Option<S3Target>,
    /// The schedule's records, from the cache.
    files: Vec<ETCDSnapshotFile>,
    /// `status.runsSinceVerify` as the API server has it (with `spec.verify`).
    runs_since_verify: Option<u32>,
    /// The newest run second this process created for the schedule.
    last_run: Option<i64>,
}

/// The outcome of [`fetch`].
enum Fetched {
    /// Everything needed was read.
    Seen(Box<Seen>),
    /// A Secret the schedule names is missing or unusable: the schedule is invalid.
    Invalid {
        reason: &'static str,
        message: String,
    },
}

/// Read what the plan needs: the S3 settings (the config Secret), the encryption key (it must be
/// there and usable before anything is snapshotted), the records, and the verification counter.
async fn fetch(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
) -> Result<Fetched, ControllerError> {
    let from_secret = match &valid.s3 {
        Some((S3Source::Secret(name), _, _)) => {
            match s3_config_from_secret(&ctx.client, &ctx.namespace, name).await {
                Ok(cfg) => Some((cfg, Some(name.clone()))),
                Err(e) if e.is_config() => return Ok(invalid_because(&e)),
                Err(e) => return Err(e.into()),
            }
        }
        Some((S3Source::Inline, _, _)) | None => None,
    };
    if let Some(r) = &valid.encryption {
        match encryption_key_from_secret(&ctx.client, &ctx.namespace, r).await {
            Ok(_) => {}
            Err(e) if e.is_config() => return Ok(invalid_because(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    ctx.caches_ready().await?;
    let name = s.name_any();
    let runs_since_verify = match s.spec.verify {
        // The verification counter must not come from a cache that has not seen the last
        // status write yet (it would request a verification twice).
        Some(_) => fresh_runs_since_verify(ctx, &name).await?,
        None => None,
    };
    Ok(Fetched::Seen(Box::new(Seen {
        s3: plan::s3_target(s, from_secret.as_ref()),
        files: ctx.schedule_files(&name),
        runs_since_verify,
        last_run: ctx.last_run(&name),
    })))
}

fn invalid_because(e: &crate::operator::OperatorError) -> Fetched {
    Fetched::Invalid {
        reason: e.reason(),
        message: e.to_string(),
    }
}

/// Create the Pending records of each run. Names are derived from the run's time, so creating
/// them twice (a restart, a second replica) finds them already there. Returns whether any record
/// was asked for, and the runs no live agent could take.
async fn create_runs(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    valid: &ValidSchedule,
    s3: Option<&S3Target>,
    runs: &[Run],
) -> Result<(bool, Vec<Run>), ControllerError> {
    let mut unserved = Vec::new();
    if runs.is_empty() {
        return Ok((false, unserved));
    }
    let agents = candidate_agents(ctx, valid).await?;
    let metadata = extra_metadata(ctx).await?;
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let schedule = s.name_any();
    let mut started = false;
    for run in runs {
        let records = match plan::records(s, valid, s3, &agents, &metadata, run) {
            Records::Create(records) => records,
            Records::NoAgent { note } => {
                let on_demand = run.is_on_demand();
                tracing::warn!(%schedule, agents = agents.len(), on_demand, "no live agent with a healthy etcd member matches");
                let (reason, action) = (consts::REASON_FAILED, consts::actions::SCHEDULE);
                ctx.events.publish(s, true, reason, action, note).await;
                ctx.metrics.record_failure(Storage::Local, "NoAgent");
                unserved.push(run.clone());
                continue;
            }
        };
        // Remembered before the creates: the next reconcile may not see them in the cache yet.
        ctx.record_run(&schedule, run.unix);
        started = true;
        for esf in records {
            match api.create(&PostParams::default(), &esf).await {
                Ok(_) => {
                    tracing::info!(%schedule, file = %esf.name_any(), "requested snapshot");
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(ControllerError::kube("creating a snapshot file")(e)),
            }
        }
    }
    Ok((started, unserved))
}

/// Live agents that may take part, per the node selector (Nodes are read only when there is one).
async fn candidate_agents(
    ctx: &Context,
    valid: &ValidSchedule,
) -> Result<Vec<AgentInfo>, ControllerError> {
    let agents = super::live_agents(ctx);
    let mut labels = NodeLabels::new();
    if !valid.node_selector.is_empty() {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        for agent in &agents {
            if let Some(node) = nodes
                .get_opt(&agent.node)
                .await
                .map_err(ControllerError::kube("reading a Node"))?
            {
                labels.insert(agent.node.clone(), node.labels().clone());
            }
        }
    }
    Ok(plan::candidates(valid, agents, &labels))
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

/// The live agents' nodes, sorted.
fn live_nodes(agents: &[AgentInfo]) -> Vec<String> {
    let mut nodes: Vec<String> = agents.iter().map(|a| a.node.clone()).collect();
    nodes.sort();
    nodes
}

/// Ask the agents for the planned verifications: a new `verify-requested-at` value and the
/// verifying node on each copy (a record deleted meanwhile is skipped).
async fn request_verification(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    v: &plan::Verification,
) -> Result<(), ControllerError> {
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    for (name, by) in &v.requests {
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                consts::ANNOTATION_VERIFY_REQUESTED_AT: v.requested_at,
                consts::ANNOTATION_VERIFY_BY: by,
            }}
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(schedule = %s.name_any(), file = %name, "requested verification");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(ControllerError::kube("requesting a verification")(e)),
        }
    }
    Ok(())
}

/// Delete the records retention dropped (their finalizers delete the files or objects), with a
/// metric and a `Pruned` event each.
async fn prune(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    prunings: &[plan::Pruning<'_>],
) -> Result<(), ControllerError> {
    let api: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let schedule = s.name_any();
    for p in prunings {
        match api.delete(&p.esf.name_any(), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(ControllerError::kube("deleting a pruned snapshot file")(e)),
        }
        ctx.metrics.record_prune(p.storage, &schedule, 1);
        let (reason, action) = (consts::REASON_PRUNED, consts::actions::PRUNE);
        ctx.events
            .publish(p.esf, false, reason, action, p.note.clone())
            .await;
    }
    Ok(())
}

/// The S3 storage check of the schedule: the remembered outcome while the settings are the same
/// and the interval has not passed, else a new preflight. `None` without S3 storage.
async fn storage_preflight(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    s3: Option<&S3Target>,
) -> Option<preflight::Outcome> {
    let (cfg, _) = s3?;
    let schedule = s.name_any();
    if let Some(o) = ctx
        .preflights
        .fresh(&schedule, cfg, ctx.config.s3_preflight_interval)
    {
        return Some(o);
    }
    let o = preflight::check(cfg).await;
    tracing::debug!(%schedule, ok = o.ok, message = %o.message, "S3 storage preflight");
    ctx.preflights.record(&schedule, cfg, &o);
    Some(o)
}

/// The schedule's health metrics, and dropping those of schedules that are gone.
fn health_metrics(s: &ETCDSnapshotSchedule, ctx: &Context, out: &plan::StatusPlan) {
    ctx.metrics
        .set_schedule_health(&s.name_any(), out.healthy, out.period.num_seconds());
    let existing = ctx
        .cache
        .schedules
        .state()
        .iter()
        .map(|s| s.name_any())
        .collect();
    ctx.metrics.retain_schedules(&existing);
}

/// The Warning events of a failed run and a failed storage check.
async fn announce(
    s: &ETCDSnapshotSchedule,
    ctx: &Context,
    run_failed: Option<String>,
    storage_failed: Option<String>,
) {
    if let Some(message) = run_failed {
        let (reason, action) = (consts::REASON_RUN_FAILED, consts::actions::SCHEDULE);
        ctx.events.publish(s, true, reason, action, message).await;
    }
    if let Some(message) = storage_failed {
        tracing::warn!(schedule = %s.name_any(), %message, "S3 storage preflight failed");
        let (reason, action) = (
            consts::REASON_STORAGE_CHECK_FAILED,
            consts::actions::PREFLIGHT,
        );
        ctx.events.publish(s, true, reason, action, message).await;
    }
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
    let (status, announce) = plan::invalid_status(s, reason, message, now);
    write_status(s, ctx, &status).await?;
    if announce {
        tracing::warn!(schedule = %s.name_any(), %message, "invalid schedule");
        let (reason, action) = (consts::REASON_INVALID, consts::actions::VALIDATE);
        ctx.events
            .publish(s, true, reason, action, message.to_string())
            .await;
    }
    ctx.metrics
        .record_reconcile_error("schedule", "InvalidSchedule");
    // Wait for a change of the schedule (or of its Secret, which is watched).
    Ok(Action::requeue(ctx.config.resync))
}
