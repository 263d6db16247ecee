//! Operations (issue 15) on the real API server, SeaweedFS and etcd, with the real controller and
//! agent processes: the S3 storage preflight names a refused permission with exactly one Warning,
//! and a copy retention cannot delete is loud (`PruneFailed`, metric, `BackupsHealthy` False)
//! until it can be deleted; the chart's PrometheusRule, rendered by real Helm, uses only metrics
//! the running controller and agent export; with k3s's own ETCDSnapshotFile CRD installed, a
//! starting controller warns once. One environment for all (the `make test` budget).

use crate::operator_support;

use eso_testenv::S3Options;
use etcd_snapshot::api::ETCDSnapshotSchedule;
use etcd_snapshot::consts;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use operator_support::{OperatorEnv, OperatorOptions, SECRET, is_local, local_path};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// Time for one on-demand run of a small database to finish, or a condition to show.
const RUN: Duration = Duration::from_secs(30);
/// A cron that does not fire during the test.
const NEW_YEAR_ONLY: &str = "0 0 1 1 *";
/// The limited SeaweedFS identity may read, list and tag, but not write.
const WITHOUT_WRITE: &[&str] = &["Read", "List", "Tagging"];

async fn condition(env: &OperatorEnv, schedule: &str, type_: &str) -> Option<Condition> {
    Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get(schedule)
        .await
        .ok()?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
}

async fn wait_condition(
    env: &OperatorEnv,
    schedule: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Condition {
    wait_condition_for(env, schedule, type_, status, reason, RUN).await
}

async fn wait_condition_for(
    env: &OperatorEnv,
    schedule: &str,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> Condition {
    let what = format!("{schedule}: {type_}={status} ({reason})");
    env.wait_until(&what, timeout, async || {
        condition(env, schedule, type_)
            .await
            .filter(|c| c.status == status && c.reason == reason)
    })
    .await
}

async fn count_events(env: &OperatorEnv, name: &str, reason: &str) -> usize {
    env.events_about(name)
        .await
        .iter()
        .filter(|(r, _)| r == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_s3_permissions_and_failed_prunes_are_reported_once_and_recover() {
    let env = OperatorEnv::start(OperatorOptions {
        s3: S3Options {
            limited_actions: Some(WITHOUT_WRITE),
            ..S3Options::default()
        },
        ..OperatorOptions::default()
    })
    .await;

    // 1. Storage preflight: an S3 user without Write.
    let limited = env.s3.limited_keys.clone().expect("limited identity");
    env.create_s3_secret_with_keys(limited).await;
    env.apply(&format!(
        "apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: limited
spec:
  schedule: \"{NEW_YEAR_ONLY}\"
  s3:
    enabled: true
    configSecretRef:
      name: {SECRET}
"
    ));
    let storage = wait_condition(
        &env,
        "limited",
        consts::conditions::STORAGE_READY,
        "False",
        consts::conditions::REASON_PERMISSION_DENIED,
    )
    .await;
    assert!(
        storage
            .message
            .starts_with("PutObject refused: snapshots cannot be uploaded"),
        "{}",
        storage.message
    );
    // The schedule stays Ready (kstatus): the preflight is information.
    let ready = condition(&env, "limited", consts::conditions::READY).await;
    assert_eq!(ready.map(|c| c.status).as_deref(), Some("True"));
    // More reconciles (a run, its records' updates) do not repeat the Warning. (The run's S3
    // copy fails: the user may not write.)
    let run = env.request_run("limited").await;
    env.wait_run_finished(&run, 2, RUN).await;
    let events = count_events(&env, "limited", consts::REASON_STORAGE_CHECK_FAILED).await;
    assert_eq!(events, 1, "{:?}", env.events_about("limited").await);
    // Rotating the Secret to a user with every permission is checked at once.
    env.create_s3_secret(None).await;
    wait_condition(
        &env,
        "limited",
        consts::conditions::STORAGE_READY,
        "True",
        consts::conditions::REASON_STORAGE_CHECKED,
    )
    .await;

    // 2. A local copy retention cannot delete: its file was replaced by a directory.
    env.apply(&format!(
        "apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: prune
spec:
  schedule: \"{NEW_YEAR_ONLY}\"
  namePrefix: prune
  local:
    retention:
      count: 1
"
    ));
    let run = env.request_run("prune").await;
    let first = env.wait_run_ready(&run, 1, RUN).await;
    let first = first
        .iter()
        .find(|f| is_local(f))
        .expect("local copy")
        .clone();
    let path = local_path(&first);
    std::fs::remove_file(&path).expect("remove the snapshot file");
    std::fs::create_dir_all(path.join("blocker")).expect("a directory in its place");
    let run = env.request_run("prune").await;
    env.wait_run_ready(&run, 1, RUN).await;

    let health = wait_condition(
        &env,
        "prune",
        consts::conditions::BACKUPS_HEALTHY,
        "False",
        consts::conditions::REASON_PRUNE_FAILED,
    )
    .await;
    assert!(
        health
            .message
            .starts_with("retention could not delete 1 copy (local of node0:"),
        "{}",
        health.message
    );
    let name = kube::ResourceExt::name_any(&first);
    assert!(count_events(&env, &name, consts::REASON_PRUNE_FAILED).await >= 1);
    let metrics = env.metrics_text("agent node0").await;
    assert!(
        metrics.contains(r#"etcd_snapshot_prune_failures_total{storage="local",schedule="prune"}"#),
        "{metrics}"
    );
    // Retries back off: some seconds of failures make a few attempts, one event series, and
    // log lines only at attempts 1, 2, 4, 8, ...
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = metrics_value(
        &env.metrics_text("agent node0").await,
        r#"etcd_snapshot_prune_failures_total{storage="local",schedule="prune"}"#,
    );
    assert!((1..=6).contains(&attempts), "attempts in ~10 s: {attempts}");
    assert_eq!(
        count_events(&env, &name, consts::REASON_PRUNE_FAILED).await,
        1
    );
    let logged = env
        .log("agent node0")
        .matches("could not delete the local file of a deleted record")
        .count();
    assert!(logged <= 3, "log lines: {logged}");

    // Fixed: the next retry deletes nothing more, releases the record, and health recovers.
    // (The backoff may have grown to half a minute by now.)
    std::fs::remove_dir_all(&path).expect("remove the blocker");
    wait_condition_for(
        &env,
        "prune",
        consts::conditions::BACKUPS_HEALTHY,
        "True",
        consts::conditions::REASON_HEALTHY,
        Duration::from_secs(90),
    )
    .await;

    // 3. The chart's alerts use only metrics these processes export (they have now stored,
    // failed and failed to prune copies, and judged schedules).
    let metrics = format!(
        "{}\n{}",
        env.metrics_text("controller ctl-1").await,
        env.metrics_text("agent node0").await
    );
    let rules = rendered_rules();
    let alerts: Vec<&str> = rules.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(alerts, ALERTS);
    for (alert, expr) in &rules {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert}: no metric in {expr}");
        for name in names {
            assert!(
                exported(&metrics, &name),
                "{alert} uses {name}, which the controller and agent do not export:\n{metrics}"
            );
        }
    }

    // 4. k3s and rke2: their own ETCDSnapshotFile CRD is installed; a controller starting then
    // warns once (event on that CRD and a log line) with the commands to tell records apart.
    env.apply(K3S_CRD);
    env.terminate("controller ctl-1", Duration::from_secs(20));
    env.start_controller("ctl-2");
    env.wait_for_leader("ctl-2", RUN).await;
    let note = env
        .wait_until("the k3s coexistence warning", RUN, async || {
            env.events_about(consts::K3S_SNAPSHOT_FILE_CRD)
                .await
                .into_iter()
                .find(|(reason, _)| reason == consts::REASON_K3S_DETECTED)
                .map(|(_, note)| note)
        })
        .await;
    for part in [
        "kubectl get etcdsnapshotfiles.k3s.cattle.io",
        "kubectl get etcdsnapshotfiles.etcdsnapshot.io",
        "--etcd-disable-snapshots",
    ] {
        assert!(note.contains(part), "{part:?} in {note}");
    }
    let warnings = count_events(
        &env,
        consts::K3S_SNAPSHOT_FILE_CRD,
        consts::REASON_K3S_DETECTED,
    )
    .await;
    assert_eq!(warnings, 1);
    assert_eq!(
        env.log("controller ctl-2")
            .matches("k3s snapshot records found")
            .count(),
        1
    );
    env.assert_no_forbidden();
}

/// k3s's ETCDSnapshotFile CRD, as a k3s server installs it (the schema trimmed).
const K3S_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: etcdsnapshotfiles.k3s.cattle.io
spec:
  group: k3s.cattle.io
  names:
    kind: ETCDSnapshotFile
    plural: etcdsnapshotfiles
    singular: etcdsnapshotfile
  scope: Cluster
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

/// The alerts the README describes.
const ALERTS: [&str; 5] = [
    "EtcdSnapshotStale",
    "EtcdSnapshotBackupsUnhealthy",
    "EtcdSnapshotFailing",
    "EtcdSnapshotPruneFailing",
    "EtcdSnapshotVerifyFailed",
];

/// `helm template` of the chart with the PrometheusRule enabled: its (alert, expr) pairs.
fn rendered_rules() -> Vec<(String, String)> {
    let helm = eso_testenv::helm().unwrap_or_else(|e| {
        panic!("real Helm is needed ({e}): run scripts/install-test-deps.sh (make test-deps)")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(helm)
        .current_dir(eso_testenv::repo_root())
        .args([
            "template",
            "etcd-snapshot",
            "charts/etcd-snapshot-operator",
            "--namespace",
            "etcd-snapshot",
            "--set",
            "prometheusRule.enabled=true",
        ])
        .env("HELM_CONFIG_HOME", dir.path().join("config"))
        .env("HELM_CACHE_HOME", dir.path().join("cache"))
        .env("HELM_DATA_HOME", dir.path().join("data"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut rules = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("YAML document");
        if v["kind"].as_str() != Some("PrometheusRule") {
            continue;
        }
        for group in v["spec"]["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                rules.push((
                    rule["alert"].as_str().expect("alert name").to_string(),
                    rule["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
    }
    rules
}

/// Metric names (`etcd_snapshot_…`) an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("etcd_snapshot_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Whether `/metrics` text declares the sample name `name`: a family of that name, or a counter
/// family it is the `_total` of, or a histogram it is the `_bucket`/`_sum`/`_count` of.
fn exported(metrics: &str, name: &str) -> bool {
    let declared = |family: &str, kind: &str| {
        metrics
            .lines()
            .any(|l| l == format!("# TYPE {family} {kind}"))
    };
    let any_kind = |family: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {family} ")))
    };
    if any_kind(name) && !declared(name, "counter") && !declared(name, "histogram") {
        return true;
    }
    if let Some(family) = name.strip_suffix("_total") {
        return declared(family, "counter");
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|family| declared(family, "histogram"))
    })
}

#[test]
fn metric_names_are_found_and_matched_to_their_families() {
    assert_eq!(
        metric_names("time() - max(etcd_snapshot_a_seconds{x=\"y\"}) > 2 * etcd_snapshot_b"),
        BTreeSet::from([
            "etcd_snapshot_a_seconds".to_string(),
            "etcd_snapshot_b".to_string()
        ])
    );
    let text = "# TYPE etcd_snapshot_failures counter\n# TYPE etcd_snapshot_leader gauge\n# TYPE etcd_snapshot_duration_seconds histogram\n";
    assert!(exported(text, "etcd_snapshot_failures_total"));
    assert!(!exported(text, "etcd_snapshot_failures"));
    assert!(exported(text, "etcd_snapshot_leader"));
    assert!(exported(text, "etcd_snapshot_duration_seconds_bucket"));
    assert!(!exported(text, "etcd_snapshot_missing_total"));
}

/// The value of the sample starting with `series` in an OpenMetrics text.
fn metrics_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
