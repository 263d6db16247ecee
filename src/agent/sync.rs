//! Keep the snapshot directory and this node's records in step: a file without a record gets one
//! (snapshots taken by the CLI, an older install or k3s show up in `kubectl get esf`); a Ready
//! record whose file is gone is removed. Records younger than a grace period are left alone so a
//! snapshot being written is never mistaken for a missing file.

use super::{Agent, AgentError};
use crate::api::{ETCDSnapshotFile, Phase, Storage};
use crate::consts;
use crate::finalizer::remove_finalizer;
use crate::operator::patch_file_status;
use crate::storage::catalog::StoredCopy;
use kube::api::PostParams;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;

/// Records younger than this are never removed for a missing file.
const GRACE_SECONDS: i64 = 60;

/// One pass of the directory sync.
pub async fn sync_dir(agent: &Agent) -> Result<(), AgentError> {
    let dir = &agent.config.dir;
    let node = &agent.config.node;
    let files: Vec<std::sync::Arc<ETCDSnapshotFile>> = agent.files.state();
    let local: Vec<&ETCDSnapshotFile> = files
        .iter()
        .map(|f| f.as_ref())
        .filter(|f| f.storage() == Storage::Local && agent.owns(f))
        .collect();
    let known: HashSet<&str> = local.iter().map(|f| f.spec.location.as_str()).collect();
    let api = agent.api();

    let entries = dir.list()?;
    let present: HashSet<String> = entries.iter().map(|e| dir.location(&e.name)).collect();
    for entry in &entries {
        let location = dir.location(&entry.name);
        if known.contains(location.as_str()) {
            continue;
        }
        let sha = dir.read_checksum(&entry.name).ok().flatten();
        let copy = StoredCopy::from_local(entry, node, sha);
        let mut esf = copy.to_esf();
        let status = esf.status.take();
        esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
        esf.spec.metadata = dir.read_metadata(&entry.name).ok().flatten();
        match api.create(&PostParams::default(), &esf).await {
            Ok(created) => {
                if let Some(status) = status {
                    patch_file_status(&api, &created.name_any(), &status, consts::MANAGER_AGENT)
                        .await?;
                }
                tracing::info!(file = %entry.name, "recorded a snapshot found in the directory");
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(AgentError::kube("recording a found snapshot")(e)),
        }
    }

    let now = jiff::Timestamp::now().as_second();
    for esf in local {
        let old_enough = esf
            .meta()
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| now - t.0.as_second() > GRACE_SECONDS);
        let ours = super::plan::local_name(esf, dir).is_some();
        if esf.phase() == Phase::Ready
            && old_enough
            && ours
            && esf.meta().deletion_timestamp.is_none()
            && !present.contains(&esf.spec.location)
        {
            tracing::info!(file = %esf.name_any(), "snapshot file is gone; removing its record");
            remove_finalizer(&api, esf)
                .await
                .map_err(AgentError::kube("releasing the finalizer"))?;
            match api.delete(&esf.name_any(), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(AgentError::kube("removing a record of a missing file")(e)),
            }
        }
    }
    Ok(())
}
