//! Faults: S3 slow (a bandwidth-limiting proxy in front of the real SeaweedFS) or down (the
//! SeaweedFS process stopped) while a snapshot is uploaded, and a Secret deleted for good while
//! S3 records are being deleted.
//!
//! What must hold: the configured `etcd-s3-timeout` is honoured, the multipart upload is aborted,
//! the local copy of the same stream is still Ready, the S3 copy is Failed with the reason, and
//! the next run succeeds once S3 is back. A deleted S3 record whose Secret is gone is released
//! after `--s3-release-after` with a Warning that the object was NOT deleted, and the object is
//! still there.

use crate::faults_support;
use crate::operator_support;
use crate::proxy;
use crate::support;

use etcd_snapshot::api::Phase;
use etcd_snapshot::consts;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use operator_support::{
    BUCKET, FOLDER, NS, OperatorEnv, OperatorOptions, SECRET, Schedule, error_message, is_local,
    phase, s3_key,
};
use proxy::ThrottleProxy;
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(60);

async fn multipart_uploads(env: &OperatorEnv) -> usize {
    support::s3_client(&env.s3)
        .list_multipart_uploads()
        .bucket(BUCKET)
        .prefix(format!("{FOLDER}/"))
        .send()
        .await
        .expect("list multipart uploads")
        .uploads()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_stopped_s3_fails_only_the_s3_copy_within_the_timeout_and_the_next_run_recovers() {
    let mut env = OperatorEnv::start(OperatorOptions::default()).await;
    // 20 MiB: more than two 8 MiB parts.
    faults_support::fill_etcd(&env.etcd.endpoint(0), 20).await;
    let proxy = ThrottleProxy::start(&env.s3.host_port(), 0).await;
    env.create_s3_secret_at(&proxy.host_port(), &[(consts::secret_keys::TIMEOUT, "3s")])
        .await;
    env.apply(&Schedule::new("flaky").s3().yaml());

    // 1. Slow: 64 KiB/s, so an 8 MiB part would need ~2 minutes; the timeout is 3 s.
    proxy.set_rate(64 << 10);
    let started = Instant::now();
    let slow = env.request_run("flaky").await;
    let files = env.wait_run_finished(&slow, 2, RUN).await;
    let took = started.elapsed();
    let local = files.iter().find(|f| is_local(f)).expect("local");
    let s3 = files.iter().find(|f| !is_local(f)).expect("s3");
    assert_eq!(phase(local), Phase::Ready, "{}", error_message(local));
    assert_eq!(phase(s3), Phase::Failed);
    let message = error_message(s3);
    assert!(
        message.to_lowercase().contains("timed out") || message.to_lowercase().contains("timeout"),
        "the S3 copy says it timed out: {message}"
    );
    assert!(
        took < Duration::from_secs(45),
        "the 3 s timeout was honoured (a run took {took:?}, not the minutes the upload needs)"
    );
    assert!(env.s3_object(&s3_key(s3)).await.is_none(), "no object");
    // The abort goes through the slow proxy too; give it a moment.
    proxy.set_rate(0);
    env.wait_until(
        "the failed multipart upload to be aborted",
        Duration::from_secs(20),
        async || (multipart_uploads(&env).await == 0).then_some(()),
    )
    .await;

    // 2. Down: SeaweedFS stopped.
    env.s3.stop();
    let down = env.request_run("flaky").await;
    let files = env.wait_run_finished(&down, 2, RUN).await;
    let local = files.iter().find(|f| is_local(f)).expect("local");
    let s3 = files.iter().find(|f| !is_local(f)).expect("s3");
    assert_eq!(phase(local), Phase::Ready, "{}", error_message(local));
    assert_eq!(phase(s3), Phase::Failed);
    assert!(!error_message(s3).is_empty(), "the S3 copy says why");
    let down_message = error_message(s3);

    // 3. Back: the next run stores both copies.
    env.s3.restart().expect("restart SeaweedFS");
    let back = env.request_run("flaky").await;
    let files = env.wait_run_ready(&back, 2, RUN).await;
    let s3 = files.iter().find(|f| !is_local(f)).expect("s3");
    assert!(env.s3_object(&s3_key(s3)).await.is_some());
    assert_eq!(multipart_uploads(&env).await, 0, "no upload left behind");
    eprintln!("slow S3: {message}\nstopped S3: {down_message}");
    env.assert_no_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_s3_records_whose_secret_is_gone_are_released_with_a_warning_and_the_object_kept() {
    let env = OperatorEnv::start(OperatorOptions {
        controller_args: vec!["--s3-release-after".into(), "4s".into()],
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(&Schedule::new("orphaned").s3().yaml());
    let run = env.request_run("orphaned").await;
    let files = env.wait_run_ready(&run, 2, RUN).await;
    let s3 = files.iter().find(|f| !is_local(f)).expect("s3").clone();
    let key = s3_key(&s3);
    assert!(env.s3_object(&key).await.is_some());

    // The Secret goes for good, then the S3 record is deleted.
    Api::<Secret>::namespaced(env.admin.clone(), NS)
        .delete(SECRET, &Default::default())
        .await
        .expect("delete Secret");
    env.files_api()
        .delete(&s3.name_any(), &Default::default())
        .await
        .expect("delete S3 record");
    // Before the grace period it waits (the Secret may come back) ...
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        env.files_api()
            .get_opt(&s3.name_any())
            .await
            .expect("get")
            .is_some(),
        "the record waits for its Secret first"
    );
    // ... then the finalizer is released, the object is kept, and a Warning says so.
    env.wait_until(
        "the S3 record to be released",
        Duration::from_secs(30),
        async || {
            env.files_api()
                .get_opt(&s3.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        env.s3_object(&key).await.is_some(),
        "the object was not deleted without its settings"
    );
    let events = env
        .wait_until(
            "a Warning about the object left behind",
            Duration::from_secs(15),
            async || {
                let events = env.events_about(&s3.name_any()).await;
                events
                    .iter()
                    .any(|(_, note)| note.contains("NOT deleted") && note.contains(&key))
                    .then_some(events)
            },
        )
        .await;
    eprintln!("events: {events:?}");
    env.assert_no_forbidden();
}
