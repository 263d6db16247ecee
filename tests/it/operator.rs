//! The operator end to end (issue 4, "Must show"): the `etcd-snapshot` binary runs as real
//! `controller` and `agent` processes, as ServiceAccount users bound only by `deploy/rbac.yaml`,
//! against a real kube-apiserver, etcd and SeaweedFS. One test per Must-show bullet; each starts
//! its own environment (see `support/operator.rs`).
//!
//! Runs are triggered quickly with the `etcdsnapshot.io/requested-at` annotation. The schedules
//! use the cron `* * * * *` (two tests, the first and leader failover, wait for a real minute
//! tick), except the retention test, which counts runs exactly and so uses a cron that cannot fire
//! during it. Every test ends by checking that no process was refused by RBAC (a "forbidden" in
//! any log fails it).

use crate::operator_support;
use crate::support;

use etcd_snapshot::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase};
use etcd_snapshot::consts;
use etcd_snapshot::operator::AgentInfo;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use operator_support::{
    BUCKET, FOLDER, LEASE_DURATION, NS, OperatorEnv, OperatorOptions, RETRY_PERIOD, Schedule,
    error_message, finished, is_local, local_path, phase, rbac_without, recorded_sha256, s3_key,
    sha256_hex,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time for one on-demand run of a small database to finish.
const RUN: Duration = Duration::from_secs(30);

/// Cron of the schedules: a tick every minute, runs in between through the annotation.
const EVERY_MINUTE: &str = "* * * * *";
/// Cron of a schedule whose runs a test counts exactly: no tick fires during the test.
const NEW_YEAR_ONLY: &str = "0 0 1 1 *";

fn schedule_label(name: &str) -> String {
    format!("{}={name}", consts::LABEL_SCHEDULE)
}

fn names(files: &[ETCDSnapshotFile]) -> Vec<String> {
    files.iter().map(|f| f.name_any()).collect()
}

/// Watch every ESF from before the schedule exists and record the phases each one shows, in
/// order (consecutive repeats folded). Returns once the watch is established.
async fn record_phases(
    env: &OperatorEnv,
) -> (
    Arc<Mutex<BTreeMap<String, Vec<Phase>>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<BTreeMap<String, Vec<Phase>>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let api = env.files_api();
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(f) | watcher::Event::InitApply(f)) => {
                        let mut seen = seen.lock().expect("phases");
                        let phases = seen.entry(f.name_any()).or_default();
                        if phases.last() != Some(&phase(&f)) {
                            phases.push(phase(&f));
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    ready_rx.await.expect("ESF watch established");
    (seen, task)
}

/// `kubectl get etcdsnapshotfile` as rows of column name -> value.
fn kubectl_get_files(env: &OperatorEnv) -> Vec<BTreeMap<String, String>> {
    let (ok, out, err) = support::run(env.kubectl().args(["get", "etcdsnapshotfile"]));
    assert!(ok, "kubectl get etcdsnapshotfile: {err}");
    let mut lines = out.lines();
    let header: Vec<String> = lines
        .next()
        .expect("kubectl header")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cells.len(), header.len(), "row {l:?} under {header:?}");
            header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

async fn schedule_status(env: &OperatorEnv, name: &str) -> ETCDSnapshotSchedule {
    Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get(name)
        .await
        .expect("read schedule")
}

/// Must show: apply a schedule with a near-future cron and a Secret; ESFs appear Pending, become
/// Ready; `kubectl get` shows the k3s columns filled; `kubectl describe` shows the events; the
/// files exist locally and in SeaweedFS with the recorded sha256.
///
/// The cron is `* * * * *`: this test waits for the real next-minute tick (up to 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_tick_creates_pending_files_that_become_ready_and_match_stored_bytes() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    support::put_keys(&env.etcd, "/registry/configmaps/default/cm-", 50);
    env.create_s3_secret(None).await;
    let (seen, watch) = record_phases(&env).await;
    env.apply(&Schedule::new("every-minute").cron(EVERY_MINUTE).s3().yaml());

    // The first tick's copies: one local, one S3.
    let files = env
        .wait_until(
            "the first scheduled tick's local and S3 copies to finish",
            Duration::from_secs(90),
            async || {
                let mut ticks: BTreeMap<String, Vec<ETCDSnapshotFile>> = BTreeMap::new();
                for f in env.files(&schedule_label("every-minute")).await {
                    if let Some(t) = f.labels().get(consts::LABEL_TICK) {
                        ticks.entry(t.clone()).or_default().push(f);
                    }
                }
                let (_, first) = ticks.into_iter().next()?;
                (first.len() == 2 && first.iter().all(finished)).then_some(first)
            },
        )
        .await;
    for f in &files {
        assert_eq!(
            phase(f),
            Phase::Ready,
            "{} is not Ready: {}\n{}",
            f.name_any(),
            error_message(f),
            env.diagnostics()
        );
        assert_eq!(f.spec.node_name, "node0");
        assert_eq!(f.spec.schedule_name.as_deref(), Some("every-minute"));
        assert!(
            f.spec.snapshot_name.starts_with("etcd-snapshot-node0-"),
            "scheduled snapshots use the default prefix: {}",
            f.spec.snapshot_name
        );
    }

    // Each ESF was seen Pending (as created by the controller), then Running, then Ready.
    watch.abort();
    let seen = seen.lock().expect("phases").clone();
    for f in &files {
        assert_eq!(
            seen.get(&f.name_any()).cloned().unwrap_or_default(),
            vec![Phase::Pending, Phase::Running, Phase::Ready],
            "phases of {}",
            f.name_any()
        );
    }

    // The stored bytes are the recorded ones, locally and in SeaweedFS.
    let local = files.iter().find(|f| is_local(f)).expect("a local copy");
    let remote = files.iter().find(|f| !is_local(f)).expect("an S3 copy");
    let path = local_path(local);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("local snapshot {}: {e}", path.display()));
    assert_eq!(sha256_hex(&bytes), recorded_sha256(local), "local sha256");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "local snapshot mode");
    let size = local.status.as_ref().and_then(|s| s.size.clone());
    assert_eq!(
        size.map(|q| q.0),
        Some(bytes.len().to_string()),
        "status.size"
    );
    let key = s3_key(remote);
    assert!(key.starts_with(&format!("{FOLDER}/")), "S3 key {key}");
    let (body, meta) = env
        .s3_object(&key)
        .await
        .unwrap_or_else(|| panic!("S3 object {key} missing"));
    assert_eq!(sha256_hex(&body), recorded_sha256(remote), "S3 sha256");
    assert_eq!(
        meta.get(consts::s3_metadata::SHA256),
        Some(&recorded_sha256(remote)),
        "sha256 in the S3 object's metadata"
    );
    assert_eq!(
        body, bytes,
        "one stream: the local and the S3 copy are identical"
    );

    // `kubectl get etcdsnapshotfile`: the k3s columns are filled.
    let rows = kubectl_get_files(&env);
    for f in &files {
        let row = rows
            .iter()
            .find(|r| r.get("NAME") == Some(&f.name_any()))
            .unwrap_or_else(|| panic!("{} not in kubectl get: {rows:?}", f.name_any()));
        let st = f.status.clone().unwrap_or_default();
        assert_eq!(row["SNAPSHOTNAME"], f.spec.snapshot_name, "{row:?}");
        assert_eq!(row["NODE"], "node0", "{row:?}");
        assert_eq!(row["LOCATION"], f.spec.location, "{row:?}");
        assert_eq!(
            row["SIZE"],
            st.size.map(|q| q.0).unwrap_or_default(),
            "{row:?}"
        );
        assert!(
            row["CREATIONTIME"].parse::<jiff::Timestamp>().is_ok(),
            "CREATIONTIME is a timestamp: {row:?}"
        );
        assert_eq!(row["PHASE"], "Ready", "{row:?}");
    }

    // `kubectl describe` shows the ETCDSnapshotCreated event of each copy.
    for (f, place) in [(local, "node0"), (remote, "S3")] {
        let expected = format!("Snapshot {} saved on {place}", f.spec.snapshot_name);
        env.wait_until(
            &format!("kubectl describe {} to show {expected:?}", f.name_any()),
            Duration::from_secs(10),
            async || {
                let (_, out, _) = support::run(env.kubectl().args([
                    "describe",
                    "etcdsnapshotfile",
                    &f.name_any(),
                ]));
                (out.contains(consts::REASON_CREATED) && out.contains(&expected)).then_some(())
            },
        )
        .await;
    }

    // The schedule's status records the tick and the success.
    let status = env
        .wait_until(
            "the schedule's status to record a successful tick",
            Duration::from_secs(15),
            async || {
                let s = schedule_status(&env, "every-minute").await.status?;
                (s.last_successful_time.is_some() && s.next_schedule_time.is_some()).then_some(s)
            },
        )
        .await;
    assert!(status.last_schedule_time.is_some(), "{status:?}");
    env.assert_no_forbidden();
}

/// Must show: three agents (three node names against a 3-member etcd) with `members: All` (one
/// snapshot per member per run) and `members: One` (exactly one per run). On-demand runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_snapshot_every_member_with_all_and_a_single_member_with_one() {
    let env = OperatorEnv::start(OperatorOptions {
        etcd_members: 3,
        agents: 3,
        ..OperatorOptions::default()
    })
    .await;
    env.apply(
        &Schedule::new("all-members")
            .cron(EVERY_MINUTE)
            .members("All")
            .yaml(),
    );
    env.apply(
        &Schedule::new("one-member")
            .cron(EVERY_MINUTE)
            .members("One")
            .yaml(),
    );

    let run = env.request_run("all-members").await;
    let files = env.wait_run_ready(&run, 3, RUN).await;
    let nodes: BTreeSet<&str> = files.iter().map(|f| f.spec.node_name.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["node0", "node1", "node2"]),
        "members: All snapshots on every node"
    );
    let members: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.status.as_ref()?.etcd_member_name.clone())
        .collect();
    assert_eq!(
        members.len(),
        3,
        "each member snapshotted itself: {members:?}"
    );
    let clusters: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.status.as_ref()?.etcd_cluster_id.clone())
        .collect();
    assert_eq!(clusters.len(), 1, "one etcd cluster: {clusters:?}");
    for f in &files {
        let path = local_path(f);
        assert!(
            path.starts_with(env.node_dir(&f.spec.node_name)),
            "{} is in its node's directory",
            path.display()
        );
        assert_eq!(
            sha256_hex(&std::fs::read(&path).expect("read snapshot")),
            recorded_sha256(f),
            "{}",
            path.display()
        );
    }

    // members: One, two runs: exactly one snapshot each, on a healthy member.
    for _ in 0..2 {
        let run = env.request_run("one-member").await;
        let files = env.wait_run_ready(&run, 1, RUN).await;
        assert!(
            env.nodes().contains(&files[0].spec.node_name),
            "{:?}",
            files[0].spec
        );
        assert!(local_path(&files[0]).exists(), "the one snapshot is stored");
    }
    env.assert_no_forbidden();
}

/// Must show: an on-demand run through the `etcdsnapshot.io/requested-at` annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_at_annotation_runs_the_schedule_once_per_new_value() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    env.apply(
        &Schedule::new("on-demand")
            .cron(EVERY_MINUTE)
            .spec("  namePrefix: manual")
            .s3()
            .yaml(),
    );

    let first = env.request_run("on-demand").await;
    let files = env.wait_run_ready(&first, 2, RUN).await;
    for f in &files {
        assert!(
            f.spec.snapshot_name.starts_with("manual-node0-"),
            "the run uses the schedule's prefix: {}",
            f.spec.snapshot_name
        );
    }
    // The controller records the handled value when it creates the run, and the success once
    // its watch has seen every copy Ready (which may come a moment after the test saw them).
    env.wait_until(
        "status.lastRequestedAt to record the handled value and lastSuccessfulTime the run",
        Duration::from_secs(30),
        async || {
            let s = schedule_status(&env, "on-demand").await.status?;
            (s.last_requested_at.as_deref() == Some(first.as_str())
                && s.last_successful_time.is_some())
            .then_some(s)
        },
    )
    .await;

    // A new value is a new run; the handled one is not run again.
    let second = env.request_run("on-demand").await;
    let again = env.wait_run_ready(&second, 2, RUN).await;
    assert!(
        names(&again).iter().all(|n| !names(&files).contains(n)),
        "the second run has its own snapshots"
    );
    assert_eq!(
        names(&env.run_files(&first).await),
        names(&files),
        "the first request was run exactly once"
    );

    // A request while no agent is live (its registration went stale, as after a control-plane
    // restart or a restore) stays pending instead of being dropped, and is served once the agent
    // renews.
    env.kill_agent("node0");
    env.wait_until(
        "node0's registration to go stale",
        Duration::from_secs(30),
        async || {
            let leases: Api<Lease> = Api::namespaced(env.admin.clone(), NS);
            let lease = leases.get(&AgentInfo::lease_name("node0")).await.ok()?;
            let info = AgentInfo::from_lease(&lease)?;
            (!info.is_live(jiff::Timestamp::now())).then_some(())
        },
    )
    .await;
    let third = env.request_run("on-demand").await;
    env.wait_until(
        "a Warning that the request stays pending",
        RUN,
        async || {
            env.events_about("on-demand")
                .await
                .into_iter()
                .find(|(_, note)| note.contains("the on-demand request stays pending"))
        },
    )
    .await;
    assert!(
        env.run_files(&third).await.is_empty(),
        "no record without a live agent"
    );
    let status = schedule_status(&env, "on-demand")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(
        status.last_requested_at.as_deref(),
        Some(second.as_str()),
        "the pending request is not marked served"
    );
    env.start_agent(0);
    let served = env.wait_run_ready(&third, 2, RUN).await;
    assert_eq!(
        served.len(),
        2,
        "the pending request was served: {served:?}"
    );
    env.assert_no_forbidden();
}

/// Must show: an on-demand run through `etcd-snapshot trigger SCHEDULE --wait` (run by a user
/// with the admin kubeconfig), which prints the run's ESFs once they finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_wait_requests_a_run_and_prints_its_ready_files() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    env.apply(&Schedule::new("triggered").cron(EVERY_MINUTE).s3().yaml());

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-snapshot"));
    cmd.args(["trigger", "triggered", "--wait", "--timeout", "60s"])
        .env("KUBECONFIG", env.api.admin_kubeconfig())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("trigger --wait returned within 90 s")
        .expect("run trigger");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "trigger --wait failed: {stdout}\n{stderr}\n{}",
        env.diagnostics()
    );
    // "Requested a snapshot run of schedule triggered (VALUE)."
    let value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Requested a snapshot run of schedule triggered ("))
        .and_then(|r| r.strip_suffix(")."))
        .unwrap_or_else(|| panic!("no 'Requested …' line in:\n{stdout}"));
    let files = env.run_files(value).await;
    assert_eq!(
        files.len(),
        2,
        "a local and an S3 copy: {:?}",
        names(&files)
    );
    for f in &files {
        assert_eq!(
            phase(f),
            Phase::Ready,
            "{}: {}",
            f.name_any(),
            error_message(f)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&f.name_any()))
            .unwrap_or_else(|| panic!("{} not printed:\n{stdout}", f.name_any()));
        assert!(
            line.contains("Ready") && line.contains(&f.spec.location),
            "{line}"
        );
    }
    env.assert_no_forbidden();
}

/// Must show: retention — after N+2 runs exactly N remain per scope, in the cluster, on disk and
/// in S3. N = 2, so 4 runs; the runs are on-demand (four annotation bumps, each waiting for the
/// previous run to finish) rather than four minute ticks, and the cron never fires during the
/// test, so the newest two runs are known exactly. Two nodes, `members: All`:
/// - schedule `per-node`: local count 2 per node; S3 count (defaults to the local count) per node;
/// - schedule `per-cluster`: S3 only, count 2 for the whole cluster (`retentionScope: Cluster`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_count_per_scope_in_cluster_on_disk_and_in_s3() {
    let env = OperatorEnv::start(OperatorOptions {
        agents: 2,
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(
        &Schedule::new("per-node")
            .cron(NEW_YEAR_ONLY)
            .spec("  namePrefix: per-node")
            .members("All")
            .local_retention(2)
            .s3()
            .yaml(),
    );
    env.apply(
        &Schedule::new("per-cluster")
            .cron(NEW_YEAR_ONLY)
            .spec("  namePrefix: per-cluster\n  local:\n    enabled: false")
            .members("All")
            .s3_with("    retentionScope: Cluster")
            .s3_retention(2)
            .yaml(),
    );

    let mut per_node_runs = Vec::new();
    for _ in 0..4 {
        let run = env.request_run("per-node").await;
        env.wait_run_ready(&run, 4, RUN).await;
        per_node_runs.push(run);
    }
    let mut per_cluster_runs = Vec::new();
    for _ in 0..4 {
        let run = env.request_run("per-cluster").await;
        env.wait_run_ready(&run, 2, RUN).await;
        per_cluster_runs.push(run);
    }

    // per-node: 2 local + 2 S3 per node; the newest two runs.
    let kept = env
        .wait_until(
            "per-node retention: 2 local and 2 S3 copies per node, in the cluster, on disk and in S3",
            Duration::from_secs(30),
            async || {
                let files = env.files(&schedule_label("per-node")).await;
                let on_disk: Vec<usize> = env
                    .nodes()
                    .iter()
                    .map(|n| {
                        env.local_snapshots(n)
                            .iter()
                            .filter(|s| s.starts_with("per-node-"))
                            .count()
                    })
                    .collect();
                let in_s3 = env
                    .s3_keys()
                    .await
                    .iter()
                    .filter(|k| k.starts_with(&format!("{FOLDER}/per-node-")))
                    .count();
                (files.len() == 8 && on_disk == [2, 2] && in_s3 == 4).then_some(files)
            },
        )
        .await;
    for node in env.nodes() {
        for local in [true, false] {
            let n = kept
                .iter()
                .filter(|f| f.spec.node_name == *node && is_local(f) == local)
                .count();
            assert_eq!(n, 2, "{node} local={local}: {:?}", names(&kept));
        }
    }
    let newest: BTreeSet<String> = [&per_node_runs[2], &per_node_runs[3]]
        .iter()
        .map(|r| etcd_snapshot::naming::request_label(r))
        .collect();
    for f in &kept {
        assert!(
            newest.contains(&f.labels()[consts::LABEL_REQUEST]),
            "{} is not from one of the two newest runs",
            f.name_any()
        );
    }

    // per-cluster: 2 S3 copies in all (the newest run's two), none local.
    let kept = env
        .wait_until(
            "per-cluster retention: 2 S3 copies in the cluster and in S3",
            Duration::from_secs(30),
            async || {
                let files = env.files(&schedule_label("per-cluster")).await;
                let in_s3 = env
                    .s3_keys()
                    .await
                    .iter()
                    .filter(|k| k.starts_with(&format!("{FOLDER}/per-cluster-")))
                    .count();
                (files.len() == 2 && in_s3 == 2).then_some(files)
            },
        )
        .await;
    assert!(kept.iter().all(|f| !is_local(f)), "{:?}", names(&kept));
    let last = etcd_snapshot::naming::request_label(&per_cluster_runs[3]);
    assert!(
        kept.iter()
            .all(|f| f.labels()[consts::LABEL_REQUEST] == last),
        "the newest run's copies are kept: {:?}",
        names(&kept)
    );
    for node in env.nodes() {
        assert!(
            env.local_snapshots(node)
                .iter()
                .all(|s| !s.starts_with("per-cluster-")),
            "S3-only schedule wrote no local file on {node}"
        );
    }

    // Pruning is reported with events.
    let events: Api<Event> = Api::all(env.admin.clone());
    let pruned = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(consts::REASON_PRUNED))
        .count();
    assert!(pruned > 0, "no {} event", consts::REASON_PRUNED);
    env.assert_no_forbidden();
}

/// Must show: `kubectl delete esf` removes the file (agent) or the object (controller); deleting
/// a Node whose agent is gone releases its records that were stuck on the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_record_removes_its_copy_and_deleting_a_node_releases_stuck_records() {
    let env = OperatorEnv::start(OperatorOptions {
        agents: 2,
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(
        &Schedule::new("deletions")
            .cron(EVERY_MINUTE)
            .members("All")
            .s3()
            .yaml(),
    );
    let run = env.request_run("deletions").await;
    let files = env.wait_run_ready(&run, 4, RUN).await;
    let of = |node: &str, local: bool| {
        files
            .iter()
            .find(|f| f.spec.node_name == node && is_local(f) == local)
            .unwrap_or_else(|| panic!("no local={local} copy on {node}"))
            .clone()
    };

    // kubectl delete waits for the finalizer: the file and the object are gone when it returns.
    let local = of("node0", true);
    let path = local_path(&local);
    assert!(path.exists(), "{} exists before", path.display());
    let (ok, _, err) =
        support::run(
            env.kubectl()
                .args(["delete", "esf", &local.name_any(), "--timeout=30s"]),
        );
    assert!(
        ok,
        "kubectl delete esf {}: {err}\n{}",
        local.name_any(),
        env.diagnostics()
    );
    assert!(!path.exists(), "{} deleted by the agent", path.display());

    let remote = of("node0", false);
    let key = s3_key(&remote);
    assert!(env.s3_object(&key).await.is_some(), "{key} exists before");
    let (ok, _, err) =
        support::run(
            env.kubectl()
                .args(["delete", "esf", &remote.name_any(), "--timeout=30s"]),
        );
    assert!(
        ok,
        "kubectl delete esf {}: {err}\n{}",
        remote.name_any(),
        env.diagnostics()
    );
    assert!(
        env.s3_object(&key).await.is_none(),
        "{key} deleted by the controller"
    );

    // node1's agent goes away; a record of its local copy deleted now is stuck on the
    // finalizer (nobody can delete the file) until the Node itself is deleted.
    env.kill_agent("node1");
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), NS);
    env.wait_until(
        "node1's agent lease to expire",
        Duration::from_secs(15),
        async || {
            let lease = leases
                .get_opt(&AgentInfo::lease_name("node1"))
                .await
                .ok()??;
            let info = AgentInfo::from_lease(&lease)?;
            (!info.is_live(jiff::Timestamp::now())).then_some(())
        },
    )
    .await;
    let stuck = of("node1", true);
    let (ok, _, err) =
        support::run(
            env.kubectl()
                .args(["delete", "esf", &stuck.name_any(), "--wait=false"]),
        );
    assert!(ok, "kubectl delete esf {}: {err}", stuck.name_any());
    let still = env
        .files_api()
        .get_opt(&stuck.name_any())
        .await
        .expect("read ESF");
    assert!(
        still.is_some_and(|f| f.metadata.deletion_timestamp.is_some()),
        "the record waits on its finalizer while node1 exists"
    );

    let deleted_at = Instant::now();
    env.delete_node("node1").await;
    env.wait_until(
        "the deleted Node's record to be released",
        Duration::from_secs(30),
        async || {
            env.files_api()
                .get_opt(&stuck.name_any())
                .await
                .expect("read ESF")
                .is_none()
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "record of the deleted node released after {:?}",
        deleted_at.elapsed()
    );
    // node1's S3 copy is the controller's business: it stays until deleted itself.
    assert!(
        env.files_api()
            .get_opt(&of("node1", false).name_any())
            .await
            .expect("read")
            .is_some()
    );
    env.assert_no_forbidden();
}

/// Must show: Secret rotation without a restart. A wrong secret key in the Secret makes the next
/// run's S3 copy Failed with a message about credentials while the local copy is Ready; the
/// right key again makes the next run's S3 copy Ready. (SeaweedFS's identities are fixed at
/// start, so "rotation" swaps the Secret between a wrong and the server's key.) On-demand runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_is_used_by_the_next_run_without_restart() {
    const WRONG: &str = "wrong-secret-key-rotated-in";
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    env.apply(&Schedule::new("rotation").cron(EVERY_MINUTE).s3().yaml());

    let run = env.request_run("rotation").await;
    env.wait_run_ready(&run, 2, RUN).await;
    wait_backups_healthy(&env, "rotation", "True", "Healthy").await;

    env.create_s3_secret(Some(WRONG)).await;
    let run = env.request_run("rotation").await;
    let files = env.wait_run_finished(&run, 2, RUN).await;
    let local = files.iter().find(|f| is_local(f)).expect("local copy");
    let remote = files.iter().find(|f| !is_local(f)).expect("S3 copy");
    assert_eq!(
        phase(local),
        Phase::Ready,
        "the local copy does not depend on S3: {}",
        error_message(local)
    );
    assert_eq!(phase(remote), Phase::Failed, "S3 copy with a wrong key");
    let message = error_message(remote);
    assert!(
        message.to_lowercase().contains("credentials"),
        "the failure says it is about credentials: {message:?}"
    );
    assert!(!message.contains(WRONG), "no credential in {message:?}");
    assert!(local_path(local).exists(), "local file stored");
    assert!(
        env.s3_object(&s3_key(remote)).await.is_none(),
        "no S3 object for the failed copy"
    );

    // A failed run makes the backups unhealthy at once (the schedule stays Ready), and the
    // S3 storage records when it last failed.
    let message = wait_backups_healthy(&env, "rotation", "False", "LastRunFailed").await;
    assert!(message.contains("1 of 2 copies failed"), "{message}");
    let status = schedule_status(&env, "rotation")
        .await
        .status
        .unwrap_or_default();
    let s3 = status
        .storages
        .iter()
        .find(|s| s.storage == "s3")
        .expect("S3 storage status");
    assert!(
        s3.last_failure_time.is_some() && s3.last_success_time.is_some(),
        "{s3:?}"
    );
    let local = status
        .storages
        .iter()
        .find(|s| s.storage == "local")
        .expect("local storage status");
    assert_eq!(local.node.as_deref(), Some("node0"));
    assert!(local.last_failure_time.is_none(), "{local:?}");
    assert!(status.newest_backup_time.is_some());
    let (ok, table, err) = support::run(env.kubectl().args(["get", "ess", "rotation"]));
    assert!(ok, "kubectl get ess: {err}");
    println!("kubectl get ess (a failed run):\n{table}");
    assert!(
        table.contains("BACKUPS HEALTHY") && table.contains("NEWEST BACKUP"),
        "{table}"
    );

    env.create_s3_secret(None).await;
    let run = env.request_run("rotation").await;
    env.wait_run_ready(&run, 2, RUN).await;
    wait_backups_healthy(&env, "rotation", "True", "Healthy").await;
    let (_, table, _) = support::run(env.kubectl().args(["get", "ess", "-o", "wide"]));
    println!("kubectl get ess -o wide (after a successful run):\n{table}");

    // Same processes all along, and no credential in any log.
    let mut logs = String::new();
    for key in ["controller ctl-1", "agent node0"] {
        assert!(
            !env.diagnostics()
                .contains(&format!("!! {key} is not running")),
            "{key} kept running"
        );
        logs.push_str(&env.log(key));
    }
    assert!(
        !logs.contains(WRONG),
        "the wrong secret key appears in a log"
    );
    assert!(
        !logs.contains(&env.s3.secret_key),
        "the secret key appears in a log"
    );
    env.assert_no_forbidden();
}

/// Wait until the schedule's `BackupsHealthy` condition has `status` and `reason`, with `Ready`
/// still True (backup health is information, never kstatus readiness); its message.
async fn wait_backups_healthy(env: &OperatorEnv, name: &str, status: &str, reason: &str) -> String {
    let what = format!("schedule {name}: BackupsHealthy={status} ({reason}) and Ready=True");
    env.wait_until(&what, RUN, async || {
        let s = schedule_status(env, name).await;
        let conditions = s.status.map(|st| st.conditions).unwrap_or_default();
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
        let ready = find(consts::conditions::READY)?;
        let health = find(consts::conditions::BACKUPS_HEALTHY)?;
        assert_eq!(ready.status, "True", "Ready stays True: {ready:?}");
        (health.status == status && health.reason == reason).then_some(health.message)
    })
    .await
}

/// Must show: leader failover. Two controllers; the leader is killed (SIGKILL) right after it
/// created a run's records; the standby takes over within the lease time; no run and no tick is
/// created twice: the killed run finishes with one record, a new on-demand run gets one, and the
/// next real minute tick (fired by the new leader) gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_lease_time_and_runs_each_tick_once() {
    let env = OperatorEnv::start(OperatorOptions {
        controllers: 2,
        ..OperatorOptions::default()
    })
    .await;
    assert_eq!(env.leader().await.as_deref(), Some("ctl-1"));
    env.apply(&Schedule::new("failover").cron(EVERY_MINUTE).yaml());

    let before = env.request_run("failover").await;
    env.wait_run_ready(&before, 1, RUN).await;

    // Kill the leader as soon as the next run's record exists, before it can finish the run.
    let during = env.request_run("failover").await;
    env.wait_until(
        "the run's record to be created",
        Duration::from_secs(15),
        async || (!env.run_files(&during).await.is_empty()).then_some(()),
    )
    .await;
    env.kill_controller("ctl-1");
    let killed = Instant::now();
    env.wait_for_leader("ctl-2", Duration::from_secs(15)).await;
    let takeover = killed.elapsed();
    eprintln!("standby took over {takeover:?} after the leader was killed");
    let limit = LEASE_DURATION + RETRY_PERIOD + Duration::from_millis(1500);
    assert!(
        takeover <= limit,
        "standby took over after {takeover:?}, more than lease duration + retry period + slack ({limit:?})"
    );
    assert!(
        env.controller_log("ctl-2").contains("became leader"),
        "ctl-2 logs its leadership"
    );

    env.wait_run_ready(&during, 1, RUN).await;
    let after = env.request_run("failover").await;
    env.wait_run_ready(&after, 1, RUN).await;

    // The next minute tick, fired by the new leader.
    let tick_after = jiff::Timestamp::now().as_second();
    let tick = env
        .wait_until(
            "the new leader to fire the next minute tick",
            Duration::from_secs(75),
            async || {
                env.files(&schedule_label("failover"))
                    .await
                    .into_iter()
                    .filter_map(|f| f.labels().get(consts::LABEL_TICK)?.parse::<i64>().ok())
                    .find(|t| *t >= tick_after)
            },
        )
        .await;
    env.wait_until("the tick's record to finish", RUN, async || {
        let files = env
            .files(&format!(
                "{},{}={tick}",
                schedule_label("failover"),
                consts::LABEL_TICK
            ))
            .await;
        files.iter().all(finished).then_some(())
    })
    .await;

    // Once per run and per tick, over the whole test.
    for run in [&before, &during, &after] {
        assert_eq!(
            env.run_files(run).await.len(),
            1,
            "run {run} has one record"
        );
    }
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for f in env.files(&schedule_label("failover")).await {
        if let Some(t) = f.labels().get(consts::LABEL_TICK) {
            *per_tick.entry(t.clone()).or_default() += 1;
        }
    }
    assert!(
        per_tick.values().all(|n| *n == 1),
        "a tick was run more than once: {per_tick:?}"
    );
    env.assert_no_forbidden();
}

/// Must show: the controller and agents run as users bound only by `deploy/rbac.yaml`, and a
/// missing permission fails the flow: without `create` on etcdsnapshotfiles for the controller,
/// no record is ever created and the controller logs the 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_without_create_on_snapshot_files_is_refused_and_nothing_is_snapshotted() {
    let env = OperatorEnv::start(OperatorOptions {
        rbac: Some(rbac_without(
            "ClusterRole",
            "etcd-snapshot-controller",
            "etcdsnapshotfiles",
            "create",
        )),
        ..OperatorOptions::default()
    })
    .await;

    // The identities are confined to what the manifest grants.
    let can_i = |verb: &str, resource: &str, ns: Option<&str>, sa: &str| {
        let mut cmd = env.kubectl();
        cmd.args(["auth", "can-i", verb, resource])
            .arg(format!("--as=system:serviceaccount:{NS}:{sa}"));
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let (_, out, _) = support::run(&mut cmd);
        out.trim() == "yes"
    };
    let ctl = operator_support::CONTROLLER_SA;
    let agent = operator_support::AGENT_SA;
    assert!(!can_i(
        "create",
        "etcdsnapshotfiles.etcdsnapshot.io",
        None,
        ctl
    ));
    assert!(can_i(
        "delete",
        "etcdsnapshotfiles.etcdsnapshot.io",
        None,
        ctl
    ));
    assert!(can_i("get", "secrets", Some(NS), ctl));
    assert!(
        !can_i("get", "secrets", Some("default"), ctl),
        "Secrets only in its namespace"
    );
    assert!(
        !can_i("list", "secrets", Some(NS), agent),
        "the agent only gets Secrets"
    );
    assert!(!can_i(
        "update",
        "etcdsnapshotschedules.etcdsnapshot.io",
        None,
        ctl
    ));

    env.apply(&Schedule::new("refused").cron(EVERY_MINUTE).yaml());
    let run = env.request_run("refused").await;
    env.wait_until(
        "the controller to log a 403 creating an ETCDSnapshotFile",
        Duration::from_secs(30),
        async || {
            env.controller_log("ctl-1")
                .lines()
                .any(|l| l.to_lowercase().contains("forbidden"))
                .then_some(())
        },
    )
    .await;
    let log = env.controller_log("ctl-1");
    let refusal = log
        .lines()
        .find(|l| l.to_lowercase().contains("forbidden"))
        .unwrap_or_default();
    assert!(
        refusal.contains("etcdsnapshotfiles") && refusal.contains("create"),
        "the 403 is about creating etcdsnapshotfiles: {refusal}"
    );
    // The failed reconcile is a Warning Event on the schedule with the error's category as its
    // reason, published once for the problem however often the reconcile is retried.
    let refused = async || -> Vec<String> {
        env.warnings_about("refused")
            .await
            .into_iter()
            .filter(|(reason, _)| reason == consts::errors::KUBERNETES_API)
            .map(|(_, note)| note)
            .collect()
    };
    let note = env
        .wait_until(
            "a Warning event about the refused reconcile",
            RUN,
            async || refused().await.into_iter().next(),
        )
        .await;
    assert!(
        note.contains("creating a snapshot file") && note.contains("forbidden"),
        "{note}"
    );
    let errors = format!(
        "etcd_snapshot_reconcile_errors_total{{controller=\"controller\",reason=\"{}\"}}",
        consts::errors::KUBERNETES_API
    );
    env.wait_until("the reconcile to fail three times", RUN, async || {
        let text = env.metrics_text("controller ctl-1").await;
        let failures = text
            .lines()
            .find_map(|l| l.strip_prefix(errors.as_str()))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_default();
        (failures >= 3.0).then_some(())
    })
    .await;
    assert_eq!(
        refused().await.len(),
        1,
        "{:?}",
        env.events_about("refused").await
    );
    assert!(env.files("").await.is_empty(), "no ESF was created");
    assert!(env.run_files(&run).await.is_empty());
    let status = schedule_status(&env, "refused")
        .await
        .status
        .unwrap_or_default();
    assert!(status.last_successful_time.is_none(), "{status:?}");
}

/// The controller's S3 sync records objects that have no ETCDSnapshotFile — here an upload by
/// k3s (a `.zip` with k3s's node metadata) — and the record can be used like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sync_records_objects_without_a_record_including_k3s_zip_uploads() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    env.apply(&Schedule::new("synced").cron(NEW_YEAR_ONLY).s3().yaml());
    let name = "etcd-snapshot-k3s-server-1-1730308816.zip";
    support::s3_client(&env.s3)
        .put_object()
        .bucket(BUCKET)
        .key(format!("{FOLDER}/{name}"))
        .metadata("k3s-node-name", "k3s-server-1")
        .body(b"PK-not-really-a-zip".to_vec().into())
        .send()
        .await
        .expect("upload a k3s-style object");
    let record = env
        .wait_until(
            "the S3 sync to record the k3s upload",
            Duration::from_secs(30),
            async || {
                env.files("")
                    .await
                    .into_iter()
                    .find(|f| f.spec.snapshot_name == name && f.status.is_some())
            },
        )
        .await;
    assert_eq!(record.spec.node_name, "k3s-server-1");
    assert_eq!(
        record.spec.compression,
        etcd_snapshot::api::Compression::Zip
    );
    assert_eq!(
        record.spec.location,
        format!("s3://{BUCKET}/{FOLDER}/{name}")
    );
    let status = record.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(
        status.creation_time.map(|t| t.0.as_second()),
        Some(1_730_308_816)
    );
    assert!(
        record.finalizers().iter().any(|f| f == consts::FINALIZER),
        "the record owns the object"
    );
    // Deleting the record deletes the object, as for any S3 copy.
    let (ok, _, err) =
        support::run(
            env.kubectl()
                .args(["delete", "etcdsnapshotfile", &record.name_any()]),
        );
    assert!(ok, "{err}");
    let gone = support::s3_client(&env.s3)
        .head_object()
        .bucket(BUCKET)
        .key(format!("{FOLDER}/{name}"))
        .send()
        .await;
    assert!(gone.is_err(), "the object is deleted with its record");
    env.assert_no_forbidden();
}

/// Every object of `deploy/etcd-snapshot-operator.yaml` (the chart rendered with its default
/// values) applies server-side to the real API server, and the controller and agent, running as
/// that manifest's ServiceAccounts with only its RBAC, complete a snapshot of its default
/// schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_deploy_manifests_apply_server_side_and_their_identities_complete_a_snapshot() {
    let manifests = std::fs::read_to_string(
        eso_testenv::repo_root().join("deploy/etcd-snapshot-operator.yaml"),
    )
    .expect("read deploy/etcd-snapshot-operator.yaml");
    let env = OperatorEnv::start(OperatorOptions {
        manifests: Some(manifests),
        ..OperatorOptions::default()
    })
    .await;
    for (kind, name) in [
        ("deployment", "etcd-snapshot-controller"),
        ("daemonset", "etcd-snapshot-agent"),
        ("serviceaccount", "etcd-snapshot-controller"),
        ("serviceaccount", "etcd-snapshot-agent"),
        ("role", "etcd-snapshot-controller"),
        ("rolebinding", "etcd-snapshot-agent"),
    ] {
        let (ok, _, err) = support::run(env.kubectl().args(["get", "-n", NS, kind, name]));
        assert!(ok, "{kind}/{name} was not applied: {err}");
    }
    let (ok, _, err) = support::run(env.kubectl().args([
        "get",
        "clusterrole",
        "etcd-snapshot-controller",
        "etcd-snapshot-agent",
    ]));
    assert!(ok, "cluster roles were not applied: {err}");
    // The default schedule of the chart: local copies only, one member.
    let run = env.request_run("etcd-snapshot").await;
    let files = env.wait_run_ready(&run, 1, RUN).await;
    assert!(
        files.iter().all(is_local),
        "the default schedule stores locally"
    );
    env.assert_no_forbidden();
}
