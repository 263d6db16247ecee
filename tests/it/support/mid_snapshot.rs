//! A snapshot caught in the middle, for the tests that stop or replace an agent while it
//! streams (`tests/it/faults_agent.rs`, `tests/it/lifecycle.rs`). Declared once in
//! `tests/it/main.rs` as `crate::mid_snapshot`; it uses `faults_support`,
//! `operator_support` and `proxy`.
#![allow(dead_code)]

use crate::faults_support::fill_etcd;
use crate::operator_support::{OperatorEnv, Schedule, phase};
use crate::proxy::ThrottleProxy;
use etcd_snapshot::api::{ETCDSnapshotFile, Phase};
use std::time::Duration;

/// How much etcd holds: at [`RATE`] the stream to S3 takes about 25 s.
const FILL_MIB: usize = 48;
/// The S3 proxy's rate, bytes per second (2 MiB/s).
const RATE: u64 = 2 << 20;

/// One run of a local-and-S3 schedule, under way on node0.
pub struct MidSnapshot {
    /// The throttling proxy in front of S3 (`set_rate(0)` lifts the limit).
    pub proxy: ThrottleProxy,
    /// The run's `requested-at` value.
    pub run: String,
    /// Its two records, both Running.
    pub files: Vec<ETCDSnapshotFile>,
}

/// Fill etcd, put S3 behind a slow proxy, apply schedule `name` (local and S3) and request a run;
/// return once both copies are Running and a multipart upload is under way.
pub async fn start(env: &OperatorEnv, name: &str) -> MidSnapshot {
    fill_etcd(&env.etcd.endpoint(0), FILL_MIB).await;
    let proxy = ThrottleProxy::start(&env.s3.host_port(), RATE).await;
    env.create_s3_secret_at(&proxy.host_port(), &[]).await;
    env.apply(&Schedule::new(name).s3().yaml());
    let run = env.request_run(name).await;
    let files = env
        .wait_until(
            "both copies Running and a multipart upload under way",
            Duration::from_secs(40),
            async || {
                let files = env.run_files(&run).await;
                let running = files.len() == 2 && files.iter().all(|f| phase(f) == Phase::Running);
                (running && !env.multipart_uploads().await.is_empty()).then_some(files)
            },
        )
        .await;
    MidSnapshot { proxy, run, files }
}
