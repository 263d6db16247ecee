//! Leader election against the real kube-apiserver: one leader at a time, failover after a
//! crash within lease duration + retry period, prompt handover on release, step-down when the
//! API server is gone, and a clear 403 for an identity without RBAC on Leases.

use crate::support;

use eso_testenv::{ApiServer, ApiServerOptions, ApiUser};
use etcd_snapshot::leader::{LeaderElector, LeaderError, LeaseConfig};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const NS: &str = "eso-system";
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
/// Slack for API round trips on a loaded test machine.
const SLACK: Duration = Duration::from_secs(1);

fn config() -> LeaseConfig {
    LeaseConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..LeaseConfig::default()
    }
}

async fn create_namespace(admin: &Client) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// A running elector: its task and its leadership channel.
struct Candidate {
    elector: LeaderElector,
    task: tokio::task::JoinHandle<()>,
    leading: watch::Receiver<bool>,
}

fn start(client: &Client, identity: &str) -> Candidate {
    let elector = LeaderElector::new(client.clone(), NS, identity, config());
    let (tx, leading) = watch::channel(false);
    let task = tokio::spawn(elector.clone().run(tx));
    Candidate {
        elector,
        task,
        leading,
    }
}

/// Wait until `rx` shows `want`; return how long it took.
async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(limit, rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("leadership did not become {want} within {limit:?}"))
        .ok();
    start.elapsed()
}

/// Sample both channels every 10 ms; flag any instant where both are true.
fn watch_for_two_leaders(
    a: watch::Receiver<bool>,
    b: watch::Receiver<bool>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let both = Arc::new(AtomicBool::new(false));
    let flag = both.clone();
    let task = tokio::spawn(async move {
        loop {
            if *a.borrow() && *b.borrow() {
                flag.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (both, task)
}

async fn holder(admin: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(admin.clone(), NS)
        .get(&config().name)
        .await
        .expect("read lease");
    lease.spec.and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_leader_at_a_time_with_failover_release_and_step_down() {
    let api = ApiServer::start(ApiServerOptions::default()).expect("start kube-apiserver");
    let admin = support::admin_client(&api).await;
    create_namespace(&admin).await;

    let a = start(&admin, "replica-a");
    let b = start(&admin, "replica-b");
    let (both, sampler) = watch_for_two_leaders(a.leading.clone(), b.leading.clone());

    // Exactly one leads, and keeps leading while it renews.
    let first = Instant::now();
    while !*a.leading.borrow() && !*b.leading.borrow() {
        assert!(first.elapsed() < LEASE + SLACK, "nobody became leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut leader, mut standby) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    tokio::time::sleep(LEASE + RETRY).await;
    assert!(*leader.leading.borrow() && !*standby.leading.borrow());
    assert_eq!(
        holder(&admin).await.as_deref(),
        Some(leader.elector.identity())
    );
    let transitions = |l: Lease| l.spec.and_then(|s| s.lease_transitions);
    let lease = Api::<Lease>::namespaced(admin.clone(), NS);
    let before = transitions(lease.get(&config().name).await.expect("lease"));

    // A crash (task aborted, no release): the standby takes over once the lease expires.
    leader.task.abort();
    let took = wait_for(&mut standby.leading, true, LEASE + RETRY + SLACK).await;
    assert!(took <= LEASE + RETRY + SLACK, "failover took {took:?}");
    assert!(
        !*leader.leading.borrow(),
        "an aborted elector publishes false"
    );
    assert_eq!(
        holder(&admin).await.as_deref(),
        Some(standby.elector.identity())
    );
    let after = transitions(lease.get(&config().name).await.expect("lease"));
    assert_eq!(
        after,
        before.map(|n| n + 1),
        "leaseTransitions counts the takeover"
    );

    // The crashed replica comes back as a standby; release hands over within a retry period.
    let old_identity = leader.elector.identity().to_owned();
    std::mem::swap(&mut leader, &mut standby);
    sampler.abort();
    standby = start(&admin, &old_identity);
    let (both2, sampler) = watch_for_two_leaders(leader.leading.clone(), standby.leading.clone());
    tokio::time::sleep(RETRY * 2).await;
    assert!(
        !*standby.leading.borrow(),
        "a returning replica waits its turn"
    );
    leader.elector.release().await.expect("release");
    assert!(
        !*leader.leading.borrow(),
        "release publishes false before it returns"
    );
    let took = wait_for(&mut standby.leading, true, RETRY + SLACK).await;
    assert!(
        took <= RETRY + SLACK,
        "handover after release took {took:?}"
    );
    tokio::time::timeout(Duration::from_secs(1), leader.task)
        .await
        .expect("run returns after release")
        .expect("run did not panic");
    sampler.abort();
    assert!(
        !both.load(Ordering::SeqCst) && !both2.load(Ordering::SeqCst),
        "two leaders at once"
    );

    // The API server goes away: the leader stops acting within its renew deadline.
    drop(api);
    let took = wait_for(&mut standby.leading, false, RENEW + SLACK).await;
    assert!(took <= RENEW + SLACK, "step-down took {took:?}");
    standby.task.abort();
}

#[tokio::test]
async fn an_identity_without_rbac_on_leases_gets_a_clear_403() {
    let user = ApiUser::service_account(NS, "no-rbac");
    let api = ApiServer::start(ApiServerOptions {
        users: vec![user.clone()],
    })
    .expect("start kube-apiserver");
    let admin = support::admin_client(&api).await;
    create_namespace(&admin).await;
    let client =
        support::client_from(api.kubeconfig(&user.name).expect("kubeconfig of the user")).await;

    let elector = LeaderElector::new(client.clone(), NS, "replica-x", config());
    let err = elector
        .try_acquire_or_renew()
        .await
        .expect_err("an unbound identity must not get the lease");
    assert!(matches!(err, LeaderError::Forbidden { .. }), "{err:?}");
    assert_eq!(err.reason(), "LeaseForbidden");
    let message = err.to_string();
    assert!(
        message.contains("forbidden") && message.contains("leases"),
        "{message}"
    );
    match std::error::Error::source(&err).and_then(|s| s.downcast_ref::<kube::Error>()) {
        Some(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected the API's 403 as the source, got {other:?}"),
    }

    // The run loop keeps retrying without panicking and never claims leadership.
    let c = start(&client, "replica-y");
    tokio::time::sleep(RETRY * 4).await;
    assert!(!*c.leading.borrow());
    assert!(!c.task.is_finished(), "run must keep retrying");
    c.task.abort();
}
