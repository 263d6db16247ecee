//! No storms (issue 15): while S3 is down, a schedule's runs fail, the S3 sync and the storage
//! preflight fail again and again; the operator must say so with a bounded number of events and
//! log lines, and recover by itself when S3 is back.
//!
//! `make test` runs a short outage (`ESO_OUTAGE_SECONDS`, default 75 s) and asserts bounds that
//! grow with the number of runs, not with the number of retries. `make outage-drill` runs the same
//! test with a 10-minute outage and prints the counts (recorded in RELIABILITY.md).

use crate::operator_support;

use etcd_snapshot::api::ETCDSnapshotSchedule;
use etcd_snapshot::consts;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use operator_support::{OperatorEnv, OperatorOptions, SECRET};
use std::time::{Duration, Instant};

/// Time for a run to finish or a condition to show.
const RUN: Duration = Duration::from_secs(30);

/// The processes whose logs are counted.
const PROCESSES: [&str; 2] = ["controller ctl-1", "agent node0"];

/// (log lines, WARN/ERROR log lines) of the operator's processes so far.
fn log_lines(env: &OperatorEnv) -> (usize, usize) {
    let mut all = 0;
    let mut warn = 0;
    for key in PROCESSES {
        let log = env.log(key);
        all += log.lines().count();
        warn += log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count();
    }
    (all, warn)
}

/// (Event objects, occurrences counting series, Warning occurrences) of events from the operator
/// observed since `since`.
async fn events_since(env: &OperatorEnv, since: jiff::Timestamp) -> (usize, i64, i64) {
    let list = Api::<Event>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list events");
    let mut objects = 0;
    let mut occurrences = 0;
    let mut warnings = 0;
    for e in list.items {
        if e.reporting_controller.as_deref() != Some(consts::REPORTER) {
            continue;
        }
        let last = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .or(e.event_time.as_ref().map(|t| t.0));
        if last.is_none_or(|t| t < since) {
            continue;
        }
        objects += 1;
        // Occurrences within the window: a series started before it counts whole (an upper bound).
        let n = e.series.as_ref().map_or(1, |s| i64::from(s.count));
        occurrences += n;
        if e.type_.as_deref() == Some("Warning") {
            warnings += n;
        }
    }
    (objects, occurrences, warnings)
}

async fn backups_healthy(env: &OperatorEnv) -> Option<(String, String)> {
    let s = Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get("outage")
        .await
        .ok()?;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == consts::conditions::BACKUPS_HEALTHY)
        .map(|c| (c.status, c.reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_gives_bounded_events_and_log_lines_and_recovers_by_itself() {
    let outage = Duration::from_secs(
        std::env::var("ESO_OUTAGE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(75),
    );
    // Faster S3 sync and preflight than the defaults: more repeats to keep quiet about.
    let mut env = OperatorEnv::start(OperatorOptions {
        controller_args: [
            "--s3-sync-interval",
            "10s",
            "--s3-preflight-interval",
            "30s",
        ]
        .map(String::from)
        .to_vec(),
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(&format!(
        "apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: outage
spec:
  schedule: \"* * * * *\"
  s3:
    enabled: true
    configSecretRef:
      name: {SECRET}
"
    ));
    let run = env.request_run("outage").await;
    env.wait_run_ready(&run, 2, RUN).await;
    env.wait_until("BackupsHealthy=True", RUN, async || {
        backups_healthy(&env).await.filter(|(s, _)| s == "True")
    })
    .await;

    // S3 goes down for `outage`; a run is requested at once, and the minute ticks keep coming.
    let since = jiff::Timestamp::now();
    let (lines_before, warn_before) = log_lines(&env);
    let started = Instant::now();
    env.s3.stop();
    let run = env.request_run("outage").await;
    env.wait_run_finished(&run, 2, RUN).await;
    env.wait_until("BackupsHealthy=False during the outage", RUN, async || {
        backups_healthy(&env).await.filter(|(s, _)| s == "False")
    })
    .await;
    // The outage itself is the thing simulated: hold S3 down for its length.
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    let (lines_after, warn_after) = log_lines(&env);
    let (objects, occurrences, warnings) = events_since(&env, since).await;
    let runs = 1 + outage.as_secs() / 60 + 1;
    env.s3.restart().expect("restart SeaweedFS");

    // Recovery by itself: the next run stores both copies and the backups are healthy again.
    let run = env.request_run("outage").await;
    env.wait_run_ready(&run, 2, Duration::from_secs(90)).await;
    env.wait_until(
        "BackupsHealthy=True after the outage",
        Duration::from_secs(90),
        async || backups_healthy(&env).await.filter(|(s, _)| s == "True"),
    )
    .await;
    let recovered = started.elapsed().saturating_sub(outage);

    let report = format!(
        "S3 outage of {}s (at most {runs} runs): {objects} Event objects, {occurrences} event occurrences ({warnings} Warning), {} log lines ({} WARN/ERROR) from the controller and the agent; recovered {}s after S3 came back",
        outage.as_secs(),
        lines_after - lines_before,
        warn_after - warn_before,
        recovered.as_secs()
    );
    println!("{report}");
    // Bounds that grow with the runs, not with the retries (S3 sync every 10 s, preflight every
    // 30 s, reconcile retries): per failed run a failed copy and a failed run (Warning) and the
    // stored local copy (Normal), plus one preflight Warning.
    let runs = i64::try_from(runs).unwrap_or(i64::MAX);
    assert!(occurrences <= 4 * runs + 4, "{report}");
    assert!(warnings <= 3 * runs + 3, "{report}");
    let warn_lines = i64::try_from(warn_after - warn_before).unwrap_or(i64::MAX);
    assert!(warn_lines <= 6 * runs + 20, "{report}");
    env.assert_no_forbidden();
}
