//! Every name the operator writes into the cluster: API group, labels, annotations, finalizer,
//! field managers, event reasons and Secret keys. No string literals for these elsewhere.

/// API group of both custom resources.
pub const GROUP: &str = "etcdsnapshot.io";
/// API version of both custom resources.
pub const VERSION: &str = "v1";

/// Label on every ETCDSnapshotFile: the node name for local copies, `s3` for S3 copies.
pub const LABEL_STORAGE: &str = "etcdsnapshot.io/storage";
/// Label on every ETCDSnapshotFile: the node that took (local) or uploaded (S3) the snapshot.
/// Agents watch only the ESFs carrying their own node name here.
pub const LABEL_NODE: &str = "etcdsnapshot.io/node";
/// Label on ETCDSnapshotFiles created by a schedule: the schedule's name.
pub const LABEL_SCHEDULE: &str = "etcdsnapshot.io/schedule";
/// Label on ETCDSnapshotFiles: the etcd cluster ID (hex) the snapshot was taken from.
pub const LABEL_CLUSTER_ID: &str = "etcdsnapshot.io/cluster-id";

/// Value of [`LABEL_STORAGE`] for S3 copies.
pub const STORAGE_S3: &str = "s3";

/// Annotation on an ETCDSnapshotSchedule: any new value requests one on-demand run now
/// (Flux's `requestedAt` convention). `etcd-snapshot trigger` sets it.
pub const ANNOTATION_REQUESTED_AT: &str = "etcdsnapshot.io/requested-at";

/// Annotation on an ETCDSnapshotFile: any new value asks the agent that can read the copy to
/// verify it (download, check every checksum, test-restore) and set its `Verified` condition.
/// The controller sets it for a schedule's `spec.verify`; a user may set it by hand.
pub const ANNOTATION_VERIFY_REQUESTED_AT: &str = "etcdsnapshot.io/verify-requested-at";

/// Annotation on an ETCDSnapshotFile, set with [`ANNOTATION_VERIFY_REQUESTED_AT`]: the node whose
/// agent verifies the copy. Absent means the copy's own node. The controller names another live
/// agent for an S3 copy whose own node has no live agent (any agent can read S3).
pub const ANNOTATION_VERIFY_BY: &str = "etcdsnapshot.io/verify-by";

/// Annotation on an ETCDSnapshotFile: set by `etcd-snapshot uninstall` (the chart's pre-delete
/// hook) when it removed the record's finalizer, with the time. A controller started later (a
/// reinstall) puts the finalizer back on such a record and removes this annotation; records
/// without it are left as they are (e.g. a finalizer removed by hand to forget a record).
pub const ANNOTATION_RELEASED: &str = "etcdsnapshot.io/released-for-uninstall";

/// Finalizer on every ETCDSnapshotFile: the stored file or object is deleted before the object
/// goes (by the agent of the node for local copies, by the controller for S3 copies).
pub const FINALIZER: &str = "etcdsnapshot.io/snapshot-file";

/// Field manager of the controller's server-side applies.
pub const MANAGER_CONTROLLER: &str = "etcd-snapshot-controller";
/// Field manager of the agents' server-side applies.
pub const MANAGER_AGENT: &str = "etcd-snapshot-agent";
/// Field manager of the standalone CLI (e.g. `trigger`).
pub const MANAGER_CLI: &str = "etcd-snapshot-cli";

/// Event reason: a snapshot was saved (Normal), as the reference.
pub const REASON_CREATED: &str = "ETCDSnapshotCreated";
/// Event reason: a snapshot failed (Warning), as the reference.
pub const REASON_FAILED: &str = "ETCDSnapshotFailed";
/// Event reason: a stored snapshot was deleted (Normal), as the reference.
pub const REASON_DELETED: &str = "ETCDSnapshotDeleted";
/// Event reason: retention pruned a snapshot (Normal); the message gives the reason.
pub const REASON_PRUNED: &str = "ETCDSnapshotPruned";
/// Event reason: a snapshot passed verification (Normal).
pub const REASON_VERIFIED: &str = "ETCDSnapshotVerified";
/// Event reason: a snapshot failed verification (Warning).
pub const REASON_VERIFY_FAILED: &str = "ETCDSnapshotVerifyFailed";
/// Event reason: a schedule's spec or its Secret is invalid (Warning).
pub const REASON_INVALID: &str = "InvalidSchedule";

/// Event reason: a schedule's run finished with at least one failed copy (Warning), on the
/// schedule; the message says which and why. Information only: the schedule stays Ready.
pub const REASON_RUN_FAILED: &str = "SnapshotRunFailed";

/// Event reason: retention (or a user) deleted a record, and its stored copy could not be deleted
/// (Warning, on the record; repeats continue one series). The record keeps its finalizer and the
/// deletion is retried with backoff; the schedule's `BackupsHealthy` goes False.
pub const REASON_PRUNE_FAILED: &str = "PruneFailed";

/// Event reason: a schedule's S3 storage preflight failed (Warning, on the schedule; once per
/// distinct failure, not once per reconcile).
pub const REASON_STORAGE_CHECK_FAILED: &str = "StoragePreflightFailed";

/// Name of k3s's and rke2's own ETCDSnapshotFile CRD. When it is installed too, `kubectl get
/// etcdsnapshotfile` is ambiguous; the controller warns once at start.
pub const K3S_SNAPSHOT_FILE_CRD: &str = "etcdsnapshotfiles.k3s.cattle.io";
/// Event reason: k3s's ETCDSnapshotFile CRD is installed beside ours (Warning, on that CRD, once
/// per controller start); the note gives the commands to tell the records apart.
pub const REASON_K3S_DETECTED: &str = "K3sSnapshotFilesDetected";
/// Warning event reason on a schedule whose tick came more than its starting deadline late (the
/// run is skipped; the next tick runs).
pub const REASON_MISSED_SCHEDULE: &str = "MissedSchedule";

/// Categories of the errors a reconcile fails with. Each is the reason of the Warning Event a
/// failed reconcile publishes about its object (once per distinct problem), and the `reason`
/// label of `etcd_snapshot_reconcile_errors_total`. Those of a setting a user must fix are also
/// the reason of a schedule's `Stalled` condition.
pub mod errors {
    /// A request to the Kubernetes API failed (refused, forbidden, unreachable...).
    pub const KUBERNETES_API: &str = "KubernetesAPI";
    /// An S3 operation failed.
    pub const S3: &str = "S3";
    /// The local snapshot directory failed.
    pub const LOCAL_STORAGE: &str = "LocalStorage";
    /// The controller's watch caches stopped (it is shutting down); never an Event.
    pub const CACHE_CLOSED: &str = "CacheClosed";
    /// The S3 config Secret a schedule names does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// The endpoint-CA ConfigMap an S3 config Secret names does not exist.
    pub const CA_CONFIG_MAP_MISSING: &str = "CAConfigMapMissing";
    /// The S3 config Secret is of a wrong type or has invalid values.
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// A schedule's inline S3 settings are invalid.
    pub const INVALID_S3_SETTINGS: &str = "InvalidS3Settings";
    /// The encryption key Secret a schedule names does not exist.
    pub const ENCRYPTION_KEY_MISSING: &str = "EncryptionKeyMissing";
    /// The encryption key Secret holds no usable key.
    pub const INVALID_ENCRYPTION_KEY: &str = "InvalidEncryptionKey";
}

/// The `action` of every event (events.k8s.io/v1 requires one): what the operator was doing.
pub mod actions {
    /// Reconciling an object (the action of a failed reconcile's Warning).
    pub const RECONCILE: &str = "Reconcile";
    /// Taking a snapshot.
    pub const SAVE: &str = "Save";
    /// Deleting a stored copy (its record was deleted).
    pub const DELETE: &str = "Delete";
    /// Running a schedule's tick or request.
    pub const SCHEDULE: &str = "Schedule";
    /// Checking a schedule's S3 storage.
    pub const PREFLIGHT: &str = "Preflight";
    /// Applying retention.
    pub const PRUNE: &str = "Prune";
    /// Validating a schedule.
    pub const VALIDATE: &str = "Validate";
    /// Verifying a stored copy.
    pub const VERIFY: &str = "Verify";
    /// Looking at what else is installed (the k3s CRD).
    pub const DETECT: &str = "Detect";
}

/// Condition types and reasons. The schedule follows kstatus (the status convention that Helm 4's
/// `--wait`, Flux and Argo CD health checks read): `Ready` True while the spec is valid,
/// `Stalled` True (and `Ready` False) while it cannot be acted on, `Reconciling` True while a new
/// generation could not be reconciled yet; `status.observedGeneration` is written on every
/// reconcile. How the runs went is information in `LastRunSucceeded`, which kstatus ignores.
pub mod conditions {
    /// Condition type on schedules and snapshot files: the object is usable.
    pub const READY: &str = "Ready";
    /// kstatus condition type on schedules: the spec or what it references is unusable; only a
    /// change can help (abnormal-true: absent when all is well).
    pub const STALLED: &str = "Stalled";
    /// kstatus condition type on schedules: the latest generation is not reconciled yet
    /// (abnormal-true: absent when all is well).
    pub const RECONCILING: &str = "Reconciling";
    /// Condition type on schedules: whether the newest finished run stored every copy (True),
    /// had a failed copy (False), or no run has finished yet (Unknown). Not a kstatus condition:
    /// a failed run does not make the schedule unhealthy to Helm or GitOps tools.
    pub const LAST_RUN_SUCCEEDED: &str = "LastRunSucceeded";
    /// Condition type on schedules: whether the backups can be relied on. False when a
    /// storage's newest stored copy (local per node, S3) is older than two schedule periods,
    /// when the newest finished run failed, or when retention could not delete a copy it
    /// pruned; Unknown before the first backup; True otherwise. Not a kstatus condition (like
    /// `LastRunSucceeded`): alert on it, it does not make Helm or GitOps tools fail the release.
    pub const BACKUPS_HEALTHY: &str = "BackupsHealthy";
    /// Condition type on schedules that store to S3: the storage preflight (list the bucket,
    /// write, read and delete a probe object under the folder) passed (True) or not (False, the
    /// message names the refused action and what it breaks). Checked when the S3 settings or
    /// their Secret change, and periodically. Information, not a kstatus condition.
    pub const STORAGE_READY: &str = "StorageReady";
    /// Condition type on snapshot files: the verification result.
    pub const VERIFIED: &str = "Verified";
    /// Condition type earlier versions wrote on schedules (replaced by [`STALLED`]); removed at
    /// the next reconcile.
    pub const LEGACY_INVALID: &str = "Invalid";

    /// `Ready` reason of a valid, active schedule.
    pub const REASON_SCHEDULED: &str = "Scheduled";
    /// `Ready` reason of a valid, suspended schedule.
    pub const REASON_SUSPENDED: &str = "Suspended";
    /// `Reconciling`/`Ready` reason: a transient error stopped the reconcile of a new generation;
    /// it is retried.
    pub const REASON_RETRYING: &str = "Retrying";
    /// `Stalled`/`Ready` reason: the spec itself is invalid (other reasons name the referenced
    /// object at fault, e.g. `SecretMissing`, `InvalidSecret`, `EncryptionKeyMissing`).
    pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
    /// `LastRunSucceeded` reason: the newest finished run stored every copy.
    pub const REASON_RUN_SUCCEEDED: &str = "Succeeded";
    /// `LastRunSucceeded` reason: the newest finished run has a failed copy.
    pub const REASON_RUN_FAILED: &str = "Failed";
    /// `LastRunSucceeded` reason: no run of the schedule has finished yet.
    pub const REASON_NO_RUN_YET: &str = "NoRunYet";
    /// `BackupsHealthy` reason: every storage has a fresh copy and nothing failed.
    pub const REASON_HEALTHY: &str = "Healthy";
    /// `BackupsHealthy` reason: no copy stored yet, and the schedule is younger than two periods.
    pub const REASON_NO_BACKUP_YET: &str = "NoBackupYet";
    /// `BackupsHealthy` reason: a storage has no copy newer than two schedule periods.
    pub const REASON_STALE: &str = "BackupTooOld";
    /// `BackupsHealthy` reason: the newest finished run has a failed copy.
    pub const REASON_LAST_RUN_FAILED: &str = "LastRunFailed";
    /// `BackupsHealthy` reason: retention could not delete a copy it pruned.
    pub const REASON_PRUNE_FAILED: &str = "PruneFailed";
    /// `StorageReady` reason: list, write, read and delete all worked.
    pub const REASON_STORAGE_CHECKED: &str = "Checked";
    /// `StorageReady` reason: S3 refused an action the operator needs.
    pub const REASON_PERMISSION_DENIED: &str = "PermissionDenied";
    /// `StorageReady` reason: a step failed for another reason (unreachable, no bucket, TLS...).
    pub const REASON_CHECK_FAILED: &str = "CheckFailed";
    /// `Ready` reason of a stored snapshot file.
    pub const REASON_SAVED: &str = "Saved";
    /// `Ready` reason of a record the agent found Running with no stream taking it (restored
    /// from a snapshot taken while it was being saved) and whose stored copy is complete.
    pub const REASON_FOUND_STORED: &str = "FoundStored";
    /// `Verified` reason: downloaded, checked and test-restored.
    pub const REASON_TEST_RESTORED: &str = "TestRestored";
    /// `Verified` reason: a check failed.
    pub const REASON_VERIFY_FAILED: &str = "VerifyFailed";
}

/// Default cron expression of a schedule (00:00 and 12:00), as the reference.
pub const DEFAULT_SCHEDULE: &str = "0 */12 * * *";
/// Default name prefix of scheduled snapshots, as the reference.
pub const DEFAULT_SCHEDULED_PREFIX: &str = "etcd-snapshot";
/// Default name prefix of on-demand snapshots, as the reference.
pub const DEFAULT_ON_DEMAND_PREFIX: &str = "on-demand";
/// Default number of snapshots retained, as the reference.
pub const DEFAULT_RETENTION: u32 = 5;
/// Default S3 region, as the reference.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Default S3 timeout per operation, as the reference.
pub const DEFAULT_S3_TIMEOUT: &str = "5m";
/// Default S3 endpoint, as the reference.
pub const DEFAULT_S3_ENDPOINT: &str = "s3.amazonaws.com";

/// File suffix of zstd-compressed snapshots.
pub const SUFFIX_ZSTD: &str = ".zst";
/// File suffix of k3s's zip-compressed snapshots (read and restored, never written).
pub const SUFFIX_ZIP: &str = ".zip";
/// File suffix of encrypted snapshots, after the compression suffix (`….zst.enc`).
pub const SUFFIX_ENC: &str = ".enc";
/// File in an agent's snapshot directory that the running agent holds an exclusive lock on, so
/// that two agents of one node (the old and the new pod during a rollout) never work on the
/// directory, its records and its uploads at once.
pub const AGENT_LOCK_FILE: &str = ".etcd-snapshot-agent.lock";
/// Directory (beside the snapshots, and under the S3 folder) of extra-metadata JSON files.
pub const METADATA_DIR: &str = ".metadata";

/// Name of the optional ConfigMap whose data is copied into each snapshot's metadata.
pub const EXTRA_METADATA_CONFIGMAP: &str = "etcd-snapshot-extra-metadata";

/// Type of the S3 config Secret.
pub const SECRET_TYPE: &str = "etcdsnapshot.io/s3-config-secret";
/// k3s's type of the S3 config Secret, also accepted so an existing k3s Secret just works.
pub const SECRET_TYPE_K3S: &str = "etcd.k3s.cattle.io/s3-config-secret";

/// Keys of the S3 config Secret (the k3s names).
pub mod secret_keys {
    /// S3 endpoint (host[:port]).
    pub const ENDPOINT: &str = "etcd-s3-endpoint";
    /// PEM CA bundle for the endpoint.
    pub const ENDPOINT_CA: &str = "etcd-s3-endpoint-ca";
    /// Name of a ConfigMap (operator namespace) of PEM CA bundles.
    pub const ENDPOINT_CA_NAME: &str = "etcd-s3-endpoint-ca-name";
    /// `true` to skip TLS verification.
    pub const SKIP_SSL_VERIFY: &str = "etcd-s3-skip-ssl-verify";
    /// Access key.
    pub const ACCESS_KEY: &str = "etcd-s3-access-key";
    /// Secret key.
    pub const SECRET_KEY: &str = "etcd-s3-secret-key";
    /// Session token.
    pub const SESSION_TOKEN: &str = "etcd-s3-session-token";
    /// Bucket.
    pub const BUCKET: &str = "etcd-s3-bucket";
    /// Bucket lookup type: auto, dns or path.
    pub const BUCKET_LOOKUP_TYPE: &str = "etcd-s3-bucket-lookup-type";
    /// Folder (key prefix).
    pub const FOLDER: &str = "etcd-s3-folder";
    /// Region.
    pub const REGION: &str = "etcd-s3-region";
    /// `true` for plain HTTP.
    pub const INSECURE: &str = "etcd-s3-insecure";
    /// Timeout per operation (Go duration, e.g. `5m`).
    pub const TIMEOUT: &str = "etcd-s3-timeout";
    /// Proxy URL, or `none`.
    pub const PROXY: &str = "etcd-s3-proxy";
}

/// S3 object user-metadata keys written with every uploaded snapshot.
pub mod s3_metadata {
    /// sha256 (hex) of the stored bytes.
    pub const SHA256: &str = "etcd-snapshot-sha256";
    /// etcd cluster ID (hex).
    pub const CLUSTER_ID: &str = "etcd-snapshot-cluster-id";
    /// Node that took the snapshot.
    pub const NODE_NAME: &str = "etcd-snapshot-node-name";
    /// etcd revision at snapshot time.
    pub const REVISION: &str = "etcd-snapshot-revision";
    /// Release of the etcd member that served the snapshot (e.g. `3.5.30`): `restore` never
    /// lets an older etcd tool restore it.
    pub const ETCD_VERSION: &str = "etcd-snapshot-etcd-version";
    /// `none`, `zstd` or `zip`.
    pub const COMPRESSION: &str = "etcd-snapshot-compression";
    /// Encryption algorithm of the stored bytes (`aes-256-gcm`); absent when not encrypted.
    pub const ENCRYPTION: &str = "etcd-snapshot-encryption";
    /// Id of the key the stored bytes are encrypted with (never the key).
    pub const ENCRYPTION_KEY_ID: &str = "etcd-snapshot-encryption-key-id";
    /// k3s's node-name key, read when importing k3s uploads.
    pub const K3S_NODE_NAME: &str = "k3s-node-name";
    /// k3s's cluster-ID key, read when importing k3s uploads.
    pub const K3S_CLUSTER_ID: &str = "k3s-cluster-id";
}

/// Label on ETCDSnapshotFiles of a scheduled tick: the tick's Unix seconds. With the schedule
/// label it makes a tick's snapshots findable (and their creation idempotent).
pub const LABEL_TICK: &str = "etcdsnapshot.io/tick";
/// Label on ETCDSnapshotFiles of an on-demand run: a hash of the `requested-at` value handled.
pub const LABEL_REQUEST: &str = "etcdsnapshot.io/request";
/// Label on the agents' registration Leases.
pub const LABEL_AGENT: &str = "etcdsnapshot.io/agent";

/// Prefix of an agent's registration Lease name (`etcd-snapshot-agent-<node>`), in the operator
/// namespace. The agent renews it; the controller reads which nodes have a live agent.
pub const AGENT_LEASE_PREFIX: &str = "etcd-snapshot-agent-";
/// Annotation on an agent Lease: the node's snapshot directory.
pub const ANNOTATION_SNAPSHOT_DIR: &str = "etcdsnapshot.io/snapshot-dir";
/// Annotation on an agent Lease: `true` when the local etcd member answered at the last renew,
/// else the error.
pub const ANNOTATION_ETCD_HEALTH: &str = "etcdsnapshot.io/etcd-health";
/// Annotation on an agent Lease: the etcd cluster ID (hex) the local member belongs to.
pub const ANNOTATION_CLUSTER_ID: &str = "etcdsnapshot.io/cluster-id";
/// Annotation on an agent Lease: the local member's name.
pub const ANNOTATION_MEMBER: &str = "etcdsnapshot.io/etcd-member";

/// Name of the controller's leader-election Lease.
pub const LEADER_LEASE: &str = "etcd-snapshot-controller";
/// Reporting controller name on events.
pub const REPORTER: &str = "etcd-snapshot-operator";
