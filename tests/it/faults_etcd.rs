//! Faults: an etcd member down at tick time (three members, one agent per member).
//!
//! What must hold: with `members: All`, the down member's node gets a Failed record with a clear
//! message and the other nodes' snapshots are Ready; with `members: One`, only healthy members
//! are chosen, so every run is Ready and none lands on the down member's node.

use crate::operator_support;

use etcd_snapshot::api::Phase;
use etcd_snapshot::consts;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use operator_support::{NS, OperatorEnv, OperatorOptions, Schedule, error_message, phase};
use std::time::Duration;

const RUN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_fails_only_its_node_with_all_and_is_skipped_with_one() {
    let mut env = OperatorEnv::start(OperatorOptions {
        etcd_members: 3,
        agents: 3,
        ..OperatorOptions::default()
    })
    .await;
    env.apply(&Schedule::new("all").members("All").yaml());
    env.apply(&Schedule::new("one").members("One").yaml());

    // Member 1 (node1's) goes down.
    env.etcd.stop_member(1);
    // Wait until node1's agent reports it (heartbeat every second).
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), NS);
    env.wait_until(
        "node1's agent to report its etcd member unhealthy",
        Duration::from_secs(30),
        async || {
            let list = leases
                .list(&ListParams::default().labels(&format!("{}=true", consts::LABEL_AGENT)))
                .await
                .ok()?;
            list.items
                .iter()
                .find(|l| {
                    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("node1")
                })
                .and_then(|l| l.annotations().get(consts::ANNOTATION_ETCD_HEALTH).cloned())
                .filter(|h| h != "true")
                .map(|_| ())
        },
    )
    .await;

    // All: one copy per node; node1 Failed with a clear message, the others Ready.
    let run = env.request_run("all").await;
    let files = env.wait_run_finished(&run, 3, RUN).await;
    for f in &files {
        if f.spec.node_name == "node1" {
            assert_eq!(phase(f), Phase::Failed, "{}", f.name_any());
            let message = error_message(f);
            assert!(
                message.contains("etcd")
                    && message.contains(&env.etcd.endpoint(1).replace("http://", "")),
                "the message names etcd and the member's endpoint: {message}"
            );
            eprintln!("member down: {message}");
        } else {
            assert_eq!(
                phase(f),
                Phase::Ready,
                "{} on {}: {}",
                f.name_any(),
                f.spec.node_name,
                error_message(f)
            );
        }
    }

    // One: three runs (the choice rotates from run to run), never on node1, all Ready.
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let run = env.request_run("one").await;
        let files = env.wait_run_ready(&run, 1, RUN).await;
        nodes.push(files[0].spec.node_name.clone());
    }
    assert!(
        nodes.iter().all(|n| n != "node1"),
        "a healthy member is chosen each time: {nodes:?}"
    );

    // The member comes back; the next All run is Ready everywhere.
    env.etcd.start_member(1).expect("restart member 1");
    env.wait_until(
        "node1's agent to report its etcd member healthy again",
        Duration::from_secs(30),
        async || {
            let list = leases
                .list(&ListParams::default().labels(&format!("{}=true", consts::LABEL_AGENT)))
                .await
                .ok()?;
            list.items
                .iter()
                .find(|l| {
                    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("node1")
                })
                .and_then(|l| l.annotations().get(consts::ANNOTATION_ETCD_HEALTH).cloned())
                .filter(|h| h == "true")
                .map(|_| ())
        },
    )
    .await;
    let run = env.request_run("all").await;
    env.wait_run_ready(&run, 3, RUN).await;
    env.assert_no_forbidden();
}
