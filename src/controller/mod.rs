//! `etcd-snapshot controller`: the leader-elected in-cluster controller. It decides when and
//! where snapshots are taken (by creating Pending ETCDSnapshotFiles), applies retention, deletes
//! S3 copies on ESF deletion, releases local copies of vanished nodes, and garbage-collects
//! failed records. It never talks to etcd.

mod files;
mod schedule;
mod sync;
pub mod util;
pub mod validate;

use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule};
use crate::consts;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::operator::{AgentInfo, Events, OperatorError, leases};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

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
    /// Leader election timing.
    pub lease: LeaseConfig,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            resync: Duration::from_secs(300),
            failed_ttl: Duration::from_secs(24 * 3600),
            s3_sync_interval: Duration::from_secs(600),
            s3_release_after: Duration::from_secs(3600),
            lease: LeaseConfig::default(),
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
}

impl ControllerError {
    /// Wrap a kube error with what was being done.
    pub fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> ControllerError {
        move |source| ControllerError::Kube { op, source }
    }

    /// PascalCase reason for events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ControllerError::Kube { .. } => "KubernetesAPI",
            ControllerError::Operator(e) => e.reason(),
            ControllerError::S3(_) => "S3",
        }
    }
}

/// Agents whose registration Lease was renewed recently.
pub async fn live_agents(ctx: &Context) -> Result<Vec<AgentInfo>, ControllerError> {
    let lp = ListParams::default().labels(&format!("{}=true", consts::LABEL_AGENT));
    let now = jiff::Timestamp::now();
    Ok(leases(&ctx.client, &ctx.namespace)
        .list(&lp)
        .await
        .map_err(ControllerError::kube("listing agent leases"))?
        .items
        .iter()
        .filter_map(AgentInfo::from_lease)
        .filter(|a| a.is_live(now))
        .collect())
}

/// The etcd cluster ID the live agents report (the most common one).
pub async fn current_cluster_id(ctx: &Context) -> Result<Option<String>, ControllerError> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for agent in live_agents(ctx).await? {
        if let Some(id) = agent.cluster_id {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id))
}

fn error_policy<K>(_: Arc<K>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .record_reconcile_error("controller", error.reason());
    tracing::warn!(error = %error, "reconcile failed");
    match error {
        ControllerError::Operator(e) if e.is_config() => Action::requeue(Duration::from_secs(60)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Run the reconcilers until the stream ends (they run only while this replica leads).
pub async fn run_controllers(ctx: Arc<Context>) {
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(ctx.client.clone());
    let files: Api<ETCDSnapshotFile> = Api::all(ctx.client.clone());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let agent_leases = leases(&ctx.client, &ctx.namespace);
    let wc = watcher::Config::default();

    let schedule_ctl = Controller::new(schedules.clone(), wc.clone());
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
    let by_secret = {
        let schedules_where = schedules_where.clone();
        move |secret: Secret| {
            let name = secret.name_any();
            schedules_where(&|s| secret_name(s).as_deref() == Some(name.as_str()))
        }
    };
    let all_schedules = {
        let schedules_where = schedules_where.clone();
        move |_: Lease| schedules_where(&|_| true)
    };
    // The endpoint-CA ConfigMap a Secret may name: any change re-reconciles the schedules that
    // use a Secret (which ConfigMap a Secret names is only known by reading the Secret).
    let by_configmap = move |_: ConfigMap| schedules_where(&|s| secret_name(s).is_some());
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let schedules_run = schedule_ctl
        .watches(files.clone(), wc.clone(), by_file)
        .watches(secrets, wc.clone(), by_secret)
        .watches(configmaps, wc.clone(), by_configmap)
        .watches(
            agent_leases,
            watcher::Config::default().labels(&format!("{}=true", consts::LABEL_AGENT)),
            all_schedules,
        )
        .run(schedule::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let files_ctl = Controller::new(files, wc.clone());
    let file_store = files_ctl.store();
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
        .watches(Api::<Node>::all(ctx.client.clone()), wc, by_node)
        .run(files::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let s3_sync = async {
        loop {
            if let Err(e) = sync::sync_s3(&ctx).await {
                ctx.metrics.record_reconcile_error("s3-sync", e.reason());
                tracing::warn!(error = %e, "S3 sync failed");
            }
            tokio::time::sleep(ctx.config.s3_sync_interval).await;
        }
    };
    futures::join!(schedules_run, files_run, s3_sync);
}

/// Entry point of `etcd-snapshot controller`: serve metrics, elect a leader, reconcile while
/// leading. Losing the lease ends the process (the Deployment restarts it as a standby), so two
/// replicas never act at once.
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    metrics_addr: &str,
    config: ControllerConfig,
) -> Result<(), crate::http::HttpError> {
    let metrics = Metrics::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let (listener, addr) = crate::http::bind(metrics_addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(crate::http::serve_on(listener, metrics.clone(), ready_rx));

    let elector = LeaderElector::new(client.clone(), &namespace, &identity, config.lease.clone());
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(false);
    let election = tokio::spawn(elector.clone().run(leader_tx));
    while !*leader_rx.borrow_and_update() {
        if leader_rx.changed().await.is_err() {
            break;
        }
    }
    tracing::info!(%identity, "became leader");
    metrics.set_leader(true);
    let ctx = Arc::new(Context {
        events: Events::new(client.clone(), &identity),
        client,
        namespace,
        metrics: metrics.clone(),
        config,
    });
    let lost = async {
        while *leader_rx.borrow_and_update() {
            if leader_rx.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = run_controllers(ctx) => {}
        () = lost => tracing::warn!("lost leadership; exiting so that only one replica acts"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down; releasing the lease");
            let _ = elector.release().await;
        }
    }
    metrics.set_leader(false);
    drop(ready_tx);
    election.abort();
    http.abort();
    Ok(())
}
