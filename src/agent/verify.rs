//! Verifying one stored copy on request (the `etcdsnapshot.io/verify-requested-at` annotation,
//! set by the controller for a schedule's `spec.verify`, or by hand): download it, check its
//! sha256 against the record, decompress, check etcd's own hash, test-restore it into a scratch
//! data dir, then set the record's `Verified` condition, publish an event and count it.

use super::Agent;
use crate::api::conditions::set_condition;
use crate::api::time::to_time;
use crate::api::{ETCDSnapshotFile, ETCDSnapshotFileStatus, Phase, Storage};
use crate::cli::restore::{ENV_ETCDCTL, ENV_ETCDUTL};
use crate::consts;
use crate::operator::s3_config_for_file;
use crate::restore::{
    PrepareOptions, RecordedRelease, RestoreError, Source, Toolbox, VerifyReport,
};
use crate::storage::s3::S3Store;
use futures::StreamExt;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use std::path::PathBuf;
use std::sync::Arc;

/// The node whose agent verifies `esf`: the verify-by annotation, else the copy's own node.
pub fn verifier(esf: &ETCDSnapshotFile) -> &str {
    esf.annotations()
        .get(consts::ANNOTATION_VERIFY_BY)
        .map_or(esf.spec.node_name.as_str(), String::as_str)
}

/// Start verifying `esf` in the background if it is Ready, this agent is its verifier and it
/// carries a request not handled yet (and not being handled right now).
pub fn start_if_requested(agent: &Arc<Agent>, esf: &ETCDSnapshotFile) {
    if esf.phase() != Phase::Ready
        || esf.meta().deletion_timestamp.is_some()
        || verifier(esf) != agent.config.node
    {
        return;
    }
    let Some(request) = pending_request(esf) else {
        return;
    };
    let key = format!("verify {}", esf.name_any());
    let fresh = agent
        .running
        .lock()
        .map(|mut r| r.insert(key.clone()))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    let agent = agent.clone();
    let esf = esf.clone();
    tokio::spawn(async move {
        verify_copy(&agent, &esf, request).await;
        if let Ok(mut r) = agent.running.lock() {
            r.remove(&key);
        }
    });
}

/// Watch the S3 copies of other nodes that this agent was named to verify (their own node has
/// no live agent). This node's own copies come through the agent's main watch.
///
/// The watch is of metadata only, and nothing of it is kept: the annotations say whether a copy
/// names this agent as its verifier and carries a request, and only such a copy (rare) is read
/// whole. A watch of the full objects of every S3 copy in the cluster cost every agent memory
/// for records it had nothing to do with.
pub async fn watch_others_s3_copies(agent: Arc<Agent>) {
    let api: Api<ETCDSnapshotFile> = Api::all(agent.client.clone());
    let wc = watcher::Config::default().labels(&format!(
        "{}={}",
        consts::LABEL_STORAGE,
        consts::STORAGE_S3
    ));
    let metadata: Api<PartialObjectMeta<ETCDSnapshotFile>> = Api::all(agent.client.clone());
    let mut stream = std::pin::pin!(watcher(metadata, wc).default_backoff().applied_objects());
    while let Some(item) = stream.next().await {
        let meta = match item {
            Ok(meta) => meta,
            Err(e) => {
                tracing::debug!(error = %e, "watch of S3 copies");
                continue;
            }
        };
        let annotations = meta.annotations();
        if annotations.get(consts::ANNOTATION_VERIFY_BY) != Some(&agent.config.node)
            || !annotations.contains_key(consts::ANNOTATION_VERIFY_REQUESTED_AT)
        {
            continue;
        }
        // The agent may list (not get) records: a list of this one name.
        let lp = ListParams::default().fields(&format!("metadata.name={}", meta.name_any()));
        match api.list(&lp).await {
            Ok(list) => {
                for esf in list.items {
                    if esf.spec.node_name != agent.config.node {
                        start_if_requested(&agent, &esf);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(file = %meta.name_any(), error = %e, "reading an S3 copy to verify")
            }
        }
    }
}

/// The verification request on `esf` that this agent has not handled yet, if any.
pub fn pending_request(esf: &ETCDSnapshotFile) -> Option<String> {
    let requested = esf
        .annotations()
        .get(consts::ANNOTATION_VERIFY_REQUESTED_AT)?;
    let handled = esf
        .status
        .as_ref()
        .and_then(|s| s.last_verify_request.as_deref());
    (handled != Some(requested.as_str())).then(|| requested.clone())
}

/// The restore tools: `ETCD_SNAPSHOT_ETCDUTL` / `ETCD_SNAPSHOT_ETCDCTL`, else on `PATH`.
fn tools() -> Result<Toolbox, RestoreError> {
    let from_env = |var| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    Toolbox::find(from_env(ENV_ETCDUTL), from_env(ENV_ETCDCTL))
}

/// Why a copy could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A check, the download or the test restore failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The copy's S3 settings could not be read.
    #[error(transparent)]
    Settings(#[from] crate::operator::OperatorError),
    /// S3 could not be reached.
    #[error(transparent)]
    S3(#[from] crate::storage::s3::S3Error),
    /// The record points somewhere this agent does not read from.
    #[error("location {location} is not {expected}")]
    Location {
        /// The record's location.
        location: String,
        /// Where this agent reads from.
        expected: String,
    },
}

/// Download, check and test-restore the copy `esf` describes.
async fn check(agent: &Agent, esf: &ETCDSnapshotFile) -> Result<VerifyReport, VerifyError> {
    let tools = tools()?;
    let name = esf.spec.snapshot_name.clone();
    let options = PrepareOptions {
        expected_sha256: esf.status.as_ref().and_then(|s| s.sha256.clone()),
        recorded_etcd_version: esf
            .status
            .as_ref()
            .and_then(|s| s.etcd_version.as_deref())
            .and_then(|v| RecordedRelease::parse(v, "the ETCDSnapshotFile's status")),
        ..Default::default()
    };
    let work = std::env::temp_dir();
    match esf.storage() {
        Storage::Local => {
            let dir = &agent.config.dir;
            if super::plan::local_name(esf, dir).is_none() {
                return Err(VerifyError::Location {
                    location: esf.spec.location.clone(),
                    expected: format!(
                        "in this agent's snapshot directory {}",
                        dir.path().display()
                    ),
                });
            }
            let source = Source::Local { dir, name };
            Ok(crate::restore::verify_with(&tools, &source, &options, &work).await?)
        }
        Storage::S3 => {
            let cfg = s3_config_for_file(&agent.client, &agent.config.namespace, esf).await?;
            if cfg.location(&name) != esf.spec.location {
                return Err(VerifyError::Location {
                    location: esf.spec.location.clone(),
                    expected: format!("where the S3 settings point ({})", cfg.location(&name)),
                });
            }
            let store = S3Store::connect(&cfg).await?;
            let source = Source::S3 {
                store: &store,
                name,
            };
            Ok(crate::restore::verify_with(&tools, &source, &options, &work).await?)
        }
    }
}

/// Handle the verification request `request` on `esf`.
pub async fn verify_copy(agent: &Agent, esf: &ETCDSnapshotFile, request: String) {
    let file = esf.name_any();
    tracing::info!(%file, "verifying snapshot");
    let result = check(agent, esf).await;
    let now = chrono::Utc::now();
    let mut status = ETCDSnapshotFileStatus {
        last_verify_request: Some(request),
        ..esf.status.clone().unwrap_or_default()
    };
    let name = &esf.spec.snapshot_name;
    let place = match esf.storage() {
        Storage::Local => agent.config.node.clone(),
        Storage::S3 => "S3".to_string(),
    };
    let (warning, reason, note) = match &result {
        Ok(report) => {
            let message = format!(
                "checksums match; {} test restore OK: revision {}, {} keys",
                report.tool.as_str(),
                report.status.revision,
                report.status.total_key
            );
            set_condition(
                &mut status.conditions,
                consts::conditions::VERIFIED,
                true,
                consts::conditions::REASON_TEST_RESTORED,
                &message,
                esf.metadata.generation,
                now,
            );
            status.verified_time = Some(to_time(now));
            agent.metrics.record_verified(now.timestamp());
            (
                false,
                consts::REASON_VERIFIED,
                format!("Snapshot {name} on {place} verified: {message}"),
            )
        }
        Err(e) => {
            let message = e.to_string();
            set_condition(
                &mut status.conditions,
                consts::conditions::VERIFIED,
                false,
                consts::conditions::REASON_VERIFY_FAILED,
                &message,
                esf.metadata.generation,
                now,
            );
            agent.metrics.record_verify_failure();
            (
                true,
                consts::REASON_VERIFY_FAILED,
                format!("Snapshot {name} on {place} failed verification: {message}"),
            )
        }
    };
    if let Err(e) = agent.record_status(&file, &status).await {
        tracing::warn!(%file, error = %e, "could not record the verification");
    }
    if warning {
        tracing::warn!(%file, %note, "verification failed");
    }
    agent
        .events
        .publish(esf, warning, reason, consts::actions::VERIFY, note)
        .await;
}
