//! `helm upgrade` with changed values, `helm uninstall`, and a reinstall.

use crate::e2e_support::{
    self, OPERATOR_NS, RELEASE, helm, helm_plain, kubectl, s3_bucket_key, snapshot_files, wait_for,
};
use eso_testenv::{Cluster, S3Server};
use etcd_snapshot::api::{ETCDSnapshotFile, ETCDSnapshotSchedule};
use etcd_snapshot::consts;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The second tag of the image under test (the same binary), for the upgrade.
pub const UPGRADE_TAG: &str = "e2e-upgrade";
/// The release's schedule after the upgrade.
const UPGRADE_CRON: &str = "30 2 * * *";
const UPGRADE_RETENTION: u32 = 3;
const OPERATOR_PODS: &str = "app.kubernetes.io/component in (controller,agent)";

/// Chart values of the upgrade: another image tag, schedule and retention.
pub fn upgraded_values(cluster: &Cluster) -> String {
    e2e_support::values_yaml(
        cluster,
        UPGRADE_TAG,
        &format!(
            "schedule: {{cron: \"{UPGRADE_CRON}\"}}\nlocal: {{retention: {UPGRADE_RETENTION}}}\n"
        ),
    )
}

async fn operator_pods(client: &Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    pods.list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .expect("list the operator's pods")
        .items
}

fn image(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or_default()
}

/// `helm upgrade --wait` with a new image tag, cron and retention: every pod of the release is
/// replaced by a Ready pod of the new tag (2 controllers, 1 agent), and the schedule's spec and
/// next tick follow the new values.
pub async fn helm_upgrade_rolls_out_and_takes_effect(
    cluster: &Cluster,
    client: &Client,
    values: &Path,
) {
    let t = Instant::now();
    helm(
        cluster,
        &["upgrade", RELEASE, "--wait", "--timeout=5m"],
        values,
    );
    let upgraded = t.elapsed();
    let suffix = format!(":{UPGRADE_TAG}");
    let pods = wait_for(
        "every operator pod on the new tag and Ready, no old pod left",
        Duration::from_secs(180),
        async || {
            let pods = operator_pods(client).await;
            let controllers = pods
                .iter()
                .filter(|p| {
                    p.labels()
                        .get("app.kubernetes.io/component")
                        .map(String::as_str)
                        == Some("controller")
                })
                .count();
            (pods.len() == 3
                && controllers == 2
                && pods
                    .iter()
                    .all(|p| image(p).ends_with(&suffix) && e2e_support::pod_ready(p)))
            .then_some(pods)
        },
    )
    .await;
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    let next = wait_for(
        "the release's schedule on the new cron and retention, observed by the controller",
        Duration::from_secs(120),
        async || {
            let s = schedules
                .get(RELEASE)
                .await
                .expect("get the release's schedule");
            let status = s.status.as_ref()?;
            let retention = s.spec.local.retention.as_ref().and_then(|r| r.count);
            let next = serde_json::to_string(status.next_schedule_time.as_ref()?)
                .expect("a time serializes");
            (s.spec.schedule == UPGRADE_CRON
                && retention == Some(UPGRADE_RETENTION)
                && status.observed_generation == s.metadata.generation
                && next.contains("T02:30:00"))
            .then_some(next)
        },
    )
    .await;
    eprintln!(
        "e2e: helm upgrade --wait in {upgraded:.1?}; pods {:?} on {UPGRADE_TAG}; next tick {next} after {:.1?}",
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        t.elapsed()
    );
}

fn local_path(f: &ETCDSnapshotFile) -> Option<PathBuf> {
    f.spec.location.strip_prefix("file://").map(PathBuf::from)
}

/// `helm uninstall --wait` (the chart's pre-delete hook stops the operator and releases the
/// records): every record, local file and S3 object stays; every record lost its finalizer, and
/// one deleted with kubectl goes away at once while its file stays. `helm install --wait` again:
/// `kubectl get esf` shows every old snapshot, the one whose record was deleted too (the agent
/// records its file again at start), and the controller puts the finalizers back.
pub async fn helm_uninstall_keeps_every_snapshot_and_reinstall_shows_them(
    cluster: &Cluster,
    client: &Client,
    s3: &S3Server,
    values: &Path,
) {
    let before = snapshot_files(client, "").await;
    let mut names: Vec<String> = before.iter().map(|f| f.name_any()).collect();
    names.sort();
    // The stored copies: those of Ready records (a Failed one never had a file).
    let ready = |f: &&ETCDSnapshotFile| {
        f.status.as_ref().and_then(|s| s.phase) == Some(etcd_snapshot::api::Phase::Ready)
    };
    let locals: Vec<PathBuf> = before.iter().filter(ready).filter_map(local_path).collect();
    let objects: Vec<(String, String)> = before
        .iter()
        .filter(ready)
        .filter(|f| f.spec.location.starts_with("s3://"))
        .map(|f| s3_bucket_key(&f.spec.location))
        .collect();
    assert!(
        !locals.is_empty() && !objects.is_empty(),
        "local and S3 records to keep: {names:?}"
    );

    let t = Instant::now();
    let (ok, out, err) = helm_plain(cluster, &["uninstall", RELEASE, "--wait", "--timeout=5m"]);
    assert!(ok, "helm uninstall: {out}\n{err}");
    let uninstalled = t.elapsed();
    assert!(
        operator_pods(client).await.is_empty(),
        "operator pods left after helm uninstall --wait"
    );
    let after = snapshot_files(client, "").await;
    let mut left: Vec<String> = after.iter().map(|f| f.name_any()).collect();
    left.sort();
    assert_eq!(left, names, "helm uninstall kept every record");
    for f in &after {
        assert!(
            !f.finalizers().iter().any(|x| x == consts::FINALIZER),
            "{} still has the finalizer after the uninstall",
            f.name_any()
        );
        assert!(
            f.annotations().contains_key(consts::ANNOTATION_RELEASED),
            "{} not marked released",
            f.name_any()
        );
    }
    for path in &locals {
        assert!(path.exists(), "helm uninstall deleted {}", path.display());
    }
    let s3_client = crate::support::s3_client(s3);
    for (bucket, key) in &objects {
        s3_client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("helm uninstall deleted s3://{bucket}/{key}: {e}"));
    }

    let victim = after
        .iter()
        .filter(ready)
        .find(|f| local_path(f).is_some())
        .expect("a Ready local record");
    let victim_name = victim.name_any();
    let victim_path = local_path(victim).expect("local path");
    let t = Instant::now();
    let (ok, out, err) = kubectl(cluster, &["delete", "esf", &victim_name, "--timeout=60s"]);
    assert!(
        ok,
        "kubectl delete esf {victim_name} after the uninstall: {out}\n{err}"
    );
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    assert!(
        files
            .get_opt(&victim_name)
            .await
            .expect("get esf")
            .is_none(),
        "{victim_name} still there"
    );
    assert!(
        victim_path.exists(),
        "deleting a record while uninstalled deleted {}",
        victim_path.display()
    );
    eprintln!(
        "e2e: helm uninstall --wait in {uninstalled:.1?} kept {} records, {} files, {} objects; kubectl delete esf {victim_name} in {:.1?}",
        names.len(),
        locals.len(),
        objects.len(),
        t.elapsed()
    );

    let t = Instant::now();
    helm(
        cluster,
        &["install", RELEASE, "--wait", "--timeout=5m"],
        values,
    );
    let reinstalled = t.elapsed();
    let listed = wait_for(
        "kubectl get esf to show every old snapshot, with finalizers back",
        Duration::from_secs(120),
        async || {
            let (ok, out, _) = kubectl(cluster, &["get", "esf"]);
            if !ok || !names.iter().all(|n| out.contains(n.as_str())) {
                return None;
            }
            let adopted = snapshot_files(client, "")
                .await
                .iter()
                .all(|f| f.finalizers().iter().any(|x| x == consts::FINALIZER));
            adopted.then_some(out)
        },
    )
    .await;
    eprintln!(
        "e2e: reinstalled (helm install --wait) in {reinstalled:.1?}; every old snapshot listed and adopted after {:.1?}:\n{listed}",
        t.elapsed()
    );
}
