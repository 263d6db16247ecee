//! `ETCDSnapshotFile` (short name `esf`): one stored copy of one snapshot.

use super::common::{Compression, EncryptionSpec, EncryptionStatus, S3Location, Storage};
use crate::consts;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What is snapshotted, by which node, and where the copy is stored.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "etcdsnapshot.io",
    version = "v1",
    kind = "ETCDSnapshotFile",
    doc = "One stored copy of one etcd snapshot: a file on a node (local-...) or an object in S3 (s3-...). Created Pending by the controller (the request) and executed by the agent of the node (the record). Deleting it deletes the stored file or object.",
    plural = "etcdsnapshotfiles",
    singular = "etcdsnapshotfile",
    shortname = "esf",
    status = "ETCDSnapshotFileStatus",
    printcolumn = r#"{"name":"SnapshotName","type":"string","jsonPath":".spec.snapshotName"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Location","type":"string","jsonPath":".spec.location"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"CreationTime","type":"string","format":"date-time","jsonPath":".status.creationTime"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.readyToUse","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ETCDSnapshotFileSpec {
    /// Snapshot name: `<prefix>-<nodeName>-<unix seconds>`, plus `.zst` when compressed.
    pub snapshot_name: String,
    /// Node that takes (local) or took and uploaded (S3) the snapshot.
    pub node_name: String,
    /// Where the copy is stored: `file:///abs/path` or `s3://bucket/folder/name`.
    pub location: String,
    /// S3 settings of an S3 copy (never credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// Extra metadata (the `etcd-snapshot-extra-metadata` ConfigMap's data at save time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Compression of the stored bytes: `none`, `zstd`, or `zip` (k3s imports).
    #[serde(default)]
    pub compression: Compression,
    /// Compression level for `zstd` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Schedule that requested this snapshot; empty for on-demand CLI snapshots and imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    /// Name of the S3 config Secret (operator namespace) this S3 copy is written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_config_secret_name: Option<String>,
    /// Encrypt the stored bytes with this key (copied from the schedule; the name then ends
    /// in `.enc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
}

/// Lifecycle phase of a snapshot copy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Requested, not started yet.
    #[default]
    Pending,
    /// The agent is streaming the snapshot.
    Running,
    /// Stored and checked; usable for restore.
    Ready,
    /// Failed; see `status.error`.
    Failed,
}

/// Why a snapshot failed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SnapshotError {
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// One line saying what went wrong (never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a snapshot copy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ETCDSnapshotFileStatus {
    /// Pending, Running, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// True when the copy is stored, checked and usable for restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Size of the stored bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// When the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// sha256 (hex) of the stored bytes, checked on download and before restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// etcd revision at snapshot time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
    /// etcd cluster ID (hex).
    #[serde(
        default,
        rename = "etcdClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub etcd_cluster_id: Option<String>,
    /// etcd member that served the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_member_name: Option<String>,
    /// etcd server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    /// Set when the snapshot failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    /// `Ready` and `Verified` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the copy was last verified by a test restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// How the stored bytes are encrypted, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionStatus>,
    /// The last `etcdsnapshot.io/verify-requested-at` value the agent handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify_request: Option<String>,
}

impl ETCDSnapshotFile {
    /// The phase of the record (`Pending` when it has no status yet).
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    /// Local or S3, from the storage label (falling back to the location's scheme).
    pub fn storage(&self) -> Storage {
        match self.labels().get(consts::LABEL_STORAGE).map(String::as_str) {
            Some(consts::STORAGE_S3) => Storage::S3,
            Some(_) => Storage::Local,
            None if self.spec.location.starts_with("s3://") => Storage::S3,
            None => Storage::Local,
        }
    }
}
