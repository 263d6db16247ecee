//! Faults: the agent killed (SIGKILL) in the middle of a snapshot.
//!
//! etcd holds ~48 MiB and S3 is reached through a bandwidth-limiting proxy in front of the real
//! SeaweedFS, so the one etcd stream (local file + multipart upload) takes many seconds. The
//! agent is killed once the upload is under way. What must hold: no local file with a final
//! name, no S3 object with a final key; after the agent restarts, both records are Failed
//! ("interrupted"), the temp file is gone, the multipart upload is aborted; the next run
//! succeeds.

use crate::mid_snapshot;
use crate::operator_support;
use crate::support;

use etcd_snapshot::api::Phase;
use mid_snapshot::MidSnapshot;
use operator_support::{
    OperatorEnv, OperatorOptions, error_message, is_local, local_path, phase, s3_key,
};
use std::time::Duration;

/// Multipart uploads in progress under the test folder, as (key, upload id).
async fn multipart_uploads(env: &OperatorEnv) -> Vec<(String, String)> {
    env.multipart_uploads().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_snapshot_leaves_no_final_file_or_object_and_recovers_on_restart() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    // The 48 MiB stream takes ~25 s.
    let MidSnapshot { proxy, run, files } = mid_snapshot::start(&env, "killed").await;
    let local = files
        .iter()
        .find(|f| is_local(f))
        .expect("local copy")
        .clone();
    let s3 = files
        .iter()
        .find(|f| !is_local(f))
        .expect("S3 copy")
        .clone();
    let dir = env.node_dir("node0");
    let partial_before = support::dir_entries(&dir);
    assert!(
        partial_before
            .iter()
            .any(|e| e.starts_with('.') && e.contains("partial")),
        "a temp file is being written: {partial_before:?}"
    );

    env.kill_agent("node0");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Right after the kill: nothing looks finished.
    assert!(
        !local_path(&local).exists(),
        "no local file with the final name"
    );
    assert!(
        env.s3_object(&s3_key(&s3)).await.is_none(),
        "no S3 object with the final key"
    );
    assert!(
        multipart_uploads(&env)
            .await
            .iter()
            .any(|(k, _)| *k == s3_key(&s3)),
        "the interrupted multipart upload is left in S3 until the agent comes back"
    );

    // The agent restarts: interrupted records Failed, temp file removed, upload aborted.
    env.start_agent(0);
    let failed = env
        .wait_until(
            "both interrupted copies Failed",
            Duration::from_secs(30),
            async || {
                let files = env.run_files(&run).await;
                files
                    .iter()
                    .all(|f| phase(f) == Phase::Failed)
                    .then_some(files)
            },
        )
        .await;
    for f in &failed {
        assert!(
            error_message(f).contains("agent restarted"),
            "the reason is given: {}",
            error_message(f)
        );
    }
    env.wait_until(
        "the interrupted multipart upload to be aborted",
        Duration::from_secs(30),
        async || multipart_uploads(&env).await.is_empty().then_some(()),
    )
    .await;
    // The agent logs it once S3 has answered the abort: a moment after the upload is gone.
    env.wait_until(
        "the restarted agent to log that it aborted the upload (not S3 on its own)",
        Duration::from_secs(30),
        async || {
            env.log("agent node0")
                .contains("aborted interrupted S3 uploads")
                .then_some(())
        },
    )
    .await;
    let entries = support::dir_entries(&dir);
    assert!(
        !entries.iter().any(|e| e.contains("partial")),
        "the temp file was removed: {entries:?}"
    );
    assert!(!local_path(&local).exists());
    assert!(env.s3_object(&s3_key(&s3)).await.is_none());

    // The next run succeeds (S3 at full speed).
    proxy.set_rate(0);
    let next = env.request_run("killed").await;
    let ready = env.wait_run_ready(&next, 2, Duration::from_secs(60)).await;
    for f in &ready {
        if is_local(f) {
            assert!(local_path(f).exists());
        } else {
            assert!(env.s3_object(&s3_key(f)).await.is_some());
        }
    }
    assert!(multipart_uploads(&env).await.is_empty());
    env.assert_no_forbidden();
}
