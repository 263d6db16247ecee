//! Operations (issue 15) on the real API server, SeaweedFS and etcd, with the real controller and
//! agent processes: the S3 storage preflight names a refused permission with exactly one Warning,
//! and a copy retention cannot delete is loud (`PruneFailed`, metric, `BackupsHealthy` False)
//! until it can be deleted. One environment for both (the `make test` budget).

#[path = "support/operator.rs"]
mod operator_support;
mod support;

use eso_testenv::S3Options;
use etcd_snapshot::api::ETCDSnapshotSchedule;
use etcd_snapshot::consts;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use operator_support::{OperatorEnv, OperatorOptions, SECRET, is_local, local_path};
use std::time::Duration;

/// Time for one on-demand run of a small database to finish, or a condition to show.
const RUN: Duration = Duration::from_secs(30);
/// A cron that does not fire during the test.
const NEW_YEAR_ONLY: &str = "0 0 1 1 *";
/// The limited SeaweedFS identity may read, write and tag, but not list.
const WITHOUT_LIST: &[&str] = &["Read", "Write", "Tagging"];

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
            limited_actions: Some(WITHOUT_LIST),
            ..S3Options::default()
        },
        ..OperatorOptions::default()
    })
    .await;

    // 1. Storage preflight: an S3 user without List.
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
            .starts_with("ListObjects refused: S3 sync and S3 retention cannot see"),
        "{}",
        storage.message
    );
    // The schedule stays Ready (kstatus): the preflight is information.
    let ready = condition(&env, "limited", consts::conditions::READY).await;
    assert_eq!(ready.map(|c| c.status).as_deref(), Some("True"));
    // More reconciles (a run, its records' updates) do not repeat the Warning.
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
    env.assert_no_forbidden();
}

/// The value of the sample starting with `series` in an OpenMetrics text.
fn metrics_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
