//! Faults: stored snapshots corrupted (one byte flipped, truncated, wrong compression).
//!
//! What must hold: `etcd-snapshot verify` and `etcd-snapshot restore` refuse a corrupted
//! snapshot before anything touches the data dir; and a schedule's `spec.verify` catches a
//! corrupted stored copy (local or S3): the copy's `Verified` condition turns False with the
//! reason, a Warning `ETCDSnapshotVerifyFailed` event is published and
//! `etcd_snapshot_verify_failures_total` counts it, while healthy copies become Verified=True.

use crate::operator_support;
use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion};
use etcd_snapshot::api::ETCDSnapshotFile;
use etcd_snapshot::consts;
use kube::ResourceExt;
use operator_support::{
    BUCKET, OperatorEnv, OperatorOptions, Schedule, is_local, local_path, phase, s3_key,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const RUN: Duration = Duration::from_secs(40);

fn cli_with_tools() -> std::process::Command {
    let mut cmd = support::cli();
    cmd.env(
        "ETCD_SNAPSHOT_ETCDUTL",
        EtcdVersion::V3_5_30.etcdutl().expect("etcdutl"),
    );
    cmd
}

/// Save one snapshot with the CLI into `dir`; returns its path.
fn save(etcd: &EtcdCluster, dir: &Path, compress: bool) -> PathBuf {
    let mut cmd = support::cli();
    cmd.arg("save")
        .arg(format!("--dir={}", dir.display()))
        .arg("--node-name=n0")
        .args(support::etcd_flags(etcd));
    if compress {
        cmd.arg("--compress");
    }
    let (ok, _, err) = support::run(&mut cmd);
    assert!(ok, "save: {err}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(files.len(), 1, "one snapshot in {}", dir.display());
    files.remove(0)
}

fn data_dir_with_marker(parent: &Path) -> PathBuf {
    let data_dir = parent.join("etcd-data");
    std::fs::create_dir_all(data_dir.join("member")).expect("mkdir");
    std::fs::write(data_dir.join("marker"), b"keep me").expect("marker");
    data_dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[derive(Debug, Clone, Copy)]
enum Corruption {
    FlipByte,
    Truncate,
    /// A zstd snapshot's bytes stored under the plain name (and the other way round).
    WrongCompression,
}

#[tokio::test]
async fn verify_and_restore_refuse_corrupted_snapshots_before_touching_the_data_dir() {
    let etcd = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: false,
    })
    .expect("etcd");
    support::put_keys(&etcd, "k", 50);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut case = 0;
    for compress in [false, true] {
        for corruption in [
            Corruption::FlipByte,
            Corruption::Truncate,
            Corruption::WrongCompression,
        ] {
            case += 1;
            let dir = scratch.path().join(format!("case{case}"));
            let path = save(&etcd, &dir, compress);
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let mut data = std::fs::read(&path).expect("read snapshot");
            let target = match corruption {
                Corruption::FlipByte => {
                    let i = data.len() / 2;
                    data[i] ^= 0x01;
                    std::fs::write(&path, &data).expect("corrupt");
                    name.clone()
                }
                Corruption::Truncate => {
                    data.truncate(data.len() * 2 / 3);
                    std::fs::write(&path, &data).expect("corrupt");
                    name.clone()
                }
                Corruption::WrongCompression => {
                    // The same bytes under the other kind's name (no recorded checksum).
                    let other = match name.strip_suffix(".zst") {
                        Some(plain) => plain.to_string(),
                        None => format!("{name}.zst"),
                    };
                    std::fs::rename(&path, dir.join(&other)).expect("rename");
                    other
                }
            };
            let what = format!(
                "{corruption:?} of a {} snapshot",
                if compress { "zstd" } else { "plain" }
            );

            let (ok, out, err) = support::run(
                cli_with_tools()
                    .arg("verify")
                    .arg(&target)
                    .arg(format!("--dir={}", dir.display())),
            );
            assert!(!ok, "verify accepted the {what}: {out}");
            assert!(!err.trim().is_empty(), "verify says why ({what})");
            assert!(
                !err.contains("panicked"),
                "verify fails with an error, not a panic ({what}): {err}"
            );

            let node = scratch.path().join(format!("node{case}"));
            let data_dir = data_dir_with_marker(&node);
            let (ok, out, err) = support::run(
                cli_with_tools()
                    .arg("restore")
                    .arg("--cluster-reset")
                    .arg(format!("--cluster-reset-restore-path={target}"))
                    .arg(format!("--dir={}", dir.display()))
                    .arg(format!("--data-dir={}", data_dir.display()))
                    .arg("--name=n0")
                    .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380"),
            );
            assert!(!ok, "restore accepted the {what}: {out}");
            assert_eq!(
                listing(&data_dir),
                ["marker", "member"],
                "the data dir is untouched ({what}): {err}"
            );
            assert_eq!(
                std::fs::read(data_dir.join("marker")).expect("marker"),
                b"keep me"
            );
            assert_eq!(
                listing(&node),
                ["etcd-data"],
                "nothing was moved aside or created beside the data dir ({what}): {err}"
            );
        }
    }
}

fn verified(f: &ETCDSnapshotFile) -> Option<(String, String, String)> {
    let c = f
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The value of a metric line `name value` in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_verification_marks_good_copies_verified_and_catches_corrupted_ones() {
    let mut env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    support::put_keys(&env.etcd, "data", 100);
    env.apply(
        &Schedule::new("verified")
            .members("All")
            .spec("  verify:\n    everyRuns: 1")
            .s3()
            .yaml(),
    );

    // A good run: both copies Ready, then verified by the agent (Verified=True).
    let first = env.request_run("verified").await;
    let files = env.wait_run_ready(&first, 2, RUN).await;
    let names: Vec<String> = files.iter().map(|f| f.name_any()).collect();
    let good = env
        .wait_until(
            "both copies of the first run to be Verified=True",
            RUN,
            async || {
                let files = env.run_files(&first).await;
                files
                    .iter()
                    .all(|f| verified(f).is_some_and(|v| v.0 == "True"))
                    .then_some(files)
            },
        )
        .await;
    for f in &good {
        let (_, reason, message) = verified(f).expect("condition");
        assert_eq!(reason, "TestRestored", "{}", f.name_any());
        assert!(message.contains("test restore OK"), "{message}");
        assert!(
            f.status
                .as_ref()
                .and_then(|s| s.verified_time.as_ref())
                .is_some(),
            "verifiedTime is set"
        );
    }
    let text = env.metrics_text("agent node0").await;
    assert!(
        metric(&text, "etcd_snapshot_verified_total") >= 2.0,
        "success counter: {text}"
    );
    assert_eq!(metric(&text, "etcd_snapshot_verify_failures_total"), 0.0);

    // The stored copies rot: one byte of the local file flips, the S3 object is truncated.
    let local = good.iter().find(|f| is_local(f)).expect("local copy");
    let s3 = good.iter().find(|f| !is_local(f)).expect("S3 copy");
    let path = local_path(local);
    let mut data = std::fs::read(&path).expect("read local copy");
    let i = data.len() / 3;
    data[i] ^= 0x80;
    std::fs::write(&path, &data).expect("corrupt local copy");
    let key = s3_key(s3);
    let (body, meta) = env.s3_object(&key).await.expect("S3 object");
    support::s3_client(&env.s3)
        .put_object()
        .bucket(BUCKET)
        .key(&key)
        .set_metadata(Some(meta))
        .body(body[..body.len() / 2].to_vec().into())
        .send()
        .await
        .expect("truncate S3 object");

    // The next run fails (its etcd member is down), so the newest Ready snapshot is still the
    // rotten one, and the scheduled verification after that run catches it.
    env.etcd.stop_member(0);
    let second = env.request_run("verified").await;
    let failed = env.wait_run_finished(&second, 2, RUN).await;
    assert!(
        failed
            .iter()
            .all(|f| phase(f) == etcd_snapshot::api::Phase::Failed),
        "the run without etcd fails"
    );
    let caught = env
        .wait_until("both rotten copies to be Verified=False", RUN, async || {
            let files = env.run_files(&first).await;
            files
                .iter()
                .all(|f| verified(f).is_some_and(|v| v.0 == "False"))
                .then_some(files)
        })
        .await;
    for f in &caught {
        let (_, reason, message) = verified(f).expect("condition");
        eprintln!("{}: Verified=False: {message}", f.name_any());
        assert_eq!(reason, "VerifyFailed");
        assert!(
            message.contains("sha256") || message.contains("checksum"),
            "{}: the message names the failed check: {message}",
            f.name_any()
        );
    }
    for name in &names {
        let events = env
            .wait_until(
                &format!(
                    "a Warning {} event about {name}",
                    consts::REASON_VERIFY_FAILED
                ),
                Duration::from_secs(15),
                async || {
                    let events = env.events_about(name).await;
                    events
                        .iter()
                        .any(|(r, _)| r == consts::REASON_VERIFY_FAILED)
                        .then_some(events)
                },
            )
            .await;
        assert!(
            events.iter().any(|(r, _)| r == consts::REASON_VERIFIED),
            "the earlier success was an event too: {events:?}"
        );
    }
    let text = env.metrics_text("agent node0").await;
    assert_eq!(
        metric(&text, "etcd_snapshot_verify_failures_total"),
        2.0,
        "failure counter: {text}"
    );
    assert_eq!(
        env.controller_log("ctl-1")
            .matches("requested verification")
            .count(),
        4,
        "one request per copy per verification round (2 rounds, 2 copies), never twice"
    );
    // The corrupted copies are still there (verification never deletes anything).
    assert!(path.exists());
    assert!(env.s3_object(&key).await.is_some());
    env.assert_no_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_copy_whose_node_has_no_live_agent_is_verified_by_another_agent() {
    // The agents' etcd 3.5.30 case: they save from it and verify with its etcdutl.
    let mut env = OperatorEnv::start(OperatorOptions {
        agents: 2,
        etcd_version: EtcdVersion::V3_5_30,
        ..OperatorOptions::default()
    })
    .await;
    env.create_s3_secret(None).await;
    env.apply(
        &Schedule::new("s3-only")
            .members("All")
            .spec("  verify:\n    everyRuns: 2\n  local:\n    enabled: false")
            .s3()
            .yaml(),
    );
    // Run 1: one S3 copy per node (members: All); not verified yet (every 2 runs).
    let first = env.request_run("s3-only").await;
    let files = env.wait_run_ready(&first, 2, RUN).await;
    // node0's agent goes away for good; run 2 fails on node1 (etcd down), so run 1 stays the
    // newest Ready run when the second run triggers the verification.
    env.kill_agent("node0");
    tokio::time::sleep(Duration::from_secs(4)).await; // its Lease (3 s) expires
    env.etcd.stop_member(0);
    let second = env.request_run("s3-only").await;
    env.wait_run_finished(&second, 1, RUN).await;
    let verified_files = env
        .wait_until(
            "both S3 copies of run 1 to be Verified=True",
            RUN,
            async || {
                let files = env.run_files(&first).await;
                files
                    .iter()
                    .all(|f| verified(f).is_some_and(|v| v.0 == "True"))
                    .then_some(files)
            },
        )
        .await;
    let node0_copy = verified_files
        .iter()
        .find(|f| f.spec.node_name == "node0")
        .expect("node0's copy");
    assert_eq!(
        node0_copy
            .annotations()
            .get(consts::ANNOTATION_VERIFY_BY)
            .map(String::as_str),
        Some("node1"),
        "the controller named a live agent for the copy of the node without one"
    );
    assert_eq!(files.len(), 2);
    let text = env.metrics_text("agent node1").await;
    assert_eq!(metric(&text, "etcd_snapshot_verified_total"), 2.0, "{text}");
    env.assert_no_forbidden();
}
