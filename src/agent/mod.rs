//! `etcd-snapshot agent`: runs on each etcd node. It registers itself (a Lease with its snapshot
//! directory and its etcd member's health), executes the Pending ETCDSnapshotFiles of its node
//! (one etcd stream for the local and the S3 copy), deletes local files when their records are
//! deleted, and keeps its directory and the records in step. It never decides when.

mod execute;
pub mod plan;
mod settle;
mod sync;
mod verify;

use crate::api::{ETCDSnapshotFile, ETCDSnapshotFileStatus, Storage};
use crate::consts;
use crate::events::{EventsNamespace, resolve_namespace};
use crate::finalizer::{can_remove_finalizer, remove_finalizer};
use crate::metrics::Metrics;
use crate::naming::label_value;
use crate::operator::{AgentInfo, Events, OperatorError, leases, patch_file_status};
use crate::shutdown::Shutdown;
use crate::snapshot::EtcdConfig;
use crate::storage::local::LocalDir;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

/// Reconciles the agent runs at once (snapshots themselves run in their own tasks).
const RECONCILE_CONCURRENCY: u16 = 8;
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name.
    pub node: String,
    /// Operator namespace.
    pub namespace: String,
    /// Snapshot directory.
    pub dir: LocalDir,
    /// How to reach the local etcd member.
    pub etcd: EtcdConfig,
    /// Registration renew period.
    pub heartbeat: Duration,
    /// Directory sync period.
    pub sync_interval: Duration,
    /// On SIGTERM, how long a snapshot in progress may take to finish before it is cancelled.
    pub shutdown_grace: Duration,
    /// Where events about the (cluster-scoped) records go.
    pub events_namespace: EventsNamespace,
}

/// After the grace, how long cancelled snapshots get to clean up (remove the temp file, abort
/// the multipart upload, mark their records Failed) before the agent exits anyway. The chart's
/// `terminationGracePeriodSeconds` must exceed the grace plus this.
pub const SHUTDOWN_CLEANUP: Duration = Duration::from_secs(15);

/// Shared state of the agent's tasks.
pub struct Agent {
    /// API client.
    pub client: Client,
    /// Settings.
    pub config: AgentConfig,
    /// Events.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// Snapshot names being taken right now (never two at once for one name).
    running: Mutex<HashSet<String>>,
    /// This node's ETCDSnapshotFiles, as the watch sees them.
    files: Store<ETCDSnapshotFile>,
    /// Cancelled when the agent starts stopping: no new work is started.
    stopping: CancellationToken,
    /// Cancelled when the shutdown grace has passed: snapshots in progress are cancelled.
    cancel: CancellationToken,
    /// Snapshot tasks, awaited on shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Consecutive failures per record, for jittered backoff and bounded logging.
    failures: crate::backoff::Failures,
}

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An API request failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: kube::Error,
    },
    /// Operator settings could not be read.
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// Local storage failed.
    #[error(transparent)]
    Local(#[from] crate::storage::local::LocalError),
    /// S3 failed.
    #[error("{op}: {source}")]
    S3 {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: crate::storage::s3::S3Error,
    },
}

impl AgentError {
    fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> AgentError {
        move |source| AgentError::Kube { op, source }
    }

    fn reason(&self) -> &'static str {
        match self {
            AgentError::Kube { .. } => consts::errors::KUBERNETES_API,
            AgentError::Operator(e) => e.reason(),
            AgentError::Local(_) => consts::errors::LOCAL_STORAGE,
            AgentError::S3 { source, .. } => source.reason(),
        }
    }
}

/// How long a final status (Ready, Failed, Verified) is retried while the API server is
/// unreachable (e.g. restarting): a record must not stay Running because one patch was lost.
const STATUS_RETRY_FOR: Duration = Duration::from_secs(120);

impl Agent {
    fn api(&self) -> Api<ETCDSnapshotFile> {
        Api::all(self.client.clone())
    }

    /// Keep the handle of a snapshot task, for the shutdown to await.
    fn track(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// The snapshot tasks still running.
    fn take_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.tasks
            .lock()
            .map(|mut tasks| std::mem::take(&mut *tasks))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !t.is_finished())
            .collect()
    }

    /// Whether `esf` is this agent's to act on ([`plan::owns`]): the one guard every path goes
    /// through before running, patching or releasing a record.
    pub(crate) fn owns(&self, esf: &ETCDSnapshotFile) -> bool {
        plan::owns(esf, &self.config.node)
    }

    /// Write the status of record `name`, retrying with backoff for [`STATUS_RETRY_FOR`] while
    /// the API server does not answer or answers with a server error. A refusal (the record is
    /// gone, the patch is invalid) is not retried.
    pub(crate) async fn record_status(
        &self,
        name: &str,
        status: &ETCDSnapshotFileStatus,
    ) -> Result<(), OperatorError> {
        let deadline = tokio::time::Instant::now() + STATUS_RETRY_FOR;
        let mut delay = Duration::from_millis(500);
        loop {
            let err =
                match patch_file_status(&self.api(), name, status, consts::MANAGER_AGENT).await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                };
            let refused = matches!(
                &err,
                OperatorError::Kube { source: kube::Error::Api(e), .. }
                    if (400..500).contains(&e.code) && e.code != 409 && e.code != 429
            );
            if refused || tokio::time::Instant::now() + delay >= deadline {
                return Err(err);
            }
            tracing::debug!(file = %name, error = %err, "status not written yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Whether a stream of this agent is taking (or about to take) snapshot `esf`.
    fn is_taking(&self, esf: &ETCDSnapshotFile) -> bool {
        self.running
            .lock()
            .map(|r| r.contains(&esf.spec.snapshot_name))
            .unwrap_or(true)
    }

    /// The label selector of this node's records.
    fn selector(&self) -> String {
        format!("{}={}", consts::LABEL_NODE, label_value(&self.config.node))
    }

    /// Mark `esf` Failed with `message` and publish the Warning event.
    async fn fail(&self, esf: &ETCDSnapshotFile, message: &str, reason: &'static str) {
        let status = plan::failed_status(esf, message, chrono::Utc::now());
        if let Err(e) = self.record_status(&esf.name_any(), &status).await {
            tracing::warn!(file = %esf.name_any(), error = %e, "could not record the failure");
        }
        self.metrics.record_failure(esf.storage(), reason);
        self.events
            .publish(
                esf,
                true,
                consts::REASON_FAILED,
                consts::actions::SAVE,
                plan::failed_note(esf, &self.config.node, message),
            )
            .await;
    }
}

/// Key of a record's reconciles in [`Agent::failures`].
fn reconcile_key(esf: &ETCDSnapshotFile) -> String {
    format!("reconcile/{}", esf.name_any())
}

/// Reconcile one of this node's records.
async fn reconcile(esf: Arc<ETCDSnapshotFile>, agent: Arc<Agent>) -> Result<Action, AgentError> {
    let key = reconcile_key(&esf);
    crate::backoff::tracked(&agent.failures, &key, reconcile_file(esf, agent.clone())).await
}

async fn reconcile_file(
    esf: Arc<ETCDSnapshotFile>,
    agent: Arc<Agent>,
) -> Result<Action, AgentError> {
    let _timer = agent.metrics.reconcile_started("agent");
    let stopping = agent.stopping.is_cancelled();
    match plan::next_step(&esf, &agent.config.node, stopping, agent.is_taking(&esf)) {
        plan::Next::Wait => {}
        plan::Next::DeleteLocalFile => return delete_local(&esf, &agent).await,
        plan::Next::VerifyIfRequested => verify::start_if_requested(&agent, &esf),
        // E.g. restored from a snapshot taken while it was being saved: see `settle`.
        plan::Next::SettleOrphan => settle::settle(&agent, &esf).await?,
        plan::Next::TakeSnapshot => return Ok(take_soon(&esf, &agent)),
    }
    Ok(Action::await_change())
}

/// Start taking `esf`'s snapshot in a task of its own, unless a stream for it is running (the
/// copies still Pending when it ends get a stream of their own).
fn take_soon(esf: &ETCDSnapshotFile, agent: &Arc<Agent>) -> Action {
    {
        let name = esf.spec.snapshot_name.clone();
        let fresh = agent
            .running
            .lock()
            .map(|mut r| r.insert(name.clone()))
            .unwrap_or(false);
        if !fresh {
            // A stream for this snapshot is running; look again when it is done.
            return Action::requeue(Duration::from_secs(2));
        }
        let task = tokio::spawn({
            let agent = agent.clone();
            async move {
                // The controller creates the local and the S3 record one after the other: give
                // the sibling a moment to arrive so both copies come from one stream. Copies
                // still Pending after a stream (a late sibling) get a stream of their own.
                tokio::time::sleep(Duration::from_millis(800)).await;
                take_all(&agent, &name).await;
                if let Ok(mut r) = agent.running.lock() {
                    r.remove(&name);
                }
            }
        });
        agent.track(task);
    }
    Action::await_change()
}

/// Take snapshot `name` for every Pending copy of it, until none is left (or the agent stops:
/// copies not started yet stay Pending for the next agent).
async fn take_all(agent: &Agent, name: &str) {
    // The cache may still show finished copies as Pending for a moment: never take one record
    // twice.
    let mut attempted = HashSet::new();
    while !agent.stopping.is_cancelled() {
        let group: Vec<_> = pending_copies(agent, name)
            .into_iter()
            .filter(|f| !attempted.contains(&f.name_any()))
            .collect();
        if group.is_empty() {
            break;
        }
        attempted.extend(group.iter().map(|f| f.name_any()));
        execute::take_snapshot(agent, group).await;
    }
}

/// Every Pending copy of snapshot `name` on this node, as the watch sees them now.
fn pending_copies(agent: &Agent, name: &str) -> Vec<ETCDSnapshotFile> {
    let state = agent.files.state();
    plan::pending_copies(state.iter().map(AsRef::as_ref), &agent.config.node, name)
}

/// Delete the local file of a deleted record, then release its finalizer. A record whose
/// location is not in this agent's snapshot directory (made by hand) is released without
/// touching any file.
async fn delete_local(esf: &ETCDSnapshotFile, agent: &Agent) -> Result<Action, AgentError> {
    if !agent.owns(esf) {
        return Ok(Action::await_change());
    }
    let name = &esf.spec.snapshot_name;
    let inside = plan::local_name(esf, &agent.config.dir);
    // Never delete a file whose record could not be released afterwards (this agent's rights
    // are being removed, e.g. by an uninstall): the file would be gone and the record stuck.
    can_remove_finalizer(&agent.api(), esf)
        .await
        .map_err(AgentError::kube(
            "checking that the finalizer can be released (nothing was deleted)",
        ))?;
    let note = if let Some(name) = &inside {
        let deleted = match agent.config.dir.delete(name) {
            Ok(deleted) => deleted,
            Err(e) => return delete_failed(esf, agent, &e.to_string()).await,
        };
        agent.failures.succeeded(&esf.name_any());
        if deleted {
            format!("Snapshot {name} deleted")
        } else {
            format!(
                "Snapshot {name} was already gone from {}",
                agent.config.node
            )
        }
    } else {
        format!(
            "Snapshot {name}: location {} is outside the snapshot directory {}; nothing was deleted",
            esf.spec.location,
            agent.config.dir.path().display()
        )
    };
    remove_finalizer(&agent.api(), esf)
        .await
        .map_err(AgentError::kube("releasing the finalizer"))?;
    agent
        .events
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

/// Deleting the local file of a deleted record failed: a `PruneFailed` Warning (one event
/// series), `etcd_snapshot_prune_failures_total`, the error in `status.error` (the schedule's
/// `BackupsHealthy` goes False), bounded log lines, and a retry after a jittered backoff. The
/// record keeps its finalizer: the file is still there.
async fn delete_failed(
    esf: &ETCDSnapshotFile,
    agent: &Agent,
    error: &str,
) -> Result<Action, AgentError> {
    let retry = agent.failures.failed(&esf.name_any());
    let schedule = esf.spec.schedule_name.clone().unwrap_or_default();
    agent
        .metrics
        .record_prune_failure(Storage::Local, &schedule);
    if retry.log {
        tracing::warn!(file = %esf.name_any(), attempt = retry.attempt, retry_in = ?retry.after, error = %error, "could not delete the local file of a deleted record");
    }
    let message = format!("could not delete the local file: {error}");
    if let Err(e) =
        crate::operator::record_delete_failure(&agent.api(), esf, &message, consts::MANAGER_AGENT)
            .await
        && retry.log
    {
        tracing::warn!(file = %esf.name_any(), error = %e, "could not record the failed deletion");
    }
    agent
        .events
        .publish(
            esf,
            true,
            consts::REASON_PRUNE_FAILED,
            consts::actions::DELETE,
            format!(
                "Snapshot {} was NOT deleted from {} ({error}); the record stays until it is, retrying",
                esf.spec.snapshot_name, agent.config.node
            ),
        )
        .await;
    Ok(Action::requeue(retry.after))
}

/// A failed reconcile: retried after a jittered, capped exponential backoff (reset by the next
/// successful reconcile of the record) and logged at attempts 1, 2, 4, 8, ... only.
fn error_policy(esf: Arc<ETCDSnapshotFile>, error: &AgentError, agent: Arc<Agent>) -> Action {
    agent
        .metrics
        .record_reconcile_error("agent", error.reason());
    let retry = agent.failures.failed(&reconcile_key(&esf));
    if retry.log {
        tracing::warn!(file = %esf.name_any(), attempt = retry.attempt, retry_in = ?retry.after, error = %error, "agent reconcile failed");
    }
    Action::requeue(retry.after)
}

/// Renew the registration Lease, with the etcd member's health.
async fn heartbeat(agent: &Agent) -> Result<(), AgentError> {
    let mut etcd = agent.config.etcd.clone();
    etcd.connect_timeout = Duration::from_secs(3);
    let (health, cluster_id, member) = match etcd.connect().await {
        Ok(mut conn) => match conn.member_info().await {
            Ok(info) => (
                "true".to_string(),
                Some(info.cluster_id),
                Some(info.member_name),
            ),
            Err(e) => (e.to_string(), None, None),
        },
        Err(e) => (e.to_string(), None, None),
    };
    let mut annotations = BTreeMap::from([
        (
            consts::ANNOTATION_SNAPSHOT_DIR.to_string(),
            agent.config.dir.path().display().to_string(),
        ),
        (consts::ANNOTATION_ETCD_HEALTH.to_string(), health),
    ]);
    if let Some(id) = cluster_id {
        annotations.insert(consts::ANNOTATION_CLUSTER_ID.to_string(), id);
    }
    if let Some(m) = member {
        annotations.insert(consts::ANNOTATION_MEMBER.to_string(), m);
    }
    let name = AgentInfo::lease_name(&agent.config.node);
    let lease_seconds = i32::try_from(agent.config.heartbeat.as_secs().saturating_mul(3).max(3))
        .unwrap_or(i32::MAX);
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(agent.config.namespace.clone()),
            labels: Some(BTreeMap::from([(
                consts::LABEL_AGENT.to_string(),
                "true".to_string(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(agent.config.node.clone()),
            lease_duration_seconds: Some(lease_seconds),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    leases(&agent.client, &agent.config.namespace)
        .patch(
            &name,
            &PatchParams::apply(consts::MANAGER_AGENT).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(AgentError::kube("renewing the agent lease"))?;
    Ok(())
}

/// Page size of the agent's lists and of its watch's initial list: a node may hold 10,000
/// records, and one unpaged list of them is all of them in memory at once (the JSON and the
/// objects, managed fields included), memory the allocator then keeps. Smaller pages leave
/// fewer holes between the records the watch keeps (measured: 500 -> 100 saved 3 MiB of RSS at
/// 10,000 records, for 80 more list requests at start).
const LIST_PAGE: u32 = 100;

/// Every record of this node, one page at a time, each handed to `visit`.
async fn each_record(
    agent: &Agent,
    mut visit: impl FnMut(ETCDSnapshotFile),
) -> Result<(), AgentError> {
    let mut lp = ListParams::default()
        .labels(&agent.selector())
        .limit(LIST_PAGE);
    loop {
        let page = agent
            .api()
            .list(&lp)
            .await
            .map_err(AgentError::kube("listing this node's snapshot files"))?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        page.items.into_iter().for_each(&mut visit);
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Abort the S3 multipart uploads a previous run of this agent left behind (it was killed
/// mid-upload): only uploads of this node's own snapshots (the names of its S3 records) that were
/// started before this agent started, so no upload in flight (of this or another node) is touched.
async fn abort_interrupted_uploads(
    agent: &Agent,
    started: std::time::Instant,
) -> Result<usize, AgentError> {
    // One pass per distinct S3 place; names are compared per place.
    let mut places: BTreeMap<String, (ETCDSnapshotFile, HashSet<String>)> = BTreeMap::new();
    each_record(agent, |esf| {
        if esf.storage() != Storage::S3 || esf.spec.node_name != agent.config.node {
            return;
        }
        let place = esf
            .spec
            .location
            .strip_suffix(&esf.spec.snapshot_name)
            .unwrap_or(&esf.spec.location)
            .to_string();
        let name = esf.spec.snapshot_name.clone();
        places
            .entry(place)
            .or_insert_with(|| (esf, HashSet::new()))
            .1
            .insert(name);
    })
    .await?;
    let mut aborted = 0;
    for (place, (esf, names)) in places {
        let store =
            match crate::operator::s3_config_for_file(&agent.client, &agent.config.namespace, &esf)
                .await
            {
                Ok(cfg) => crate::storage::s3::S3Store::connect(&cfg).await,
                Err(e) => {
                    tracing::warn!(%place, error = %e, "cannot check for interrupted S3 uploads");
                    continue;
                }
            };
        let result = match store {
            Ok(store) => {
                store
                    .abort_stale_uploads_where(started.elapsed(), |name| names.contains(name))
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => aborted += n,
            Err(e) => tracing::warn!(%place, error = %e, "cannot abort interrupted S3 uploads"),
        }
    }
    Ok(aborted)
}

/// Entry point of `etcd-snapshot agent`. A new agent of a node waits until the previous one (the
/// old pod of a rollout, still stopping) has released the metrics port and the snapshot
/// directory's lock before it touches anything. Runs until SIGTERM or SIGINT, then stops within
/// [`AgentConfig::shutdown_grace`] plus [`SHUTDOWN_CLEANUP`]: no new work, heartbeats stop (the
/// registration Lease is left to expire or to the next agent of this node, which renews it), a
/// snapshot in progress may finish within the grace, and is cancelled after it (its records
/// Failed with the reason, no temp file, the multipart upload aborted).
pub async fn run(
    client: Client,
    config: AgentConfig,
    metrics_addr: &str,
    shutdown: Shutdown,
) -> Result<(), crate::http::HttpError> {
    let metrics = Metrics::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    // On the host network the previous pod of this node holds the port until it has stopped.
    let bound = tokio::select! {
        bound = crate::http::bind_when_free(metrics_addr, BIND_PATIENCE) => bound?,
        signal = shutdown.wait() => {
            tracing::info!(signal, "stopped before starting");
            return Ok(());
        }
    };
    let (listener, addr) = bound;
    tracing::info!(%addr, node = %config.node, "agent serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(crate::http::serve_on(listener, metrics.clone(), ready_rx));

    if let Err(e) = config.dir.ensure() {
        tracing::warn!(error = %e, "cannot create the snapshot directory");
    }
    // Nothing below may overlap with a previous agent of this node still stopping: its temp
    // file, its Running records and its upload are its own until it has exited.
    let _lock = tokio::select! {
        lock = lock_dir(&config.dir) => lock,
        signal = shutdown.wait() => {
            tracing::info!(signal, "stopped before starting");
            http.abort();
            return Ok(());
        }
    };
    let started = std::time::Instant::now();
    match config.dir.remove_partials() {
        Ok(n) if n > 0 => tracing::info!(removed = n, "removed unfinished snapshot files"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot clean unfinished snapshot files"),
    }

    let api: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let wc = watcher::Config::default()
        .labels(&format!(
            "{}={}",
            consts::LABEL_NODE,
            label_value(&config.node)
        ))
        .page_size(LIST_PAGE);
    // Bounded concurrency: at start every record is reconciled, and unbounded, 10,000 records
    // meant 10,000 reconcile futures alive at once (~140 MiB measured, never given back).
    let (files, stream, files_ready) = crate::cache::cached(api, wc);
    let controller = Controller::for_stream(stream, files.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    let agent = Arc::new(Agent {
        events: Events::new(
            client.clone(),
            &config.node,
            resolve_namespace(&client, config.events_namespace).await,
        ),
        client,
        metrics,
        running: Mutex::new(HashSet::new()),
        files,
        config,
        stopping: CancellationToken::new(),
        cancel: CancellationToken::new(),
        tasks: Mutex::new(Vec::new()),
        failures: Default::default(),
    });
    // Records left Running by a previous run of this agent (or restored from a snapshot taken
    // while they were Running) are settled by the first reconcile of each: see `settle`.
    {
        // In the background: an unreachable S3 must not hold up the agent's start.
        let agent = agent.clone();
        tokio::spawn(async move {
            match abort_interrupted_uploads(&agent, started).await {
                Ok(n) if n > 0 => tracing::info!(aborted = n, "aborted interrupted S3 uploads"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check for interrupted S3 uploads"),
            }
        });
    }
    let beat = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                match heartbeat(&agent).await {
                    Ok(()) => {
                        let _ = ready_tx.send(true);
                        let failed = agent.failures.succeeded("heartbeat");
                        if failed > 0 {
                            tracing::info!(failed, "heartbeat works again");
                        }
                    }
                    Err(e) => {
                        // Bounded: attempts 1, 2, 4, 8, ... of a failure that lasts.
                        let retry = agent.failures.failed("heartbeat");
                        if retry.log {
                            tracing::warn!(error = %e, attempt = retry.attempt, "heartbeat failed");
                        }
                    }
                }
                tokio::time::sleep(agent.config.heartbeat).await;
            }
        })
    };
    let verifier = tokio::spawn(verify::watch_others_s3_copies(agent.clone()));
    let syncer = {
        let agent = agent.clone();
        let mut files_ready = files_ready;
        // The first pass as soon as the cache is loaded, so that snapshots whose records are
        // gone (a reinstall after `helm uninstall`, files of the CLI or an older install) are
        // listed again at start and not one sync interval later.
        tokio::spawn(async move {
            loop {
                // Never compare the directory with a half-loaded cache: every file would look
                // unrecorded.
                if files_ready.wait_for(|r| *r).await.is_err() {
                    break;
                }
                match sync::sync_dir(&agent).await {
                    Err(e) => {
                        let retry = agent.failures.failed("dir-sync");
                        if retry.log {
                            tracing::warn!(error = %e, attempt = retry.attempt, "directory sync failed");
                        }
                    }
                    Ok(_) => {
                        agent.failures.succeeded("dir-sync");
                    }
                }
                tokio::time::sleep(agent.config.sync_interval).await;
            }
        })
    };
    let reconciles = controller
        .run(reconcile, error_policy, agent.clone())
        .for_each(|_| async {});
    tokio::select! {
        () = reconciles => {}
        signal = shutdown.wait() => tracing::info!(signal, "agent stopping"),
    }
    agent.stopping.cancel();
    beat.abort();
    syncer.abort();
    verifier.abort();
    stop_snapshots(&agent).await;
    http.abort();
    tracing::info!("agent stopped");
    Ok(())
}

/// How long the agent waits for its metrics address while the previous pod still holds it.
const BIND_PATIENCE: Duration = Duration::from_secs(60);
/// Pause between two attempts to take the snapshot directory's lock.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// Take the snapshot directory's agent lock, waiting while another agent of this node (the
/// previous pod, still stopping) holds it. Without a usable lock file (e.g. a read-only
/// directory, where nothing can be written anyway) the agent goes on without it.
async fn lock_dir(dir: &LocalDir) -> Option<std::fs::File> {
    let mut told = false;
    loop {
        match dir.try_lock_agent() {
            Ok(Some(lock)) => {
                if told {
                    tracing::info!("the previous agent of this node has stopped; starting");
                }
                return Some(lock);
            }
            Ok(None) => {
                if !std::mem::replace(&mut told, true) {
                    tracing::info!(
                        dir = %dir.path().display(),
                        "another agent of this node holds the snapshot directory (the previous pod, stopping); waiting for it"
                    );
                }
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the snapshot directory; starting without the hand-over guard");
                return None;
            }
        }
    }
}

/// Let the snapshots in progress finish within the grace, then cancel them and give them
/// [`SHUTDOWN_CLEANUP`] to clean up.
async fn stop_snapshots(agent: &Agent) {
    let tasks = agent.take_tasks();
    if tasks.is_empty() {
        return;
    }
    let grace = agent.config.shutdown_grace;
    tracing::info!(
        snapshots = tasks.len(),
        ?grace,
        "waiting for the snapshots in progress"
    );
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    if tokio::time::timeout(grace, &mut all).await.is_ok() {
        return;
    }
    tracing::info!("cancelling the snapshots still in progress");
    agent.cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_CLEANUP, &mut all)
        .await
        .is_err()
    {
        tracing::warn!(
            "cancelled snapshots did not finish cleaning up in time; the next agent start marks their records Failed and aborts their uploads"
        );
    }
}
