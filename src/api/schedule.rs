//! `ETCDSnapshotSchedule` (short name `ess`): when to snapshot, where to store, what to keep.

use super::common::{BucketLookup, EncryptionSpec, Retention};
use crate::consts;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// When to snapshot, which members take part, where copies go, and what is kept.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "etcdsnapshot.io",
    version = "v1",
    kind = "ETCDSnapshotSchedule",
    doc = "A snapshot policy, applied by GitOps: a cron schedule, which etcd members take part, local and S3 storage, and retention. Set the annotation etcdsnapshot.io/requested-at to a new value to run it once now.",
    plural = "etcdsnapshotschedules",
    singular = "etcdsnapshotschedule",
    shortname = "ess",
    status = "ETCDSnapshotScheduleStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Backups Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"BackupsHealthy\")].status"}"#,
    printcolumn = r#"{"name":"Newest Backup","type":"date","jsonPath":".status.newestBackupTime"}"#,
    printcolumn = r#"{"name":"Last Run","type":"string","jsonPath":".status.conditions[?(@.type==\"LastRunSucceeded\")].reason"}"#,
    printcolumn = r#"{"name":"Next","type":"string","format":"date-time","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Snapshots","type":"integer","jsonPath":".status.readySnapshots"}"#,
    printcolumn = r#"{"name":"Health Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"BackupsHealthy\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Last Schedule","type":"date","jsonPath":".status.lastScheduleTime","priority":1}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulTime","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ETCDSnapshotScheduleSpec {
    /// Five-field cron expression (minute hour day-of-month month day-of-week).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Stop creating scheduled snapshots (on-demand requests still run).
    #[serde(default)]
    pub suspend: bool,
    /// A tick missed while the controller was down is run once if no more than this many
    /// seconds late; unset means a missed tick is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// Snapshot name prefix; names are `<prefix>-<node>-<unix seconds>[.zst]`.
    #[serde(default = "default_prefix")]
    pub name_prefix: String,
    /// Compression of the stored snapshots.
    #[serde(default)]
    pub compression: CompressionSpec,
    /// Which etcd members snapshot at each tick: `One` healthy member (no duplicates), or
    /// `All` members (each snapshots itself, as k3s does).
    #[serde(default)]
    pub members: Members,
    /// Only agents on nodes with these labels take part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Local copies in each agent's snapshot directory.
    #[serde(default)]
    pub local: LocalStorage,
    /// Copies in an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// Encrypt the snapshots at rest (local and S3 copies) with a key from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// Scheduled verification: every N runs, the newest Ready copies of this schedule are
    /// downloaded, checked and test-restored by an agent, which sets their `Verified` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// Scheduled verification of a schedule's snapshots.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Verify the newest Ready copies (local and S3) after every this many runs (scheduled ticks
    /// and on-demand requests both count), once the run has finished. 1 verifies every run.
    #[schemars(range(min = 1))]
    pub every_runs: u32,
}

fn default_schedule() -> String {
    consts::DEFAULT_SCHEDULE.to_string()
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_prefix() -> String {
    consts::DEFAULT_SCHEDULED_PREFIX.to_string()
}

fn default_true() -> bool {
    true
}

/// Compression settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompressionSpec {
    /// `none` or `zstd`.
    #[serde(default, rename = "type")]
    pub kind: CompressionKind,
    /// zstd level, 1 (fast, the default) to 19.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub level: Option<i32>,
}

/// Compression a schedule can write.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionKind {
    /// Plain etcd snapshots.
    #[default]
    None,
    /// zstd-compressed snapshots (`.zst`).
    Zstd,
}

/// Which etcd members snapshot at a tick.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Members {
    /// One healthy member per tick: one snapshot of the cluster, no duplicates, no races.
    #[default]
    One,
    /// Every selected member snapshots itself (as k3s does).
    All,
}

/// Local storage settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorage {
    /// Keep a copy in the agent's snapshot directory (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Retention per node (default: keep 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

impl Default for LocalStorage {
    fn default() -> Self {
        LocalStorage {
            enabled: true,
            retention: None,
        }
    }
}

/// S3 storage settings. Credentials come only from the referenced Secret (or the agent's
/// environment); either reference a Secret or set the inline fields, not both.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Upload a copy to S3.
    #[serde(default)]
    pub enabled: bool,
    /// Secret with the k3s `etcd-s3-*` keys, in the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret_ref: Option<SecretRef>,
    /// S3 endpoint `host[:port]` (inline alternative to the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PEM CA bundle for the endpoint.
    #[serde(
        default,
        rename = "endpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<String>,
    /// Disable TLS verification of the endpoint.
    #[serde(
        default,
        rename = "skipSSLVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub skip_ssl_verify: Option<bool>,
    /// Bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Bucket addressing: `auto`, `dns` or `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_lookup: Option<BucketLookup>,
    /// Region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Folder (key prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Plain HTTP instead of HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Timeout per S3 operation, e.g. `5m` (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Proxy URL for S3, or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Retention in S3 (default: the local retention, not a fixed 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// What S3 retention counts over: each node's snapshots (`Node`, default) or all of this
    /// cluster's snapshots in the folder (`Cluster`, k3s's behaviour). Other clusters' snapshots
    /// sharing the folder are never touched.
    #[serde(default)]
    pub retention_scope: RetentionScope,
}

/// Reference to a Secret in the operator's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Only for clarity: it must be empty or the operator's own namespace. A Secret in another
    /// namespace is refused (the schedule is Invalid), so a schedule author can never make the
    /// operator read Secrets elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What S3 retention counts over.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionScope {
    /// Keep N per node.
    #[default]
    Node,
    /// Keep N for the whole cluster.
    Cluster,
}

/// Observed state of a schedule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ETCDSnapshotScheduleStatus {
    /// Generation of the spec this status describes (written on every reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Time of the last tick that created snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Time of the next tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Time of the last tick whose snapshots all became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// The last `etcdsnapshot.io/requested-at` value served (its run's records were created); a
    /// request no live agent could serve yet stays pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_requested_at: Option<String>,
    /// Number of Ready snapshot copies of this schedule.
    #[serde(default)]
    pub ready_snapshots: u32,
    /// Number of Failed snapshot copies of this schedule.
    #[serde(default)]
    pub failed_snapshots: u32,
    /// Time of the newest Ready copy of this schedule, in any storage (the `Newest Backup`
    /// column shows its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_backup_time: Option<Time>,
    /// Last success and last failure per storage: `local` copies of each node, and `s3`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<StorageBackupStatus>,
    /// Runs created since the last verification request (with `spec.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_since_verify: Option<u32>,
    /// Conditions, following kstatus (what Helm's `--wait`, Flux and Argo CD read): `Ready`
    /// (True as soon as the spec is valid, before any run), `Stalled` (True while the spec or
    /// its Secret is unusable; the reason and message say why), `Reconciling` (True while a new
    /// generation could not be reconciled yet). `LastRunSucceeded` (True, False, or Unknown
    /// before the first run finishes) and `BackupsHealthy` (False when a storage's newest copy is
    /// older than two schedule periods, the last run failed, or retention could not delete a
    /// copy; Unknown before the first backup) are information only and do not affect `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Backup state of one storage of a schedule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageBackupStatus {
    /// `local` or `s3`.
    pub storage: String,
    /// The node, for local copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Time of the newest copy stored successfully here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// Time of the newest copy that failed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
}
