//! Faults: the API server restarted in the middle of a run, and the controller leader killed
//! (SIGKILL) while it prunes.
//!
//! What must hold: no duplicate snapshots (one record per copy, one file, one object per run);
//! the run's records finish Ready (no record left Running because a status write was lost); no
//! record is deleted without its file or object, no file or object is deleted without its
//! record being pruned; finalizers never stick (every deleted record goes).

use crate::faults_support;
use crate::operator_support;
use crate::proxy;

use etcd_snapshot::api::{ETCDSnapshotFile, Phase};
use etcd_snapshot::consts;
use kube::{Resource, ResourceExt};
use operator_support::{
    OperatorEnv, OperatorOptions, Schedule, error_message, is_local, local_path, phase, s3_key,
};
use proxy::ThrottleProxy;
use std::collections::BTreeSet;
use std::time::Duration;

const RUN: Duration = Duration::from_secs(60);

fn schedule_label(name: &str) -> String {
    format!("{}={name}", consts::LABEL_SCHEDULE)
}

/// Records, local files and S3 objects agree one to one.
async fn assert_records_match_storage(env: &OperatorEnv, schedule: &str) {
    let files = env.files(&schedule_label(schedule)).await;
    let on_disk: BTreeSet<String> = env.local_snapshots("node0").into_iter().collect();
    let in_s3: BTreeSet<String> = env.s3_keys().await.into_iter().collect();
    let local: BTreeSet<String> = files
        .iter()
        .filter(|f| is_local(f))
        .map(|f| f.spec.snapshot_name.clone())
        .collect();
    let s3: BTreeSet<String> = files.iter().filter(|f| !is_local(f)).map(s3_key).collect();
    assert_eq!(local, on_disk, "local records = files on disk");
    assert_eq!(s3, in_s3, "S3 records = objects in S3");
    for f in &files {
        assert!(
            f.meta().deletion_timestamp.is_none(),
            "no record is stuck in deletion: {}",
            f.name_any()
        );
        assert_eq!(
            phase(f),
            Phase::Ready,
            "{}: {}",
            f.name_any(),
            error_message(f)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarted_mid_run_leaves_one_ready_copy_each_and_no_duplicates() {
    let mut env = OperatorEnv::start(OperatorOptions::default()).await;
    faults_support::fill_etcd(&env.etcd.endpoint(0), 24).await;
    // 2 MiB/s to S3: the run takes ~12 s, the API server is away for part of it.
    let proxy = ThrottleProxy::start(&env.s3.host_port(), 2 << 20).await;
    env.create_s3_secret_at(&proxy.host_port(), &[]).await;
    env.apply(
        &Schedule::new("restarted")
            .local_retention(5)
            .s3_retention(5)
            .yaml(),
    );

    let run = env.request_run("restarted").await;
    env.wait_until("both copies Running", RUN, async || {
        let files = env.run_files(&run).await;
        (files.len() == 2 && files.iter().all(|f| phase(f) == Phase::Running)).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| env.api.restart(Duration::from_secs(3)))
        .expect("restart kube-apiserver");
    // A controller that could not renew its lease during the outage exits by design (so that
    // two replicas never act at once); its Deployment restarts it. Do what the kubelet does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let controller_exited = !env.is_running("controller ctl-1");
    if controller_exited {
        assert!(
            env.controller_log("ctl-1").contains("lost leadership"),
            "the controller exited only because it lost its lease:\n{}",
            env.diagnostics()
        );
        env.start_controller("ctl-1");
    }
    eprintln!("controller exited during the API outage: {controller_exited}");
    let files = env.wait_run_ready(&run, 2, RUN).await;
    // A kube-apiserver that just started answers 403 until its RBAC caches have synced (real
    // Kubernetes behaviour), so the processes may log "forbidden" right after the restart. From
    // here on nothing may be refused.
    let keys = ["agent node0", "controller ctl-1"];
    let marks: Vec<usize> = keys.iter().map(|k| env.log(k).len()).collect();
    // The controller and agents reconnect; another run works and nothing was taken twice.
    proxy.set_rate(0);
    let next = env.request_run("restarted").await;
    env.wait_run_ready(&next, 2, RUN).await;
    let all = env.files(&schedule_label("restarted")).await;
    assert_eq!(all.len(), 4, "two runs, two copies each: {:?}", names(&all));
    assert_eq!(env.local_snapshots("node0").len(), 2, "no duplicate file");
    assert_eq!(env.s3_keys().await.len(), 2, "no duplicate object");
    for f in &files {
        if is_local(f) {
            assert!(local_path(f).exists());
        }
    }
    assert_records_match_storage(&env, "restarted").await;
    for (key, mark) in keys.iter().zip(marks) {
        let log = env.log(key);
        let later = log.get(mark..).unwrap_or_default();
        assert!(
            !later.to_lowercase().contains("forbidden"),
            "{key} was refused by RBAC after the restart settled:\n{later}"
        );
    }
}

fn names(files: &[ETCDSnapshotFile]) -> Vec<String> {
    files.iter().map(|f| f.name_any()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_pruning_loses_nothing_and_leaves_no_finalizer_stuck() {
    let env = OperatorEnv::start(OperatorOptions {
        controllers: 2,
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(
        &Schedule::new("pruned")
            .local_retention(10)
            .s3_retention(10)
            .yaml(),
    );
    let mut runs = Vec::new();
    for _ in 0..4 {
        let run = env.request_run("pruned").await;
        env.wait_run_ready(&run, 2, RUN).await;
        runs.push(run);
    }
    let newest: BTreeSet<String> = names(&env.run_files(&runs[3]).await).into_iter().collect();
    assert_records_match_storage(&env, "pruned").await;

    // Retention drops to 1; the leader starts pruning and is killed as soon as it has begun.
    env.apply(
        &Schedule::new("pruned")
            .local_retention(1)
            .s3_retention(1)
            .yaml(),
    );
    env.wait_until("the leader to start pruning", RUN, async || {
        let files = env.files(&schedule_label("pruned")).await;
        (files.len() < 8 || files.iter().any(|f| f.meta().deletion_timestamp.is_some()))
            .then_some(())
    })
    .await;
    env.kill_controller("ctl-1");
    env.wait_for_leader("ctl-2", Duration::from_secs(20)).await;

    // The standby finishes: only the newest run is left, records and storage agree.
    let left = env
        .wait_until(
            "retention to leave only the newest run, with nothing stuck",
            RUN,
            async || {
                let files = env.files(&schedule_label("pruned")).await;
                let names: BTreeSet<String> = names(&files).into_iter().collect();
                (names == newest
                    && env.local_snapshots("node0").len() == 1
                    && env.s3_keys().await.len() == 1)
                    .then_some(files)
            },
        )
        .await;
    assert_records_match_storage(&env, "pruned").await;
    for f in &left {
        if is_local(f) {
            assert!(local_path(f).exists(), "the kept local file exists");
        } else {
            assert!(
                env.s3_object(&s3_key(f)).await.is_some(),
                "the kept object exists"
            );
        }
    }
    // Deleting the remaining records still works (no finalizer stuck after the failover).
    for f in &left {
        env.files_api()
            .delete(&f.name_any(), &Default::default())
            .await
            .expect("delete record");
    }
    env.wait_until(
        "the remaining records and their storage to go",
        RUN,
        async || {
            (env.files(&schedule_label("pruned")).await.is_empty()
                && env.local_snapshots("node0").is_empty()
                && env.s3_keys().await.is_empty())
            .then_some(())
        },
    )
    .await;
    env.assert_no_forbidden();
}
