//! Command-line arguments (clap). Flag names follow `k3s etcd-snapshot`.

use crate::events::EventsNamespace;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// etcd-snapshot: take, store, list, prune, verify and restore etcd snapshots, standalone or as
/// a Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "etcd-snapshot", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `etcd_snapshot=debug`. Default:
    /// `info` for `controller` and `agent`, `etcd_snapshot=warn` (this program's warnings) for the
    /// other subcommands.
    #[arg(long, global = true, env = "ETCD_SNAPSHOT_LOG")]
    pub log_level: Option<String>,
    /// YAML file of flag values (keys are flag names without `--`, as k3s's config file);
    /// command-line flags win, keys the subcommand does not take are skipped.
    #[arg(long, global = true, env = "ETCD_SNAPSHOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Debug logs of this program (as k3s's `--debug`; same as `--log-level
    /// warn,etcd_snapshot=debug`).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Write the logs to this file (appended) instead of standard error, as k3s's `--log`.
    #[arg(long = "log", short = 'l', global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// With `--log`, also write the logs to standard error (k3s's `--alsologtostderr`).
    #[arg(long = "alsologtostderr", global = true)]
    pub also_log_to_stderr: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the in-cluster controller (a leader-elected Deployment).
    Controller(ControllerArgs),
    /// Run the per-node agent (a DaemonSet on etcd nodes).
    Agent(AgentArgs),
    /// Take a snapshot now and store it locally and/or in S3.
    Save(SaveArgs),
    /// List local and S3 snapshots.
    #[command(visible_aliases = ["list", "l"])]
    Ls(LsArgs),
    /// Delete snapshots (both the local and the S3 copy).
    Delete(DeleteArgs),
    /// Delete snapshots beyond the retention policy.
    Prune(PruneArgs),
    /// Restore a snapshot into an etcd data dir with cluster reset.
    Restore(RestoreArgs),
    /// Download a snapshot, check every checksum and test-restore it into a temp dir.
    Verify(VerifyArgs),
    /// Ask the in-cluster operator for an on-demand run of a schedule, and wait for it.
    Trigger(TriggerArgs),
    /// Prepare the operator's removal: stop the controller and agents, then remove the
    /// finalizer of every ETCDSnapshotFile, deleting no snapshot (the chart's pre-delete hook).
    Uninstall(UninstallArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

/// How to reach the local etcd member.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd client URL(s), comma-separated.
    #[arg(
        long = "etcd-endpoint",
        visible_alias = "endpoints",
        env = "ETCD_SNAPSHOT_ETCD_ENDPOINT",
        value_delimiter = ',',
        default_value = "https://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// CA certificate file to verify etcd's server certificate.
    #[arg(
        long = "etcd-cacert",
        visible_alias = "cacert",
        env = "ETCD_SNAPSHOT_ETCD_CACERT"
    )]
    pub cacert: Option<PathBuf>,
    /// Client certificate file for etcd.
    #[arg(
        long = "etcd-cert",
        visible_alias = "cert",
        env = "ETCD_SNAPSHOT_ETCD_CERT"
    )]
    pub cert: Option<PathBuf>,
    /// Client key file for etcd.
    #[arg(
        long = "etcd-key",
        visible_alias = "key",
        env = "ETCD_SNAPSHOT_ETCD_KEY"
    )]
    pub key: Option<PathBuf>,
}

/// S3 settings, as k3s's `--s3-*` flags.
#[derive(Debug, Clone, Args, Default)]
pub struct S3Args {
    /// Enable S3 storage.
    #[arg(long = "s3", visible_alias = "etcd-s3", env = "ETCD_SNAPSHOT_S3")]
    pub enabled: bool,
    /// S3 endpoint (host[:port]).
    #[arg(long = "s3-endpoint", visible_alias = "etcd-s3-endpoint", env = "ETCD_SNAPSHOT_S3_ENDPOINT", default_value = crate::consts::DEFAULT_S3_ENDPOINT)]
    pub endpoint: String,
    /// CA bundle for the S3 endpoint: PEM file path(s), space-separated.
    #[arg(
        long = "s3-endpoint-ca",
        visible_alias = "etcd-s3-endpoint-ca",
        env = "ETCD_SNAPSHOT_S3_ENDPOINT_CA"
    )]
    pub endpoint_ca: Option<String>,
    /// Skip TLS verification of the S3 endpoint.
    #[arg(
        long = "s3-skip-ssl-verify",
        visible_alias = "etcd-s3-skip-ssl-verify",
        env = "ETCD_SNAPSHOT_S3_SKIP_SSL_VERIFY"
    )]
    pub skip_ssl_verify: bool,
    /// S3 access key (also from AWS_ACCESS_KEY_ID).
    #[arg(
        long = "s3-access-key",
        visible_alias = "etcd-s3-access-key",
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub access_key: Option<String>,
    /// S3 secret key (also from AWS_SECRET_ACCESS_KEY).
    #[arg(
        long = "s3-secret-key",
        visible_alias = "etcd-s3-secret-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// S3 session token (also from AWS_SESSION_TOKEN).
    #[arg(
        long = "s3-session-token",
        visible_alias = "etcd-s3-session-token",
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true
    )]
    pub session_token: Option<String>,
    /// S3 bucket.
    #[arg(
        long = "s3-bucket",
        visible_alias = "etcd-s3-bucket",
        env = "ETCD_SNAPSHOT_S3_BUCKET"
    )]
    pub bucket: Option<String>,
    /// Bucket addressing.
    #[arg(long = "s3-bucket-lookup-type", visible_alias = "etcd-s3-bucket-lookup-type", env = "ETCD_SNAPSHOT_S3_BUCKET_LOOKUP_TYPE", value_enum, default_value_t = LookupArg::Auto)]
    pub bucket_lookup_type: LookupArg,
    /// S3 region.
    #[arg(long = "s3-region", visible_alias = "etcd-s3-region", env = "ETCD_SNAPSHOT_S3_REGION", default_value = crate::consts::DEFAULT_S3_REGION)]
    pub region: String,
    /// S3 folder (key prefix).
    #[arg(
        long = "s3-folder",
        visible_alias = "etcd-s3-folder",
        env = "ETCD_SNAPSHOT_S3_FOLDER"
    )]
    pub folder: Option<String>,
    /// Proxy for S3 (URL with scheme), or `none`.
    #[arg(
        long = "s3-proxy",
        visible_alias = "etcd-s3-proxy",
        env = "ETCD_SNAPSHOT_S3_PROXY"
    )]
    pub proxy: Option<String>,
    /// Use plain HTTP for S3.
    #[arg(
        long = "s3-insecure",
        visible_alias = "etcd-s3-insecure",
        env = "ETCD_SNAPSHOT_S3_INSECURE"
    )]
    pub insecure: bool,
    /// Timeout per S3 operation (e.g. 5m, 90s).
    #[arg(long = "s3-timeout", visible_alias = "etcd-s3-timeout", env = "ETCD_SNAPSHOT_S3_TIMEOUT", default_value = crate::consts::DEFAULT_S3_TIMEOUT)]
    pub timeout: String,
    /// Number of snapshots `prune` keeps in S3 (default: `--snapshot-retention`).
    #[arg(long = "s3-retention", id = "s3_retention", visible_alias = "etcd-s3-retention", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention: Option<u32>,
    /// k3s reads S3 settings from this Secret; this CLI does not use the Kubernetes API, so it is
    /// accepted only beside S3 settings given as flags or in `--config` (as k3s, which ignores the
    /// Secret when any other S3 flag is set).
    #[arg(long = "s3-config-secret", visible_alias = "etcd-s3-config-secret")]
    pub config_secret: Option<String>,
}

/// `--s3-bucket-lookup-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LookupArg {
    /// Virtual-host style for AWS-like endpoints, path style otherwise.
    #[default]
    Auto,
    /// Virtual-host style.
    Dns,
    /// Path style.
    Path,
}

/// Encryption at rest.
#[derive(Debug, Clone, Args, Default)]
pub struct EncryptionArgs {
    /// File holding the 32-byte encryption key (raw, base64 or hex; e.g. made with `openssl rand
    /// -base64 32`). `save` encrypts with it (AES-256-GCM, name suffix `.enc`); `restore` and
    /// `verify` decrypt with it.
    #[arg(
        long = "encryption-key-file",
        env = "ETCD_SNAPSHOT_ENCRYPTION_KEY_FILE"
    )]
    pub key_file: Option<PathBuf>,
}

/// The local snapshot directory.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// Directory of local snapshots [default: /var/lib/etcd-snapshots].
    #[arg(
        long = "dir",
        visible_alias = "etcd-snapshot-dir",
        env = "ETCD_SNAPSHOT_DIR"
    )]
    pub dir: Option<PathBuf>,
}

/// The snapshot directory when neither `--dir` nor `--data-dir` says otherwise.
pub const DEFAULT_SNAPSHOT_DIR: &str = "/var/lib/etcd-snapshots";

impl DirArgs {
    /// `--dir`, else [`DEFAULT_SNAPSHOT_DIR`].
    pub fn path(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SNAPSHOT_DIR))
    }
}

/// The flags k3s accepts on every `etcd-snapshot` subcommand, plus this tool's etcd connection
/// and encryption flags. `save`, `ls`, `delete`, `prune` and `verify` all take every one of them,
/// so one alias or config file serves them all; each subcommand uses what it needs and ignores
/// the rest (an `--etcd-endpoint` on `ls` is not an error).
#[derive(Debug, Clone, Args)]
pub struct SnapshotFlags {
    /// Snapshot name prefix: `save` names the snapshot `<name>-<node>-<unix seconds>`, `prune`
    /// prunes only names with this prefix (ignored by ls, delete and verify).
    #[arg(long = "name", id = "name_prefix", default_value = crate::consts::DEFAULT_ON_DEMAND_PREFIX)]
    pub name: String,
    /// Node name used in snapshot names and for local copies (default: this host's name).
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Compress the snapshot with zstd, `.zst` (save; ignored elsewhere).
    #[arg(long = "snapshot-compress", visible_aliases = ["etcd-snapshot-compress", "compress"])]
    pub compress: bool,
    /// Number of snapshots to keep (prune; ignored elsewhere: `save` never prunes, as k3s's).
    #[arg(long = "snapshot-retention", visible_alias = "etcd-snapshot-retention", default_value_t = crate::consts::DEFAULT_RETENTION)]
    pub retention: u32,
    /// k3s/rke2 data dir: without `--dir`, snapshots are in `<data-dir>/server/db/snapshots`, as
    /// k3s keeps them.
    #[arg(long = "data-dir", short = 'd', value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// k3s's supervisor URL: accepted for compatibility, not used (this tool talks to etcd
    /// itself, see --etcd-endpoint).
    #[arg(long = "etcd-server", short = 's', value_name = "URL")]
    pub etcd_server: Option<String>,
    /// k3s's server token: accepted for compatibility, not used.
    #[arg(long = "etcd-token", short = 't', value_name = "TOKEN")]
    pub etcd_token: Option<String>,
    /// The local snapshot folder.
    #[command(flatten)]
    pub dir: DirArgs,
    /// How to reach etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// S3 storage.
    #[command(flatten)]
    pub s3: S3Args,
    /// Encryption at rest.
    #[command(flatten)]
    pub encryption: EncryptionArgs,
}

impl SnapshotFlags {
    /// The snapshot directory: `--dir`, else `<--data-dir>/server/db/snapshots`, else
    /// [`DEFAULT_SNAPSHOT_DIR`].
    pub fn snapshot_dir(&self) -> PathBuf {
        match (&self.dir.dir, &self.data_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(data)) => data.join("server/db/snapshots"),
            (None, None) => PathBuf::from(DEFAULT_SNAPSHOT_DIR),
        }
    }
}

/// `save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Store only in S3, no local copy.
    #[arg(long = "s3-only")]
    pub s3_only: bool,
    /// The flags k3s accepts on every `etcd-snapshot` subcommand.
    #[command(flatten)]
    pub flags: SnapshotFlags,
}

/// Output format of `ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// The reference's table.
    #[default]
    Table,
    /// An ETCDSnapshotFileList as JSON.
    Json,
    /// An ETCDSnapshotFileList as YAML.
    Yaml,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// List the ETCDSnapshotFiles of the cluster (every node's copies, through the Kubernetes API
    /// and KUBECONFIG) instead of this node's directory and S3.
    #[arg(long)]
    pub cluster: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The flags k3s accepts on every `etcd-snapshot` subcommand.
    #[command(flatten)]
    pub flags: SnapshotFlags,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Snapshot names to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The flags k3s accepts on every `etcd-snapshot` subcommand.
    #[command(flatten)]
    pub flags: SnapshotFlags,
}

/// Which snapshots S3 retention counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ScopeArg {
    /// Each node's snapshots separately.
    #[default]
    Node,
    /// All of this cluster's snapshots in the folder (the reference's behaviour).
    Cluster,
}

/// `prune` (`--name` is the prefix of the names pruned, `--snapshot-retention` the number kept,
/// `--s3-retention` the number kept in S3).
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also delete snapshots older than this (e.g. 36h, 7d, 2w).
    #[arg(long = "max-age")]
    pub max_age: Option<String>,
    /// Also keep the newest snapshot of each of the last N hours.
    #[arg(long = "keep-hourly", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_hourly: Option<u32>,
    /// Also keep the newest snapshot of each of the last N days.
    #[arg(long = "keep-daily", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// Also keep the newest snapshot of each of the last N weeks.
    #[arg(long = "keep-weekly", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// Also keep the newest snapshot of each of the last N months.
    #[arg(long = "keep-monthly", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// What S3 retention counts over.
    #[arg(long = "retention-scope", value_enum, default_value_t = ScopeArg::Node)]
    pub retention_scope: ScopeArg,
    /// Print what would be kept and deleted, with the reason, and delete nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// With S3, etcd (`--etcd-endpoint`) is asked for its cluster ID, so that S3 pruning never
    /// touches another cluster's snapshots sharing the folder.
    #[command(flatten)]
    pub flags: SnapshotFlags,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot to restore: a path, a name in `--dir`, or (with `--s3`) an S3 object name.
    #[arg(long = "cluster-reset-restore-path", visible_alias = "snapshot")]
    pub snapshot: Option<String>,
    /// Reset membership to this one member (required; without a snapshot, resets the existing
    /// data dir).
    #[arg(long = "cluster-reset")]
    pub cluster_reset: bool,
    /// etcd data directory to restore into (the old one is moved aside, never deleted).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Only fetch, decompress and verify into this file (for k3s/rke2 `--cluster-reset-restore-path`).
    #[arg(long = "output")]
    pub output: Option<PathBuf>,
    /// Member name of the restored single-member cluster.
    #[arg(long = "name", default_value = "default")]
    pub name: String,
    /// Peer URL of the restored member.
    #[arg(
        long = "initial-advertise-peer-urls",
        default_value = "http://localhost:2380"
    )]
    pub peer_url: String,
    /// Raise etcd's revision by N after the restore and mark it compacted (etcdutl
    /// --bump-revision N --mark-compacted), so that every watcher and cache of the API server
    /// relists instead of missing changes. N (1 to 10^12) must exceed the writes since the
    /// snapshot.
    #[arg(
        long = "bump-revision",
        value_name = "N",
        default_value_t = crate::restore::DEFAULT_BUMP_REVISION,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000)
    )]
    pub bump_revision: u64,
    /// Restore without the revision bump: etcd's revision goes back to the snapshot's, and
    /// everything that watches the API server must be restarted by hand.
    #[arg(long = "no-bump-revision", conflicts_with = "bump_revision")]
    pub no_bump_revision: bool,
    /// Encryption at rest.
    #[command(flatten)]
    pub encryption: EncryptionArgs,
    /// The local snapshot folder.
    #[command(flatten)]
    pub dir: DirArgs,
    /// S3 storage.
    #[command(flatten)]
    pub s3: S3Args,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot to verify: a path, a name in `--dir`, or (with `--s3`) an S3 object name.
    #[arg(id = "snapshot", value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The flags k3s accepts on every `etcd-snapshot` subcommand.
    #[command(flatten)]
    pub flags: SnapshotFlags,
}

/// `trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// ETCDSnapshotSchedule to run now.
    pub schedule: String,
    /// Wait until the run's snapshots are Ready or Failed, and print them.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

/// `uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Namespace of the operator (its Deployment, DaemonSet and pods).
    #[arg(long, env = "POD_NAMESPACE", default_value = "etcd-snapshot")]
    pub namespace: String,
    /// The controller Deployment to scale to 0 first (omit when it is already gone).
    #[arg(long = "controller-deployment")]
    pub controller_deployment: Option<String>,
    /// The agent DaemonSet to delete first (omit when it is already gone).
    #[arg(long = "agent-daemonset")]
    pub agent_daemonset: Option<String>,
    /// Label selector of the controller and agent pods: wait until none is left before
    /// releasing the records.
    #[arg(long = "pod-selector")]
    pub pod_selector: Option<String>,
    /// How long to wait for those pods to stop (the records are released after it anyway).
    #[arg(long, default_value = "2m")]
    pub timeout: String,
}

/// `controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Namespace of the operator (Lease, S3 Secrets, extra-metadata ConfigMap, agent Leases).
    #[arg(long, env = "POD_NAMESPACE", default_value = "etcd-snapshot")]
    pub namespace: String,
    /// Identity in leader election (the chart sets the pod name; default: host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long = "metrics-addr", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Leader lease duration (e.g. 15s).
    #[arg(long = "lease-duration", default_value = "15s")]
    pub lease_duration: String,
    /// A leader that could not renew for this long stops acting (e.g. 10s).
    #[arg(long = "renew-deadline", default_value = "10s")]
    pub renew_deadline: String,
    /// How often to try to acquire or renew the lease (e.g. 2s).
    #[arg(long = "retry-period", default_value = "2s")]
    pub retry_period: String,
    /// Longest time between two reconciles of a schedule (e.g. 5m).
    #[arg(long, default_value = "5m")]
    pub resync: String,
    /// Failed ETCDSnapshotFiles are deleted this long after they failed (e.g. 24h).
    #[arg(long = "failed-ttl", default_value = "24h")]
    pub failed_ttl: String,
    /// How often the S3 folders in use are compared with the records (e.g. 10m).
    #[arg(long = "s3-sync-interval", default_value = "10m")]
    pub s3_sync_interval: String,
    /// A deleted S3 record whose S3 settings cannot be read (its Secret is gone or invalid) for
    /// this long is released WITHOUT deleting the object, with a Warning event naming it (e.g. 1h).
    #[arg(long = "s3-release-after", default_value = "1h")]
    pub s3_release_after: String,
    /// How often each schedule's S3 storage is checked again (list, write, read and delete a
    /// probe object; also checked whenever its settings or Secret change), e.g. 1h.
    #[arg(long = "s3-preflight-interval", default_value = "1h")]
    pub s3_preflight_interval: String,
    /// Namespace of the events about schedules and records (cluster-scoped objects): `auto` is
    /// kube-system before Kubernetes 1.22 (the only one it accepts) and default from 1.22 on.
    #[arg(long = "events-namespace", value_enum, default_value_t = EventsNamespace::Auto)]
    pub events_namespace: EventsNamespace,
}

/// `agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Name of the node this agent runs on (the downward API sets it in the chart).
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of the operator (S3 Secrets, agent Leases).
    #[arg(long, env = "POD_NAMESPACE", default_value = "etcd-snapshot")]
    pub namespace: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long = "metrics-addr", default_value = "0.0.0.0:8081")]
    pub metrics_addr: String,
    /// How often the agent renews its registration and checks its etcd member (e.g. 10s).
    #[arg(long, default_value = "10s")]
    pub heartbeat: String,
    /// How often the snapshot directory is compared with the ETCDSnapshotFiles, after a first
    /// comparison at start (e.g. 10m).
    #[arg(long = "sync-interval", default_value = "10m")]
    pub sync_interval: String,
    /// On SIGTERM, how long a snapshot in progress may take to finish before it is cancelled
    /// (its records Failed, nothing kept); 0s cancels at once. Cleanup then takes at most 15s
    /// more: keep the pod's terminationGracePeriodSeconds above both.
    #[arg(long = "shutdown-grace", default_value = "5s")]
    pub shutdown_grace: String,
    /// Namespace of the events about records (cluster-scoped objects): `auto` is kube-system
    /// before Kubernetes 1.22 (the only one it accepts) and default from 1.22 on.
    #[arg(long = "events-namespace", value_enum, default_value_t = EventsNamespace::Auto)]
    pub events_namespace: EventsNamespace,
    /// The local snapshot folder.
    #[command(flatten)]
    pub dir: DirArgs,
    /// How to reach etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
