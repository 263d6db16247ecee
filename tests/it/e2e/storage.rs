//! S3 reached from the pods, a schedule applied as a GitOps tool applies it (one run a minute,
//! retention keeping its count, locally and in S3), and scheduled verification inside the agent
//! pod. The schedule ticks while other scenarios run (the leader failover among them), so the
//! minute-long waits overlap.

use crate::e2e_support::{
    self, apply_server_side, s3_bucket_key, snapshot_dir_entries, snapshot_files, wait_for,
};
use crate::support;
use eso_testenv::{Cluster, S3Options, S3Server};
use etcd_snapshot::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase};
use etcd_snapshot::consts::{self, conditions};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The GitOps schedule: cron `* * * * *`, local and S3 retention [`RETENTION`], verification
/// of every run.
pub const GITOPS: &str = "gitops-every-minute";
/// Its snapshot name prefix (the files on the host start with it).
const PREFIX: &str = "gitops";
/// The S3 config Secret in the operator's namespace.
const SECRET: &str = "e2e-s3";
const BUCKET: &str = "etcd-backups";
const FOLDER: &str = "e2e-cluster";
/// Snapshots kept, locally and in S3.
const RETENTION: usize = 2;
/// Field manager of the "GitOps tool".
const MANAGER: &str = "e2e-gitops";

/// SeaweedFS on the host's end of the cluster's veth (so every pod reaches it), a bucket, and
/// the S3 config Secret exactly as the README documents it, applied with kubectl.
pub async fn s3_for_the_pods(cluster: &Cluster) -> S3Server {
    let t = Instant::now();
    let bind = cluster
        .host_ip()
        .parse()
        .expect("the cluster's host address");
    let s3 = S3Server::start(S3Options {
        bind: Some(bind),
        ..Default::default()
    })
    .expect("start SeaweedFS on the cluster's host address");
    support::create_bucket(&s3, BUCKET).await;
    apply_server_side(
        cluster,
        MANAGER,
        &e2e_support::s3_secret_yaml(SECRET, &s3, BUCKET, FOLDER),
    );
    eprintln!(
        "e2e: SeaweedFS on {} and the S3 Secret in {:.1?}",
        s3.host_port(),
        t.elapsed()
    );
    s3
}

fn schedule_yaml(suspend: bool) -> String {
    format!(
        r#"apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: {GITOPS}
spec:
  schedule: "* * * * *"
  suspend: {suspend}
  namePrefix: {PREFIX}
  local:
    retention: {{count: {RETENTION}}}
  s3:
    enabled: true
    configSecretRef: {{name: {SECRET}}}
  verify: {{everyRuns: 1}}
"#
    )
}

/// `kubectl apply --server-side` of the schedule, as Flux or Argo CD would apply it; it is
/// healthy (kstatus Ready) before its first tick.
pub async fn apply_gitops_schedule(cluster: &Cluster, client: &Client) -> Instant {
    apply_server_side(cluster, MANAGER, &schedule_yaml(false));
    let applied = Instant::now();
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    wait_for(
        "the GitOps schedule to be Ready (kstatus) before its first tick",
        Duration::from_secs(60),
        async || {
            let s = schedules.get(GITOPS).await.ok()?;
            let status = s.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == conditions::READY && c.status == "True")
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "e2e: schedule {GITOPS} applied server-side, Ready in {:.1?}",
        applied.elapsed()
    );
    applied
}

fn selector() -> String {
    format!("{}={GITOPS}", consts::LABEL_SCHEDULE)
}

fn phase(f: &ETCDSnapshotFile) -> Option<Phase> {
    f.status.as_ref().and_then(|s| s.phase)
}

fn is_s3(f: &ETCDSnapshotFile) -> bool {
    f.spec.location.starts_with("s3://")
}

/// The first run's S3 copy, uploaded by the agent pod, is Ready and really in SeaweedFS: the
/// object's bytes hash to `status.sha256` (also in its metadata) and are a snapshot of the
/// cluster's etcd.
pub async fn s3_copy_ready_and_in_seaweedfs(client: &Client, s3: &S3Server, applied: Instant) {
    use sha2::Digest;
    let esf = wait_for(
        "a Ready S3 copy of the GitOps schedule",
        Duration::from_secs(180),
        async || {
            snapshot_files(client, &selector())
                .await
                .into_iter()
                .find(|f| is_s3(f) && phase(f) == Some(Phase::Ready))
        },
    )
    .await;
    eprintln!(
        "e2e: first Ready S3 copy {} {:.1?} after the apply",
        esf.name_any(),
        applied.elapsed()
    );
    let (bucket, key) = s3_bucket_key(&esf.spec.location);
    assert_eq!(bucket, BUCKET, "{}", esf.spec.location);
    let (bytes, meta) = support::s3_object(s3, &bucket, &key).await;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let recorded = esf.status.as_ref().and_then(|s| s.sha256.clone());
    assert_eq!(recorded.as_deref(), Some(sha.as_str()), "status.sha256");
    // A multipart upload learns the hash at its end: it is then a tag of the object.
    let stored = match meta.get(consts::s3_metadata::SHA256) {
        Some(sha) => Some(sha.clone()),
        None => support::s3_client(s3)
            .get_object_tagging()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .expect("get object tagging")
            .tag_set()
            .iter()
            .find(|t| t.key() == consts::s3_metadata::SHA256)
            .map(|t| t.value().to_string()),
    };
    assert_eq!(
        stored.as_deref(),
        Some(sha.as_str()),
        "the object's sha256 (metadata {meta:?} or tag)"
    );
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("from-s3.db");
    std::fs::write(&file, &bytes).expect("write the downloaded snapshot");
    let (revision, keys) = support::snapshot_status(&file);
    assert!(revision > 0 && keys > 0, "an empty snapshot in S3");
}

/// With `verify: {everyRuns: 1}` the agent pod verifies the newest run's copies, the local file
/// and the S3 object (download, sha256, etcd's hash, a test restore with the image's `etcdutl`
/// into its `/tmp` emptyDir, read-only root file system): both get `Verified=True`.
pub async fn verified_inside_the_agent_pod(client: &Client, applied: Instant) {
    let verified = |f: &ETCDSnapshotFile| {
        f.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == conditions::VERIFIED)
                .cloned()
        })
    };
    let (local, s3) = wait_for(
        "a local and an S3 copy of the GitOps schedule Verified",
        Duration::from_secs(180),
        async || {
            let files = snapshot_files(client, &selector()).await;
            if let Some(failed) = files
                .iter()
                .filter_map(verified)
                .find(|c| c.status == "False")
            {
                panic!("a verification failed in the pod: {failed:?}");
            }
            let pick = |s3: bool| {
                files
                    .iter()
                    .filter(|f| is_s3(f) == s3)
                    .find_map(|f| verified(f).filter(|c| c.status == "True"))
            };
            Some((pick(false)?, pick(true)?))
        },
    )
    .await;
    for c in [&local, &s3] {
        assert_eq!(c.reason, conditions::REASON_TEST_RESTORED, "{c:?}");
    }
    eprintln!(
        "e2e: verified in the agent pod {:.1?} after the apply: local \"{}\"; S3 \"{}\"",
        applied.elapsed(),
        local.message,
        s3.message
    );
}

/// What was seen of one tick: its copies Ready (local, S3).
#[derive(Debug, Default, Clone, Copy)]
struct Tick {
    local_ready: bool,
    s3_ready: bool,
}

/// One Ready snapshot (a local and an S3 copy) per minute, one run per tick (no duplicate
/// across the leader failover that happened meanwhile), and after [`RETENTION`] + 1 ticks
/// retention keeps exactly [`RETENTION`]: the newest records, their files on the host and
/// their objects in SeaweedFS, nothing else.
pub async fn one_snapshot_per_minute_and_retention_keeps_its_count(
    cluster: &Cluster,
    client: &Client,
    s3: &S3Server,
    applied: Instant,
) {
    let mut ticks: BTreeMap<i64, Tick> = BTreeMap::new();
    let (kept, files_on_host, keys) = wait_for(
        "3 ticks of the GitOps schedule and retention down to its count",
        Duration::from_secs(330),
        async || {
            let files = snapshot_files(client, &selector()).await;
            for f in &files {
                let labels = f.labels();
                assert!(
                    !labels.contains_key(consts::LABEL_REQUEST),
                    "a run nobody requested: {}",
                    f.name_any()
                );
                let tick: i64 = labels
                    .get(consts::LABEL_TICK)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("{} has no tick label", f.name_any()));
                let seen = ticks.entry(tick).or_default();
                if phase(f) == Some(Phase::Ready) {
                    if is_s3(f) {
                        seen.s3_ready = true;
                    } else {
                        seen.local_ready = true;
                    }
                }
                assert_ne!(phase(f), Some(Phase::Failed), "{f:?}");
            }
            if ticks.len() <= RETENTION {
                return None;
            }
            let newest: Vec<i64> = ticks.keys().rev().take(RETENTION).copied().collect();
            let settled = files.len() == 2 * RETENTION
                && files.iter().all(|f| {
                    phase(f) == Some(Phase::Ready)
                        && f.metadata.deletion_timestamp.is_none()
                        && f.labels()
                            .get(consts::LABEL_TICK)
                            .and_then(|t| t.parse().ok())
                            .is_some_and(|t| newest.contains(&t))
                });
            if !settled {
                return None;
            }
            let mut local: Vec<String> = files
                .iter()
                .filter(|f| !is_s3(f))
                .map(|f| f.spec.snapshot_name.clone())
                .collect();
            local.sort();
            let on_host: Vec<String> = snapshot_dir_entries(cluster)
                .into_iter()
                .filter(|n| n.starts_with(PREFIX))
                .collect();
            let mut wanted_keys: Vec<String> = files
                .iter()
                .filter(|f| is_s3(f))
                .map(|f| s3_bucket_key(&f.spec.location).1)
                .collect();
            wanted_keys.sort();
            let keys = support::s3_keys(s3, BUCKET, FOLDER).await;
            // Deleting files and objects follows the records by a moment.
            (on_host == local && keys == wanted_keys).then_some((files, on_host, keys))
        },
    )
    .await;
    let times: Vec<i64> = ticks.keys().copied().collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 60),
        "one run a minute, none missed: ticks {times:?}"
    );
    for (tick, seen) in &ticks {
        assert!(
            seen.local_ready && seen.s3_ready,
            "tick {tick}: both copies Ready ({seen:?})"
        );
    }
    eprintln!(
        "e2e: {GITOPS}: ticks {times:?}, {:.1?} after the apply retention keeps {} records: files {files_on_host:?}, objects {keys:?}",
        applied.elapsed(),
        kept.len()
    );
}

/// Suspend the GitOps schedule, as a GitOps change would (`suspend: true` applied server-side):
/// no more ticks disturb the later scenarios; the schedule stays healthy (reason Suspended).
pub async fn suspend_gitops_schedule(cluster: &Cluster, client: &Client) {
    apply_server_side(cluster, MANAGER, &schedule_yaml(true));
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    wait_for(
        "the GitOps schedule suspended",
        Duration::from_secs(60),
        async || {
            let s = schedules.get(GITOPS).await.ok()?;
            let status = s.status?;
            (status.observed_generation == s.metadata.generation
                && status.conditions.iter().any(|c| {
                    c.type_ == conditions::READY && c.reason == conditions::REASON_SUSPENDED
                }))
            .then_some(())
        },
    )
    .await;
}
