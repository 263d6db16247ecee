//! `etcd-snapshot controller`: the leader-elected in-cluster controller. It decides when and
//! where snapshots are taken (by creating Pending ETCDSnapshotFiles), applies retention, deletes
//! S3 copies on ESF deletion, releases local copies of vanished nodes, and garbage-collects
//! failed records. It never talks to etcd.

pub mod backups;
mod files;
pub mod health;
pub mod k3s;
pub mod plan;
pub mod preflight;
mod schedule;
mod sync;
pub mod validate;

use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule};
use crate::backoff::RetryKind;
use crate::cache::cached;
use crate::consts;
use crate::events::{EventsNamespace, resolve_namespace};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::operator::{AgentInfo, Events, OperatorError, leases};
use crate::shutdown::Shutdown;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Reconciles each controller runs at once.
const RECONCILE_CONCURRENCY: u16 = 16;

/// Tunables (flags in the binary; shortened in tests).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Longest wait between two reconciles of a schedule.
    pub resync: Duration,
    /// Failed ETCDSnapshotFiles are deleted this long after they failed.
    pub failed_ttl: Duration,
    /// How often the S3 folders in use are compared with the records.
    pub s3_sync_interval: Duration,
    /// A deleted S3 record whose S3 settings stay unreadable this long is released without
    /// deleting its object (a Warning event says where the object is).
    pub s3_release_after: Duration,
    /// How often each schedule's S3 storage is checked again (also at every settings change).
    pub s3_preflight_interval: Duration,
    /// Leader election timing.
    pub lease: LeaseConfig,
    /// Where events about the (cluster-scoped) schedules and records go.
    pub events_namespace: EventsNamespace,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            resync: Duration::from_secs(300),
            failed_ttl: Duration::from_secs(24 * 3600),
            s3_sync_interval: Duration::from_secs(600),
            s3_release_after: Duration::from_secs(3600),
            s3_preflight_interval: Duration::from_secs(3600),
            lease: LeaseConfig::default(),
            events_namespace: EventsNamespace::Auto,
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator namespace (Secrets, ConfigMap, Leases).
    pub namespace: String,
    /// Event publisher.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// Tunables.
    pub config: ControllerConfig,
    /// Watch caches: reconciles read these instead of listing.
    pub cache: Caches,
    /// One flag per cache, set once its first complete listing is in.
    ready: Vec<tokio::sync::watch::Receiver<bool>>,
    /// The newest run (unix second) this process created per schedule: the cache may not show
    /// a run's records yet when the next reconcile comes, and a run must never reuse a second.
    runs: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Consecutive failures per object, for jittered backoff and bounded logging.
    pub failures: crate::backoff::Failures,
    /// The S3 settings each schedule's storage was last checked with, and when.
    pub preflights: preflight::Checked,
}

/// Caches of the watched objects, filled by the controllers' watches. Reading them costs no API
/// request, so reconciles at 10,000 snapshot files stay cheap.
#[derive(Clone)]
pub struct Caches {
    /// Every ETCDSnapshotFile.
    pub files: Store<ETCDSnapshotFile>,
    /// Every ETCDSnapshotSchedule.
    pub schedules: Store<ETCDSnapshotSchedule>,
    /// The agents' registration Leases.
    pub agents: Store<Lease>,
}

/// What the reconcilers share besides the caches (made before the watches start).
pub struct ContextParts {
    /// API client.
    pub client: Client,
    /// Operator namespace.
    pub namespace: String,
    /// Event publisher.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// Tunables.
    pub config: ControllerConfig,
}

impl Context {
    /// Wait until the caches hold a complete first listing. (Not `Store::wait_until_ready`:
    /// it wakes only one of several concurrent waiters, and the controllers' runners already
    /// wait on it.)
    pub async fn caches_ready(&self) -> Result<(), ControllerError> {
        for ready in &self.ready {
            let mut ready = ready.clone();
            ready
                .wait_for(|r| *r)
                .await
                .map_err(|_| ControllerError::CacheClosed)?;
        }
        Ok(())
    }

    /// Every ETCDSnapshotFile of a schedule, from the cache.
    pub fn schedule_files(&self, schedule: &str) -> Vec<ETCDSnapshotFile> {
        let label = crate::naming::label_value(schedule);
        self.cache
            .files
            .state()
            .iter()
            .filter(|f| f.labels().get(consts::LABEL_SCHEDULE) == Some(&label))
            .map(|f| f.as_ref().clone())
            .collect()
    }

    /// The newest run second this process created for `schedule`.
    pub fn last_run(&self, schedule: &str) -> Option<i64> {
        self.runs
            .lock()
            .ok()
            .and_then(|runs| runs.get(schedule).copied())
    }

    /// Remember a run this process created.
    pub fn record_run(&self, schedule: &str, unix: i64) {
        if let Ok(mut runs) = self.runs.lock() {
            let e = runs.entry(schedule.to_string()).or_insert(unix);
            *e = (*e).max(unix);
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API request failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: kube::Error,
    },
    /// Reading operator settings failed.
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// An S3 operation failed.
    #[error(transparent)]
    S3(#[from] crate::storage::s3::S3Error),
    /// The watch caches stopped (the process is shutting down).
    #[error("the watch caches stopped")]
    CacheClosed,
}

impl ControllerError {
    /// Wrap a kube error with what was being done.
    pub fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> ControllerError {
        move |source| ControllerError::Kube { op, source }
    }

    /// PascalCase reason for events and metrics (a [`consts::errors`] category).
    pub fn reason(&self) -> &'static str {
        match self {
            ControllerError::Kube { .. } => consts::errors::KUBERNETES_API,
            ControllerError::Operator(e) => e.reason(),
            ControllerError::S3(_) => consts::errors::S3,
            ControllerError::CacheClosed => consts::errors::CACHE_CLOSED,
        }
    }

    /// How the reconcile that failed with this error is retried.
    pub fn retry_kind(&self) -> RetryKind {
        match self {
            ControllerError::Operator(e) if e.is_config() => RetryKind::Config,
            ControllerError::Kube { source, .. }
            | ControllerError::Operator(OperatorError::Kube { source, .. }) => {
                RetryKind::of_kube(source)
            }
            ControllerError::Operator(_)
            | ControllerError::S3(_)
            | ControllerError::CacheClosed => RetryKind::Other,
        }
    }

    /// Whether this error is worth a Warning Event about the object whose reconcile failed (not
    /// the caches closing at shutdown).
    pub fn is_reported(&self) -> bool {
        !matches!(self, ControllerError::CacheClosed)
    }
}

/// Agents whose registration Lease was renewed recently (from the cache).
pub fn live_agents(ctx: &Context) -> Vec<AgentInfo> {
    let now = jiff::Timestamp::now();
    ctx.cache
        .agents
        .state()
        .iter()
        .filter_map(|l| AgentInfo::from_lease(l))
        .filter(|a| a.is_live(now))
        .collect()
}

/// The etcd cluster ID the live agents report (the most common one).
pub fn current_cluster_id(ctx: &Context) -> Option<String> {
    plan::cluster_id(&live_agents(ctx))
}

/// What of an agent Lease matters to schedules: not its renewals, which come every few
/// seconds from every agent and would otherwise re-reconcile every schedule each time.
fn lease_fingerprint(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    format!(
        "{:?}|{:?}|{:?}",
        spec.and_then(|s| s.holder_identity.as_ref()),
        lease.metadata.annotations,
        lease.metadata.deletion_timestamp,
    )
}

/// Key of an object in [`Context::failures`] for its reconciles.
pub fn reconcile_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}",
        K::kind(&()),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// A failed reconcile: retried after a jittered backoff of its [`RetryKind`] (reset by the next
/// successful reconcile: a configuration error waits for a change of the objects it depends on,
/// which are watched, or about a minute; a throttled API server is asked again within seconds;
/// anything else backs off to two minutes), logged at attempts 1, 2, 4, 8, ... only, so an
/// outage of S3 or the API server gives a bounded number of log lines, and reported as a
/// Warning Event on the object with the error's category as its reason, once per distinct
/// problem until the object reconciles again.
fn error_policy<K>(obj: Arc<K>, error: &ControllerError, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    ctx.metrics
        .record_reconcile_error("controller", error.reason());
    let key = reconcile_key(obj.as_ref());
    let retry = ctx.failures.failed_as(&key, error.retry_kind());
    if retry.log {
        tracing::warn!(object = %key, attempt = retry.attempt, retry_in = ?retry.after, error = %error, "reconcile failed");
    }
    if error.is_reported() {
        report(obj, key, error, ctx);
    }
    Action::requeue(retry.after)
}

/// Publish a failed reconcile as a Warning Event about `obj`, unless this problem of `obj` was
/// already reported since it last reconciled (see [`crate::backoff::report_due`]). In a task of
/// its own: an error policy cannot wait. The error texts name what failed, never credentials.
fn report<K>(obj: Arc<K>, key: String, error: &ControllerError, ctx: Arc<Context>)
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let reason = error.reason();
    let note = format!("Reconcile failed, retrying: {error}");
    if !ctx.failures.report(&key, &note) {
        return;
    }
    tokio::spawn(async move {
        let published = ctx
            .events
            .publish(
                obj.as_ref(),
                true,
                reason,
                consts::actions::RECONCILE,
                note.clone(),
            )
            .await;
        if !published {
            ctx.failures.unreport(&key, &note);
        }
    });
}

/// Run the reconcilers until the stream ends (they run only while this replica leads).
pub async fn run_controllers(parts: ContextParts) {
    let client = parts.client.clone();
    let namespace = parts.namespace.clone();
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let agent_leases = leases(&client, &namespace);
    let wc = watcher::Config::default();
    let agents_wc = watcher::Config::default().labels(&format!("{}=true", consts::LABEL_AGENT));

    let (files_cache, files_stream, files_ready) = cached(files.clone(), wc.clone());
    let (schedules_cache, schedules_stream, schedules_ready) =
        cached(schedules.clone(), wc.clone());
    let (agents, agents_stream, agents_ready) = cached(agent_leases.clone(), agents_wc.clone());
    // Bounded concurrency: at start every object is reconciled, and unbounded, 10,000 records
    // meant 10,000 reconcile futures alive at once (memory the allocator never gives back).
    let bounded =
        || kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY);
    let schedule_ctl =
        Controller::for_stream(schedules_stream, schedules_cache.clone()).with_config(bounded());
    let files_ctl =
        Controller::for_stream(files_stream, files_cache.clone()).with_config(bounded());
    let agents_reflector = agents_stream
        .default_backoff()
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching agent leases");
            }
        });
    let ctx = Arc::new(Context {
        client: parts.client,
        namespace: parts.namespace,
        events: parts.events,
        metrics: parts.metrics,
        config: parts.config,
        cache: Caches {
            files: files_cache,
            schedules: schedules_cache,
            agents,
        },
        ready: vec![files_ready, schedules_ready, agents_ready],
        runs: Default::default(),
        failures: Default::default(),
        preflights: Default::default(),
    });

    let store = schedule_ctl.store();
    let by_file = {
        let store = store.clone();
        move |f: ETCDSnapshotFile| {
            f.labels()
                .get(consts::LABEL_SCHEDULE)
                .and_then(|name| {
                    store
                        .state()
                        .into_iter()
                        .find(|s| crate::naming::label_value(&s.name_any()) == *name)
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
        }
    };
    // Watched objects map to the schedules they concern.
    let schedules_where = {
        let store = store.clone();
        move |keep: &dyn Fn(&ETCDSnapshotSchedule) -> bool| {
            store
                .state()
                .into_iter()
                .filter(|s| keep(s))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let secret_name = |s: &ETCDSnapshotSchedule| {
        s.spec
            .s3
            .as_ref()
            .and_then(|s3| s3.config_secret_ref.as_ref())
            .map(|r| r.name.clone())
    };
    let key_secret_name = |s: &ETCDSnapshotSchedule| {
        s.spec
            .encryption
            .as_ref()
            .map(|e| e.key_secret_ref.name.clone())
    };
    let by_secret = {
        let schedules_where = schedules_where.clone();
        move |secret: Secret| {
            let name = secret.name_any();
            schedules_where(&|s| {
                secret_name(s).as_deref() == Some(name.as_str())
                    || key_secret_name(s).as_deref() == Some(name.as_str())
            })
        }
    };
    // An agent that registers, leaves, or changes its etcd health or directory concerns every
    // schedule; a mere renewal does not.
    let by_lease = {
        let schedules_where = schedules_where.clone();
        let seen = std::sync::Mutex::new(std::collections::HashMap::<String, String>::new());
        move |lease: Lease| {
            let print = lease_fingerprint(&lease);
            let changed = seen
                .lock()
                .map(|mut seen| seen.insert(lease.name_any(), print.clone()) != Some(print))
                .unwrap_or(true);
            if changed {
                schedules_where(&|_| true)
            } else {
                Vec::new()
            }
        }
    };
    // The endpoint-CA ConfigMap a Secret may name: any change re-reconciles the schedules that
    // use a Secret (which ConfigMap a Secret names is only known by reading the Secret).
    let by_configmap = move |_: ConfigMap| schedules_where(&|s| secret_name(s).is_some());
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let schedules_run = schedule_ctl
        .watches(files, wc.clone(), by_file)
        .watches(secrets, wc.clone(), by_secret)
        .watches(configmaps, wc.clone(), by_configmap)
        .watches(agent_leases, agents_wc, by_lease)
        .run(schedule::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let file_store = ctx.cache.files.clone();
    // A deleted Node re-checks the local records of that node (their finalizers may need
    // releasing).
    let by_node = move |node: Node| {
        let name = node.name_any();
        file_store
            .state()
            .into_iter()
            .filter(|f| f.spec.node_name == name && f.meta().deletion_timestamp.is_some())
            .map(|f| ObjectRef::from_obj(f.as_ref()))
            .collect::<Vec<_>>()
    };
    let files_run = files_ctl
        .watches(Api::<Node>::all(client.clone()), wc, by_node)
        .run(files::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let s3_sync = async {
        loop {
            match sync::sync_s3(&ctx).await {
                Err(e) => {
                    ctx.metrics.record_reconcile_error("s3-sync", e.reason());
                    // Bounded: attempts 1, 2, 4, 8, ... of a failure that lasts.
                    let retry = ctx.failures.failed("s3-sync");
                    if retry.log {
                        tracing::warn!(error = %e, attempt = retry.attempt, "S3 sync failed");
                    }
                }
                Ok(()) => {
                    let failed = ctx.failures.succeeded("s3-sync");
                    if failed > 0 {
                        tracing::info!(failed, "S3 sync works again");
                    }
                }
            }
            tokio::time::sleep(ctx.config.s3_sync_interval).await;
        }
    };
    futures::join!(schedules_run, files_run, s3_sync, agents_reflector);
}

/// How long a stopping leader waits for the API server to take its Lease release.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Entry point of `etcd-snapshot controller`: serve metrics, elect a leader, reconcile while
/// leading. Losing the lease ends the process (the Deployment restarts it as a standby), so two
/// replicas never act at once. SIGTERM or SIGINT stops it within seconds: a leader stops
/// reconciling, then releases its Lease so that a standby takes over at once instead of after
/// the lease duration.
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    metrics_addr: &str,
    config: ControllerConfig,
    shutdown: Shutdown,
) -> Result<(), crate::http::HttpError> {
    let metrics = Metrics::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let (listener, addr) = crate::http::bind(metrics_addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(crate::http::serve_on(listener, metrics.clone(), ready_rx));

    let elector = LeaderElector::new(client.clone(), &namespace, &identity, config.lease.clone());
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(false);
    let election = tokio::spawn(elector.clone().run(leader_tx));
    let leading = async {
        while !*leader_rx.borrow_and_update() {
            if leader_rx.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    let became_leader = tokio::select! {
        leading = leading => leading,
        signal = shutdown.wait() => {
            tracing::info!(signal, "stopping (standby)");
            false
        }
    };
    if became_leader {
        tracing::info!(%identity, "became leader");
        metrics.set_leader(true);
        let events = Events::new(
            client.clone(),
            &identity,
            resolve_namespace(&client, config.events_namespace).await,
        );
        tokio::spawn(k3s::warn_if_present(client.clone(), events.clone()));
        let parts = ContextParts {
            events,
            client,
            namespace,
            metrics: metrics.clone(),
            config,
        };
        let lost = async {
            while *leader_rx.borrow_and_update() {
                if leader_rx.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = run_controllers(parts) => {}
            () = lost => tracing::warn!("lost leadership; exiting so that only one replica acts"),
            signal = shutdown.wait() => {
                // Reconciles stopped when their futures were dropped by this select.
                tracing::info!(signal, "stopping; releasing the leader lease");
                match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease; it expires on its own"),
                    Err(_) => tracing::warn!("the API server did not take the lease release in time; it expires on its own"),
                }
            }
        }
    }
    metrics.set_leader(false);
    drop(ready_tx);
    election.abort();
    http.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn errors_are_retried_by_kind_and_reported_under_their_category() {
        let forbidden = ControllerError::kube("creating a snapshot file")(api_error(403));
        assert_eq!(forbidden.retry_kind(), RetryKind::Other);
        assert_eq!(forbidden.reason(), consts::errors::KUBERNETES_API);
        assert!(forbidden.is_reported());
        let throttled = ControllerError::kube("writing status")(api_error(429));
        assert_eq!(throttled.retry_kind(), RetryKind::Throttled);
        let overloaded = ControllerError::Operator(OperatorError::Kube {
            op: "reading Secret etcd-snapshot/s3".into(),
            source: api_error(503),
        });
        assert_eq!(overloaded.retry_kind(), RetryKind::Throttled);
        assert_eq!(overloaded.reason(), consts::errors::KUBERNETES_API);
        let missing = ControllerError::Operator(OperatorError::SecretMissing {
            namespace: "etcd-snapshot".into(),
            name: "s3".into(),
        });
        assert_eq!(missing.retry_kind(), RetryKind::Config);
        assert_eq!(missing.reason(), consts::errors::SECRET_MISSING);
        // Shutting down is no problem to report.
        assert!(!ControllerError::CacheClosed.is_reported());
        assert_eq!(ControllerError::CacheClosed.retry_kind(), RetryKind::Other);
    }
}
