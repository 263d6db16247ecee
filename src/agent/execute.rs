//! Taking one requested snapshot: every Pending copy of it on this node (local and S3) from one
//! etcd stream, then each record Ready or Failed with its own reason.

use super::Agent;
use crate::api::{Compression, ETCDSnapshotFile, ETCDSnapshotFileStatus, EncryptionStatus, Phase};
use crate::consts;
use crate::controller::util::{set_condition, storage, to_time};
use crate::naming::{Storage, label_value, parse_snapshot_name};
use crate::operator::{encryption_key_from_secret, patch_file_status, s3_config_for_file};
use crate::snapshot::crypt::ALGORITHM_NAME;
use crate::snapshot::{SaveRequest, SnapshotError, save};
use crate::storage::s3::S3Store;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

/// Take the snapshot the records in `group` ask for.
pub async fn take_snapshot(agent: &Agent, group: Vec<ETCDSnapshotFile>) {
    let Some(first) = group.first() else { return };
    let name = first.spec.snapshot_name.clone();
    let api = agent.api();

    // Work out where each copy goes; a copy that cannot be placed fails alone.
    let mut local = None;
    let mut s3 = None;
    let mut copies = Vec::new();
    for esf in &group {
        match storage(esf) {
            Storage::Local => {
                let dir = &agent.config.dir;
                if dir.path_of(&name).is_err() || dir.location(&name) != esf.spec.location {
                    agent
                        .fail(
                            esf,
                            &format!(
                                "location {} is not in this agent's snapshot directory {}",
                                esf.spec.location,
                                dir.path().display()
                            ),
                            "BadLocation",
                        )
                        .await;
                    continue;
                }
                local = Some(dir.clone());
                copies.push(esf.clone());
            }
            Storage::S3 => {
                let store =
                    match s3_config_for_file(&agent.client, &agent.config.namespace, esf).await {
                        Ok(cfg) if cfg.location(&name) != esf.spec.location => Err(format!(
                            "location {} is not where the S3 settings point ({})",
                            esf.spec.location,
                            cfg.location(&name)
                        )),
                        Ok(cfg) => S3Store::connect(&cfg).await.map_err(|e| e.to_string()),
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
        let status = ETCDSnapshotFileStatus {
            phase: Some(Phase::Running),
            ready_to_use: Some(false),
            ..esf.status.clone().unwrap_or_default()
        };
        if let Err(e) =
            patch_file_status(&api, &esf.name_any(), &status, consts::MANAGER_AGENT).await
        {
            tracing::warn!(file = %esf.name_any(), error = %e, "could not mark Running");
        }
    }

    let created_unix = parse_snapshot_name(&name)
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
            let message = failure_message(agent, &e);
            for esf in &copies {
                agent.fail(esf, &message, e.reason()).await;
            }
            return;
        }
    };
    let record = &report.record;
    for esf in &copies {
        let st = storage(esf);
        let result = report.copies.iter().find(|c| c.storage == st).map(|c| {
            c.result
                .as_ref()
                .map_err(|e| (failure_message(agent, e), e.reason()))
        });
        match result {
            Some(Ok(())) => {
                let now = chrono::Utc::now();
                let mut status = ETCDSnapshotFileStatus {
                    phase: Some(Phase::Ready),
                    ready_to_use: Some(true),
                    size: Some(Quantity(record.size.to_string())),
                    creation_time: chrono::DateTime::from_timestamp(record.created_unix, 0)
                        .map(to_time),
                    sha256: Some(record.sha256.clone()),
                    etcd_revision: Some(record.etcd_revision),
                    etcd_cluster_id: Some(record.cluster_id.clone()),
                    etcd_member_name: Some(record.member_name.clone()),
                    etcd_version: Some(record.etcd_version.clone()),
                    error: None,
                    encryption: record
                        .encryption_key_id
                        .as_ref()
                        .map(|id| EncryptionStatus {
                            algorithm: ALGORITHM_NAME.to_string(),
                            key_id: id.clone(),
                        }),
                    ..esf.status.clone().unwrap_or_default()
                };
                set_condition(
                    &mut status.conditions,
                    consts::conditions::READY,
                    true,
                    consts::conditions::REASON_SAVED,
                    "the snapshot is stored and its hashes checked",
                    esf.metadata.generation,
                    now,
                );
                if let Err(e) = agent.record_status(&esf.name_any(), &status).await {
                    tracing::warn!(file = %esf.name_any(), error = %e, "could not mark Ready");
                }
                let labels = serde_json::json!({"metadata": {"labels": {
                    consts::LABEL_CLUSTER_ID: label_value(&record.cluster_id)
                }}});
                if let Err(e) = api
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
                    st,
                    &agent.config.node,
                    esf.spec.schedule_name.as_deref(),
                    record.duration,
                    record.size,
                );
                let place = match st {
                    Storage::Local => agent.config.node.clone(),
                    Storage::S3 => "S3".to_string(),
                };
                agent
                    .events
                    .publish(
                        esf,
                        false,
                        consts::REASON_CREATED,
                        "Save",
                        format!("Snapshot {name} saved on {place}"),
                    )
                    .await;
            }
            Some(Err((message, reason))) => agent.fail(esf, &message, reason).await,
            None => {
                agent
                    .fail(esf, "the copy was not attempted", "Internal")
                    .await
            }
        }
    }
}

/// A failure for a record: a cancellation says that the agent was stopping.
fn failure_message(agent: &Agent, e: &SnapshotError) -> String {
    match e {
        SnapshotError::Cancelled => format!(
            "the agent on {} was stopped (SIGTERM) while taking this snapshot: {e}",
            agent.config.node
        ),
        _ => e.to_string(),
    }
}
