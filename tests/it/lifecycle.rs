//! How the operator behaves as pods do (issue 12), with real `controller` and `agent` processes
//! under the chart's RBAC, against a real kube-apiserver, etcd and SeaweedFS (see
//! `support/operator.rs`):
//! - schedules follow kstatus: a valid schedule is `Ready=True` with `status.observedGeneration`
//!   before any run, an invalid one `Stalled=True`, a fixed one `Ready` again, and a failed run is
//!   information (`LastRunSucceeded=False`, a Warning event) that leaves it `Ready`;
//! - SIGTERM (what the kubelet sends when a pod is deleted): the leader releases its Lease and a
//!   standby leads at once; an agent in the middle of a large snapshot cancels it cleanly (records
//!   Failed with the reason, no temp file, the multipart upload aborted) and exits within seconds,
//!   while the next agent of the node (a rollout) waits for it and then takes over;
//! - uninstall: the pre-delete hook's command, as its ServiceAccount, stops the operator and
//!   releases every record without deleting a backup (each of its verbs proven needed), an agent
//!   whose RBAC is gone deletes no file, and a reinstall adopts what is there.

use crate::mid_snapshot;
use crate::operator_support;
use crate::support;

use etcd_snapshot::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase};
use etcd_snapshot::consts::{self, conditions};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use mid_snapshot::MidSnapshot;
use operator_support::{
    NS, OperatorEnv, OperatorOptions, Schedule, UNINSTALL_SA, error_message, is_local, local_path,
    phase, rbac_minus, s3_key,
};
use std::time::{Duration, Instant};

/// How long the controller may take to react to a change.
const REACT: Duration = Duration::from_secs(20);
/// Time for one on-demand run of a small database to finish.
const RUN: Duration = Duration::from_secs(30);

async fn schedule(env: &OperatorEnv, name: &str) -> ETCDSnapshotSchedule {
    Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get(name)
        .await
        .expect("read schedule")
}

fn condition(s: &ETCDSnapshotSchedule, type_: &str) -> Option<Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// The schedule once the controller has observed its current generation.
async fn observed(env: &OperatorEnv, name: &str) -> ETCDSnapshotSchedule {
    env.wait_until(
        &format!("the controller to observe schedule {name}"),
        REACT,
        async || {
            let s = schedule(env, name).await;
            let observed = s.status.as_ref().and_then(|st| st.observed_generation);
            (observed.is_some() && observed == s.metadata.generation).then_some(s)
        },
    )
    .await
}

/// Must show: a valid schedule is healthy to kstatus (Helm 4's `--wait`, Flux, Argo CD) before
/// its first tick; an invalid one is Stalled with the reason; fixing it makes it Ready; a failed
/// run is reported without making the schedule unhealthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_ready_when_valid_stalled_when_invalid_and_a_failed_run_is_information() {
    // The controller puts its events into `default` (as on Kubernetes 1.22 and later); the agent
    // chooses by the API server's version: 1.20 here, so `kube-system`.
    let env = OperatorEnv::start(OperatorOptions {
        controller_args: vec!["--events-namespace=default".into()],
        ..OperatorOptions::default()
    })
    .await;
    // The S3 copy of every run fails (wrong secret key); the local copy succeeds.
    env.create_s3_secret(Some("not-the-secret-key")).await;
    env.apply(&format!(
        "{}\n---\n{}",
        Schedule::new("healthy").s3().yaml(),
        Schedule::new("broken").cron("not a cron").yaml()
    ));

    // Valid, no run yet: Ready=True at once, observedGeneration written, no kstatus abnormality.
    let healthy = observed(&env, "healthy").await;
    let ready = condition(&healthy, conditions::READY).expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", conditions::REASON_SCHEDULED),
        "{ready:?}"
    );
    assert_eq!(ready.observed_generation, healthy.metadata.generation);
    assert!(condition(&healthy, conditions::STALLED).is_none());
    assert!(condition(&healthy, conditions::RECONCILING).is_none());
    let last = condition(&healthy, conditions::LAST_RUN_SUCCEEDED).expect("LastRunSucceeded");
    assert_eq!(
        (last.status.as_str(), last.reason.as_str()),
        ("Unknown", conditions::REASON_NO_RUN_YET)
    );
    assert!(
        env.files("").await.is_empty(),
        "Ready before any run was made"
    );
    // `kubectl wait`, as scripts and GitOps tools do.
    let (ok, out, err) = support::run(env.kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=5s",
        "etcdsnapshotschedule/healthy",
    ]));
    assert!(ok, "kubectl wait --for=condition=Ready: {out}{err}");

    // Invalid: Stalled=True with the reason and message, Ready=False, generation observed.
    let broken = observed(&env, "broken").await;
    let stalled = condition(&broken, conditions::STALLED).expect("Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", conditions::REASON_INVALID_SPEC),
        "{stalled:?}"
    );
    assert!(stalled.message.contains("not a cron"), "{stalled:?}");
    assert_eq!(
        condition(&broken, conditions::READY).map(|c| c.status),
        Some("False".to_string())
    );

    // Fixed: a new generation, then Ready=True and no Stalled.
    let before = broken.metadata.generation.expect("generation");
    Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"schedule": "0 0 1 1 *"}})),
        )
        .await
        .expect("fix the cron");
    let fixed = env
        .wait_until(
            "the fixed schedule to be Ready with its new generation observed",
            REACT,
            async || {
                let s = schedule(&env, "broken").await;
                let generation = s.metadata.generation?;
                let ready = condition(&s, conditions::READY)?;
                (generation > before
                    && s.status.as_ref()?.observed_generation == Some(generation)
                    && ready.status == "True")
                    .then_some(s)
            },
        )
        .await;
    assert!(
        condition(&fixed, conditions::STALLED).is_none(),
        "{fixed:?}"
    );

    // A run whose S3 copy fails: LastRunSucceeded=False with the reason, one Warning event on
    // the schedule, and the schedule stays Ready.
    let run = env.request_run("healthy").await;
    let files = env.wait_run_finished(&run, 2, RUN).await;
    for f in &files {
        let want = if is_local(f) {
            Phase::Ready
        } else {
            Phase::Failed
        };
        assert_eq!(
            phase(f),
            want,
            "{}",
            f.metadata.name.as_deref().unwrap_or_default()
        );
    }
    let after = env
        .wait_until(
            "LastRunSucceeded=False on the schedule",
            REACT,
            async || {
                let s = schedule(&env, "healthy").await;
                (condition(&s, conditions::LAST_RUN_SUCCEEDED)?.status == "False").then_some(s)
            },
        )
        .await;
    let last = condition(&after, conditions::LAST_RUN_SUCCEEDED).expect("LastRunSucceeded");
    assert_eq!(last.reason, conditions::REASON_RUN_FAILED);
    assert!(last.message.contains("1 of 2 copies failed"), "{last:?}");
    assert_eq!(
        condition(&after, conditions::READY).map(|c| c.status),
        Some("True".to_string()),
        "a failed run leaves the schedule Ready"
    );
    assert!(condition(&after, conditions::STALLED).is_none());
    let events = env
        .wait_until("the SnapshotRunFailed event", REACT, async || {
            let e: Vec<_> = env
                .events_about("healthy")
                .await
                .into_iter()
                .filter(|(reason, _)| reason == consts::REASON_RUN_FAILED)
                .collect();
            (!e.is_empty()).then_some(e)
        })
        .await;
    assert_eq!(events.len(), 1, "{events:?}");

    // Events about cluster-scoped objects: in `default` when asked, in `kube-system` on a 1.20 API
    // server; `kubectl describe` finds both.
    assert_eq!(
        env.event_namespaces("healthy", consts::REASON_RUN_FAILED)
            .await,
        ["default"]
    );
    let failed = files
        .iter()
        .find(|f| !is_local(f))
        .expect("the failed S3 copy")
        .name_any();
    let agent_events = env
        .wait_until("the agent's ETCDSnapshotFailed event", REACT, async || {
            let ns = env.event_namespaces(&failed, consts::REASON_FAILED).await;
            (!ns.is_empty()).then_some(ns)
        })
        .await;
    assert_eq!(agent_events, ["kube-system"]);
    for (kind, name, reason) in [
        ("ess", "healthy", consts::REASON_RUN_FAILED),
        ("esf", failed.as_str(), consts::REASON_FAILED),
    ] {
        let (ok, out, err) = support::run(env.kubectl().args(["describe", kind, name]));
        assert!(ok, "kubectl describe {kind} {name}: {err}");
        let events = out.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events.contains(reason),
            "kubectl describe {kind} {name}:\n{out}"
        );
    }

    // `kubectl get ess` shows the kstatus verdict, the backup health and the last run.
    let (ok, out, err) = support::run(env.kubectl().args(["get", "ess", "healthy"]));
    assert!(ok, "kubectl get ess: {err}");
    eprintln!("$ kubectl get ess healthy\n{out}");
    // Cells by the header's column offsets (the cron and empty cells contain or are spaces).
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    let cell = |name: &str| {
        let start = header
            .find(&format!("{name} "))
            .or_else(|| header.rfind(name))?;
        // Column names may contain a space ("LAST RUN"): the cell ends where the next name starts.
        let after = start + name.len();
        let end = header[after..]
            .char_indices()
            .find(|(_, ch)| !ch.is_whitespace())
            .map_or(row.len(), |(i, _)| after + i);
        row.get(start..end.min(row.len())).map(str::trim)
    };
    assert_eq!(cell("READY"), Some("True"), "{out}");
    assert_eq!(cell("LAST RUN"), Some("Failed"), "{out}");
    // Backup health is information: False after the failed run, while READY stays True.
    assert_eq!(cell("BACKUPS HEALTHY"), Some("False"), "{out}");
    env.assert_no_forbidden();
}

/// Must show: SIGTERM to the leader releases its Lease, so the standby leads at once (well within
/// the lease duration) and handles the pending request exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_the_leader_release_its_lease_and_the_standby_take_over_at_once() {
    // A lease long enough that waiting for it to expire could never pass for a release.
    let lease = Duration::from_secs(20);
    let env = OperatorEnv::start(OperatorOptions {
        controllers: 2,
        controller_args: [
            "--lease-duration=20s",
            "--renew-deadline=15s",
            "--retry-period=500ms",
        ]
        .map(String::from)
        .to_vec(),
        ..OperatorOptions::default()
    })
    .await;
    env.apply(&Schedule::new("once").yaml());
    observed(&env, "once").await;
    // The standby is up (it serves metrics while it follows).
    env.metrics_text("controller ctl-2").await;

    let value = env.request_run("once").await;
    let start = Instant::now();
    let exited = env.terminate("controller ctl-1", Duration::from_secs(10));
    assert!(
        exited < Duration::from_secs(5),
        "the leader took {exited:?} to exit on SIGTERM"
    );
    assert!(
        env.controller_log("ctl-1").contains("released the lease"),
        "the leader released its lease:\n{}",
        env.controller_log("ctl-1")
    );
    env.wait_for_leader("ctl-2", lease).await;
    let takeover = start.elapsed();
    assert!(
        takeover < lease / 2,
        "the standby led {takeover:?} after the SIGTERM (lease {lease:?})"
    );
    eprintln!("leader exited {exited:?} after SIGTERM; the standby led after {takeover:?}");

    // The request is handled once, by whichever leader saw it.
    let files = env.wait_run_finished(&value, 1, RUN).await;
    assert!(files.iter().all(|f| phase(f) == Phase::Ready), "{files:?}");
    env.wait_until(
        "the new leader to have handled the request",
        REACT,
        async || {
            let s = schedule(&env, "once").await;
            (s.status?.last_requested_at.as_deref() == Some(value.as_str())).then_some(())
        },
    )
    .await;
    let all = env.files(&format!("{}=once", consts::LABEL_SCHEDULE)).await;
    assert_eq!(all.len(), 1, "no duplicate run: {:?}", all);
    env.assert_no_forbidden();
}

/// Must show: an agent rollout in the middle of a large snapshot. The new agent of the node
/// starts while the old one works and waits for it, touching nothing; SIGTERM to the old one: it
/// exits within seconds (the 5 s shutdown grace, then cancellation), both records end Failed
/// with the reason (never left Running), no temp file is left, the multipart upload is aborted,
/// all by the stopping agent itself; then the new agent takes over and the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rollout_mid_snapshot_cancels_cleanly_within_seconds_and_hands_the_node_over() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    // The 48 MiB stream would take ~25 s.
    let MidSnapshot { proxy, run, files } = mid_snapshot::start(&env, "big").await;
    let dir = env.node_dir("node0");
    assert!(
        support::dir_entries(&dir)
            .iter()
            .any(|e| e.contains("partial")),
        "a temp file is being written: {:?}",
        support::dir_entries(&dir)
    );

    // The rollout's new pod starts first and waits for the old one, touching nothing.
    let new = env.start_replacement_agent(0);
    env.wait_until("the new agent to wait for the old one", REACT, async || {
        env.log(&new)
            .contains("another agent of this node holds the snapshot directory")
            .then_some(())
    })
    .await;
    assert!(
        env.run_files(&run)
            .await
            .iter()
            .all(|f| phase(f) == Phase::Running),
        "the new agent left the old one's records alone"
    );
    assert!(
        support::dir_entries(&dir)
            .iter()
            .any(|e| e.contains("partial"))
    );

    let exited = env.terminate("agent node0", Duration::from_secs(30));
    let stopped = jiff::Timestamp::now();
    eprintln!("the agent exited {exited:?} after SIGTERM");
    assert!(
        exited < Duration::from_secs(12),
        "the agent took {exited:?} to exit (grace 5 s, then cancellation)\n{}",
        env.log("agent node0")
    );
    // Everything below was done by the stopping agent, before its successor started work.
    for f in env.run_files(&run).await {
        assert_eq!(phase(&f), Phase::Failed, "{f:?}");
        let message = error_message(&f);
        assert!(
            message.contains("stopped (SIGTERM)") && message.contains("cancelled"),
            "the reason is given: {message}"
        );
        if is_local(&f) {
            assert!(
                !local_path(&f).exists(),
                "no local file with the final name"
            );
        } else {
            assert!(env.s3_object(&s3_key(&f)).await.is_none(), "no S3 object");
        }
    }
    let left = support::dir_entries(&dir);
    assert!(
        !left.iter().any(|e| e.contains("partial")),
        "the temp file was removed: {left:?}"
    );
    assert!(
        env.multipart_uploads().await.is_empty(),
        "the multipart upload was aborted"
    );
    let _ = files;

    // The new agent of the node takes over and the next run (S3 at full speed).
    env.wait_until("the new agent to take over", REACT, async || {
        env.log(&new)
            .contains("the previous agent of this node has stopped")
            .then_some(())
    })
    .await;
    assert!(
        !env.log(&new).contains("removed unfinished snapshot files"),
        "the old agent had already removed its temp file"
    );
    proxy.set_rate(0);
    env.wait_agent_renewed("node0", stopped).await;
    let next = env.request_run("big").await;
    env.wait_run_ready(&next, 2, Duration::from_secs(60)).await;
    env.assert_no_forbidden();
}

/// Inert stand-ins for the chart's controller Deployment and agent DaemonSet (this API server
/// runs no controllers, so they never get pods: the processes play the pods).
const WORKLOADS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: etcd-snapshot-controller, namespace: etcd-snapshot}
spec:
  replicas: 2
  selector: {matchLabels: {app: c}}
  template:
    metadata: {labels: {app: c}}
    spec: {containers: [{name: c, image: etcd-snapshot}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: etcd-snapshot-agent, namespace: etcd-snapshot}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec: {containers: [{name: a, image: etcd-snapshot}]}
";

/// The command the chart's pre-delete hook Job runs (templates/uninstall.yaml), as its
/// ServiceAccount bound only by deploy/rbac.yaml.
fn run_uninstall_hook(env: &OperatorEnv) -> (bool, String, String) {
    support::run(env.cli_as(UNINSTALL_SA).args([
        "uninstall",
        "--namespace",
        NS,
        "--controller-deployment=etcd-snapshot-controller",
        "--agent-daemonset=etcd-snapshot-agent",
        "--pod-selector=app.kubernetes.io/name=etcd-snapshot-operator,app.kubernetes.io/component in (controller,agent)",
        "--timeout=20s",
    ]))
}

fn holds_finalizer(f: &ETCDSnapshotFile) -> bool {
    f.finalizers().iter().any(|x| x == consts::FINALIZER)
}

/// Must show: `helm uninstall` never deletes a backup and never leaves a record that cannot be
/// deleted, and a reinstall adopts what is there.
/// 1. Helm deletes the agent's RBAC while the agent still runs, and a record is being deleted:
///    the agent must not delete the file it could not release the record of.
/// 2. The pre-delete hook's command, as its ServiceAccount: without any one of its verbs it fails
///    with "forbidden" and changes nothing; with them it stops the operator and releases every
///    record, deleting nothing. Every record left behind is deletable, and deleting it leaves the
///    file.
/// 3. A reinstall: records of the files and objects are there again, with the finalizer, and
///    deleting one deletes its file or object as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_keeps_every_backup_leaves_every_record_deletable_and_a_reinstall_adopts_them() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    env.apply(&Schedule::new("nightly").s3().yaml());
    let mut copies = Vec::new();
    for _ in 0..2 {
        let run = env.request_run("nightly").await;
        copies.extend(env.wait_run_ready(&run, 2, RUN).await);
    }
    let local: Vec<ETCDSnapshotFile> = copies.iter().filter(|f| is_local(f)).cloned().collect();
    let remote: Vec<ETCDSnapshotFile> = copies.iter().filter(|f| !is_local(f)).cloned().collect();
    let stored = async || {
        for f in &local {
            assert!(local_path(f).exists(), "{} kept", local_path(f).display());
        }
        for f in &remote {
            assert!(
                env.s3_object(&s3_key(f)).await.is_some(),
                "{} kept",
                s3_key(f)
            );
        }
    };

    // 1. The agent's RBAC goes while it runs; then a record is deleted.
    let (ok, _, err) = support::run(env.kubectl().args([
        "delete",
        "clusterrolebinding",
        operator_support::AGENT_SA,
    ]));
    assert!(ok, "delete the agent's ClusterRoleBinding: {err}");
    env.wait_can_i(
        operator_support::AGENT_SA,
        "patch",
        "etcdsnapshotfiles.etcdsnapshot.io",
        None,
        false,
    )
    .await;
    let victim = local[1].name_any();
    let (ok, _, err) = support::run(
        env.kubectl()
            .args(["delete", "esf", &victim, "--wait=false"]),
    );
    assert!(ok, "delete {victim}: {err}");
    env.wait_until("the agent to refuse the deletion", REACT, async || {
        env.log("agent node0")
            .contains("checking that the finalizer can be released (nothing was deleted)")
            .then_some(())
    })
    .await;
    stored().await;

    // 2. The hook: the operator's pods stop (the kubelet's SIGTERM), the command stops the
    //    workloads and releases the records.
    env.apply(WORKLOADS);
    env.terminate("controller ctl-1", Duration::from_secs(10));
    env.terminate("agent node0", Duration::from_secs(20));
    let rbac = operator_support::rbac_yaml();
    let needed = [
        (
            "Role",
            "deployments",
            "patch",
            "deployments/etcd-snapshot-controller",
            Some(NS),
        ),
        (
            "Role",
            "daemonsets",
            "delete",
            "daemonsets/etcd-snapshot-agent",
            Some(NS),
        ),
        ("Role", "pods", "list", "pods", Some(NS)),
        (
            "ClusterRole",
            "etcdsnapshotfiles",
            "list",
            "etcdsnapshotfiles.etcdsnapshot.io",
            None,
        ),
        (
            "ClusterRole",
            "etcdsnapshotfiles",
            "patch",
            "etcdsnapshotfiles.etcdsnapshot.io",
            None,
        ),
    ];
    for (kind, resource, verb, target, ns) in needed {
        env.apply(&rbac_minus(kind, UNINSTALL_SA, resource, verb));
        env.wait_can_i(UNINSTALL_SA, verb, target, ns, false).await;
        let (ok, out, err) = run_uninstall_hook(&env);
        assert!(
            !ok && err.contains("forbidden"),
            "without {verb} on {resource} the hook must fail: {out}{err}"
        );
        assert!(
            env.files("").await.iter().all(holds_finalizer),
            "without {verb} on {resource} nothing was released"
        );
        env.apply(&rbac);
        env.wait_can_i(UNINSTALL_SA, verb, target, ns, true).await;
        env.apply(WORKLOADS);
    }
    let (ok, out, err) = run_uninstall_hook(&env);
    assert!(ok, "the hook: {out}{err}");
    eprintln!("$ etcd-snapshot uninstall ...\n{out}");
    assert!(
        out.contains("Released 4 snapshot records")
            && out.contains("no snapshot file or object was deleted"),
        "{out}"
    );
    let deployment = Api::<Deployment>::namespaced(env.admin.clone(), NS)
        .get("etcd-snapshot-controller")
        .await
        .expect("controller Deployment");
    assert_eq!(
        deployment.spec.and_then(|s| s.replicas),
        Some(0),
        "scaled to 0"
    );
    assert!(
        Api::<DaemonSet>::namespaced(env.admin.clone(), NS)
            .get_opt("etcd-snapshot-agent")
            .await
            .expect("read DaemonSet")
            .is_none(),
        "the agent DaemonSet is deleted"
    );
    let left = env.files("").await;
    assert!(left.iter().all(|f| !holds_finalizer(f)), "{left:?}");
    assert!(
        left.iter()
            .all(|f| f.annotations().contains_key(consts::ANNOTATION_RELEASED)),
        "released records are marked for adoption: {left:?}"
    );
    assert!(
        left.iter().all(|f| f.name_any() != victim),
        "the record being deleted is gone"
    );
    assert_eq!(left.len(), 3);
    stored().await;

    // Every record left behind is deletable at once, and deleting it deletes nothing.
    let first_local = local[0].name_any();
    let (ok, _, err) =
        support::run(
            env.kubectl()
                .args(["delete", "esf", &first_local, "--timeout=20s"]),
        );
    assert!(ok, "delete {first_local} after the uninstall: {err}");
    stored().await;

    // 3. Reinstall: the records are adopted or made again, with the finalizer.
    let restarted = jiff::Timestamp::now();
    env.start_controller("ctl-2");
    env.start_agent(0);
    env.wait_for_leader("ctl-2", Duration::from_secs(20)).await;
    env.wait_agent_renewed("node0", restarted).await;
    let adopted = env
        .wait_until(
            "every file and object recorded again, with the finalizer",
            Duration::from_secs(40),
            async || {
                let files = env.files("").await;
                let all = copies.iter().all(|c| {
                    files.iter().any(|f| {
                        f.spec.location == c.spec.location
                            && holds_finalizer(f)
                            && !f.annotations().contains_key(consts::ANNOTATION_RELEASED)
                            && phase(f) == Phase::Ready
                    })
                });
                (all && files.len() == copies.len()).then_some(files)
            },
        )
        .await;
    // Deleting an adopted record deletes its file or object as usual.
    for original in [&local[0], &remote[0]] {
        let record = adopted
            .iter()
            .find(|f| f.spec.location == original.spec.location)
            .expect("adopted record");
        let (ok, _, err) = support::run(env.kubectl().args([
            "delete",
            "esf",
            &record.name_any(),
            "--timeout=30s",
        ]));
        assert!(ok, "delete {}: {err}", record.name_any());
    }
    assert!(
        !local_path(&local[0]).exists(),
        "the adopted local record's file was deleted"
    );
    assert!(
        env.s3_object(&s3_key(&remote[0])).await.is_none(),
        "the adopted S3 record's object was deleted"
    );
    assert!(local_path(&local[1]).exists() && env.s3_object(&s3_key(&remote[1])).await.is_some());
}
