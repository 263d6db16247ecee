//! `kubectl delete pod` of the agent while it takes a large snapshot of the node's etcd.

use crate::e2e_support::{
    self, OPERATOR_NS, RELEASE, kubectl, node_etcd, node_etcd_db_size, snapshot_dir_entries,
    snapshot_files, wait_for,
};
use crate::support;
use eso_testenv::Cluster;
use etcd_snapshot::api::{ETCDSnapshotFile, Phase};
use etcd_snapshot::consts;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Keys of the bulk data (deleted again at the end).
const FILL_PREFIX: &str = "/e2e-fill/";
/// MiB of incompressible values: the snapshot stream then takes seconds.
const FILL_MIB: usize = 384;
const AGENT_PODS: &str = "app.kubernetes.io/component=agent";

fn phase(f: &ETCDSnapshotFile) -> Option<Phase> {
    f.status.as_ref().and_then(|s| s.phase)
}

async fn live_agent_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(AGENT_PODS))
        .await
        .expect("list agent pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The node's etcd made large (a few hundred MiB), an on-demand run of the release's schedule,
/// and the agent pod deleted while its record is Running: the agent stops within seconds
/// (SIGTERM reaches it: it finishes within its 5 s shutdown grace or cancels; measured from its
/// own log, as kubelet 1.20 deletes the pod object only at its next status sync), the record
/// ends Ready or Failed with the reason (never stuck Running), no temp file is left in the
/// snapshot folder, and the DaemonSet's replacement pod is Running soon after. The bulk data is
/// deleted again (compacted, defragmented) so later snapshots stay small.
pub async fn agent_pod_deleted_during_a_large_snapshot(cluster: &Cluster, client: &Client) {
    let mut etcd = node_etcd(cluster).await;
    let t = Instant::now();
    e2e_support::fill_node_etcd(&mut etcd, FILL_PREFIX, FILL_MIB).await;
    let db = node_etcd_db_size(&mut etcd).await;
    eprintln!(
        "e2e: {FILL_MIB} MiB put into the node's etcd in {:.1?} (dbSize {} MiB)",
        t.elapsed(),
        db >> 20
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    let old = wait_for(
        "one Ready agent pod",
        Duration::from_secs(120),
        async || {
            let live = live_agent_pods(&pods).await;
            (live.len() == 1 && e2e_support::pod_ready(&live[0])).then(|| live[0].name_any())
        },
    )
    .await;
    let selector = format!("{}={RELEASE}", consts::LABEL_SCHEDULE);
    let before: HashSet<String> = snapshot_files(client, &selector)
        .await
        .iter()
        .map(|f| f.name_any())
        .collect();
    let (ok, out, err) = support::run(
        support::cli()
            .args(["trigger", RELEASE])
            .env("KUBECONFIG", cluster.kubeconfig()),
    );
    assert!(ok, "etcd-snapshot trigger {RELEASE}: {out}\n{err}");
    let requested = Instant::now();
    let running = wait_for(
        "the large snapshot's record Running",
        Duration::from_secs(120),
        async || {
            snapshot_files(client, &selector)
                .await
                .into_iter()
                .find(|f| !before.contains(&f.name_any()) && phase(f) == Some(Phase::Running))
        },
    )
    .await;
    let name = running.name_any();
    let temp_file = snapshot_dir_entries(cluster)
        .into_iter()
        .find(|e| e.contains(".partial-"));
    eprintln!(
        "e2e: {name} Running {:.1?} after the trigger (temp file {temp_file:?}); deleting agent pod {old}",
        requested.elapsed()
    );

    // The old agent's log, followed to its end: what it did after SIGTERM.
    let follow = {
        let (pods, old) = (pods.clone(), old.clone());
        tokio::spawn(async move {
            use futures::{AsyncBufReadExt, TryStreamExt};
            let params = LogParams {
                follow: true,
                timestamps: true,
                ..LogParams::default()
            };
            let mut lines = Vec::new();
            if let Ok(stream) = pods.log_stream(&old, &params).await {
                let mut stream = stream.lines();
                while let Ok(Some(line)) = stream.try_next().await {
                    lines.push(line);
                }
            }
            lines
        })
    };
    let deleted = Instant::now();
    let deleted_at = jiff::Timestamp::now();
    let (ok, out, err) = kubectl(
        cluster,
        &["delete", "pod", "-n", OPERATOR_NS, &old, "--wait=false"],
    );
    assert!(ok, "kubectl delete pod {old}: {out}\n{err}");
    wait_for(
        "the deleted agent pod gone",
        Duration::from_secs(60),
        async || {
            pods.get_opt(&old)
                .await
                .expect("get pod")
                .is_none()
                .then_some(())
        },
    )
    .await;
    let gone = deleted.elapsed();
    let log = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    eprintln!(
        "e2e: agent pod deleted at {deleted_at}; its log from SIGTERM on:\n{}",
        shutdown_lines(&log)
    );
    let new = wait_for(
        "the replacement agent pod Running",
        Duration::from_secs(120),
        async || {
            live_agent_pods(&pods).await.into_iter().find(|p| {
                p.name_any() != old
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
        },
    )
    .await;
    let replaced = deleted.elapsed();

    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let done = wait_for(
        "the record Ready or Failed",
        Duration::from_secs(120),
        async || {
            let f = files.get(&name).await.expect("get the record");
            matches!(phase(&f), Some(Phase::Ready | Phase::Failed)).then_some(f)
        },
    )
    .await;
    let ended = deleted.elapsed();
    let path = PathBuf::from(
        done.spec
            .location
            .strip_prefix("file://")
            .unwrap_or_else(|| panic!("not a local copy: {}", done.spec.location)),
    );
    let status = done.status.clone().unwrap_or_default();
    let outcome = match status.phase {
        Some(Phase::Failed) => {
            let message = status.error.and_then(|e| e.message).unwrap_or_default();
            assert!(
                message.contains("SIGTERM"),
                "the record says why it failed: {message:?}"
            );
            assert!(!path.exists(), "a Failed snapshot left {}", path.display());
            format!("Failed: {message}")
        }
        _ => {
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .len();
            format!("Ready, {} MiB", size >> 20)
        }
    };
    let left = snapshot_dir_entries(cluster);
    assert!(
        !left.iter().any(|e| e.contains(".partial-")),
        "a temp file was left in the snapshot folder: {left:?}"
    );
    eprintln!(
        "e2e: agent pod deleted mid-snapshot: gone after {gone:.1?}, replacement {} Running after {replaced:.1?}, record {:.1?} after the delete: {outcome}",
        new.name_any(),
        ended
    );
    // The agent's own part: from SIGTERM to its last line, the 5 s shutdown grace, then the
    // cancellation (kubelet's SIGKILL would come after 30 s). kubelet 1.20 then deletes the pod
    // object at its next status sync (up to ~10 s later), which the bound on `gone` allows.
    let stopping = log_time(&log, "agent stopping");
    let stopped = log_time(&log, "agent stopped");
    let shutdown = match (stopping, stopped) {
        (Some(a), Some(b)) => a.duration_until(b).unsigned_abs(),
        _ => panic!(
            "the old agent's log lacks its shutdown:\n{}",
            log.join("\n")
        ),
    };
    eprintln!("e2e: the old agent shut down in {shutdown:.1?} after SIGTERM");
    assert!(
        shutdown < Duration::from_secs(10),
        "the agent took {shutdown:?} from SIGTERM to stopped (grace 5 s, then cancellation)"
    );
    assert!(
        gone < Duration::from_secs(45),
        "the agent pod took {gone:?} to go"
    );
    assert!(
        replaced < gone + Duration::from_secs(30),
        "the replacement agent pod took {replaced:?} to run"
    );

    // Back to a small etcd, and no large file for the later scenarios.
    let t = Instant::now();
    if status.phase == Some(Phase::Ready) {
        let (ok, out, err) = kubectl(cluster, &["delete", "esf", &name, "--timeout=2m"]);
        assert!(ok, "kubectl delete esf {name}: {out}\n{err}");
        assert!(!path.exists(), "{} still on the host", path.display());
    }
    e2e_support::drop_node_etcd_prefix(&mut etcd, FILL_PREFIX).await;
    eprintln!(
        "e2e: bulk data dropped in {:.1?} (dbSize {} MiB)",
        t.elapsed(),
        node_etcd_db_size(&mut etcd).await >> 20
    );
}

/// The agent's log lines from "agent stopping" on.
fn shutdown_lines(lines: &[String]) -> String {
    // kubelet's own lines start with a timestamp too; the stream's end message does not.
    let lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let from = lines
        .iter()
        .position(|l| l.contains("stopping"))
        .unwrap_or(lines.len().saturating_sub(10));
    lines[from..]
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The time kubelet stamped on the first log line containing `what`.
fn log_time(lines: &[String], what: &str) -> Option<jiff::Timestamp> {
    lines
        .iter()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}
