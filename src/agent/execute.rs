//! Taking one requested snapshot: every Pending copy of it on this node (local and S3) from one
//! etcd stream, then each record Ready or Failed with its own reason.

use super::Agent;
use super::plan::{self, CopyOutcome};
use crate::api::{Compression, ETCDSnapshotFile, Storage};
use crate::consts;
use crate::naming::{SnapshotName, label_value};
use crate::operator::{encryption_key_from_secret, patch_file_status, s3_config_for_file};
use crate::snapshot::{SaveRequest, SnapshotRecord, save};
use crate::storage::s3::S3Store;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

/// Take the snapshot the records in `group` ask for.
pub async fn take_snapshot(agent: &Agent, group: Vec<ETCDSnapshotFile>) {
    let Some(first) = group.first() else { return };
    let api = agent.api();
    // The name comes from the record: checked once, here.
    let name = match SnapshotName::new(first.spec.snapshot_name.as_str()) {
        Ok(name) => name,
        Err(e) => {
            for esf in &group {
                agent.fail(esf, &e.to_string(), "BadName").await;
            }
            return;
        }
    };

    // Work out where each copy goes; a copy that cannot be placed fails alone.
    let mut local = None;
    let mut s3 = None;
    let mut copies = Vec::new();
    for esf in &group {
        match esf.storage() {
            Storage::Local => {
                let dir = &agent.config.dir;
                if let Some(message) = plan::local_placement_error(esf, dir) {
                    agent.fail(esf, &message, "BadLocation").await;
                    continue;
                }
                local = Some(dir.clone());
                copies.push(esf.clone());
            }
            Storage::S3 => {
                let store =
                    match s3_config_for_file(&agent.client, &agent.config.namespace, esf).await {
                        Ok(cfg) => match plan::s3_placement_error(esf, &cfg.location(&name)) {
                            Some(message) => Err(message),
                            None => S3Store::connect(&cfg).await.map_err(|e| e.to_string()),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                match store {
                    Ok(store) => {
                        s3 = Some(store);
                        copies.push(esf.clone());
                    }
                    Err(message) => agent.fail(esf, &message, "S3").await,
                }
            }
        }
    }
    if copies.is_empty() {
        return;
    }
    // The encryption key, read now (a rotated key applies to the next snapshot).
    let encryption = match &first.spec.encryption {
        None => None,
        Some(spec) => {
            match encryption_key_from_secret(
                &agent.client,
                &agent.config.namespace,
                &spec.key_secret_ref,
            )
            .await
            {
                Ok(key) => Some(key),
                Err(e) => {
                    for esf in &copies {
                        agent.fail(esf, &e.to_string(), e.reason()).await;
                    }
                    return;
                }
            }
        }
    };

    for esf in &copies {
        let status = plan::running_status(esf);
        if let Err(e) =
            patch_file_status(&api, &esf.name_any(), &status, consts::MANAGER_AGENT).await
        {
            tracing::warn!(file = %esf.name_any(), error = %e, "could not mark Running");
        }
    }

    let created_unix = name
        .parts()
        .map(|p| p.unix_seconds)
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let request = SaveRequest {
        name: name.clone(),
        node_name: agent.config.node.clone(),
        created_unix,
        compression: first.spec.compression,
        zstd_level: first.spec.compression_level.unwrap_or(1),
        local,
        s3,
        extra_metadata: first.spec.metadata.clone().unwrap_or_default(),
        progress: None,
        encryption,
        cancel: agent.cancel.clone(),
    };
    if first.spec.compression == Compression::Zip {
        for esf in &copies {
            agent
                .fail(esf, "zip compression is never written; use zstd", "BadSpec")
                .await;
        }
        return;
    }
    tracing::info!(snapshot = %name, copies = copies.len(), "taking snapshot");
    let report = match save(&agent.config.etcd, request).await {
        Ok(report) => report,
        Err(e) => {
            let message = plan::failure_message(&agent.config.node, &e);
            for esf in &copies {
                agent.fail(esf, &message, e.reason()).await;
            }
            return;
        }
    };
    for esf in &copies {
        match plan::copy_outcome(esf, &report, &agent.config.node) {
            CopyOutcome::Stored => stored(agent, esf, &report.record).await,
            CopyOutcome::Failed { message, reason } => agent.fail(esf, &message, reason).await,
        }
    }
}

/// Record a stored copy: Ready status, the cluster ID label, metrics, the event.
async fn stored(agent: &Agent, esf: &ETCDSnapshotFile, record: &SnapshotRecord) {
    let status = plan::ready_status(esf, record, chrono::Utc::now());
    if let Err(e) = agent.record_status(&esf.name_any(), &status).await {
        tracing::warn!(file = %esf.name_any(), error = %e, "could not mark Ready");
    }
    let labels = serde_json::json!({"metadata": {"labels": {
        consts::LABEL_CLUSTER_ID: label_value(&record.cluster_id)
    }}});
    if let Err(e) = agent
        .api()
        .patch(
            &esf.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&labels),
        )
        .await
    {
        tracing::warn!(file = %esf.name_any(), error = %e, "could not label the cluster ID");
    }
    agent.metrics.record_snapshot(
        esf.storage(),
        &agent.config.node,
        esf.spec.schedule_name.as_deref(),
        record.duration,
        record.size,
    );
    agent
        .events
        .publish(
            esf,
            false,
            consts::REASON_CREATED,
            consts::actions::SAVE,
            plan::saved_note(esf, &agent.config.node),
        )
        .await;
}
