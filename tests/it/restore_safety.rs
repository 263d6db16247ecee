//! Restore that leaves Kubernetes consistent, against real etcd 3.4.23, 3.5.1 and 3.5.30: the
//! README's three-member runbook, run as written (its commands are read from README.md); the
//! revision bump (the revision jumps, watches from before the restore are compacted); and the
//! refusals that come before anything is touched (a snapshot of a newer etcd than the tool, a
//! bump the tool cannot do): the data dir stays byte for byte as it was, one error line.

use crate::etcdctl;
use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion, free_port};
use etcd_snapshot::restore::DEFAULT_BUMP_REVISION;
use etcdctl::{EtcdOnDir, ctl, local_get, put_keys, revision};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: the machine is shared by parallel builds.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers

fn start(version: EtcdVersion, members: usize) -> EtcdCluster {
    EtcdCluster::start(EtcdOptions {
        version,
        members,
        tls: false,
    })
    .expect("start etcd")
}

/// Put `a0..a2`, snapshot member 0 into `<scratch>/snap.db`, then put `b0..b2`. Returns the
/// snapshot's path and revision.
fn snapshot_with_a_not_b(cluster: &EtcdCluster) -> (PathBuf, i64) {
    let version = cluster.options().version;
    let endpoint = cluster.endpoint(0);
    put_keys(version, &endpoint, "a", 3);
    let rev = revision(version, &endpoint);
    let snap = cluster.scratch().join("snap.db");
    let (ok, _, err) = ctl(
        version,
        &endpoint,
        &["snapshot", "save", &snap.display().to_string()],
    );
    assert!(ok, "etcdctl snapshot save: {err}");
    put_keys(version, &endpoint, "b", 3);
    (snap, rev)
}

fn peer_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-snapshot"));
    cmd.env_remove("ETCD_SNAPSHOT_ETCDUTL")
        .env_remove("ETCD_SNAPSHOT_ETCDCTL")
        .env_remove("ETCD_SNAPSHOT_CONFIG");
    cmd
}

/// Every entry under `dir`: its kind, mode, size, mtime and content hash — what "byte for byte
/// untouched" compares.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let content = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                hex::encode(Sha256::digest(std::fs::read(&path).expect("read")))
            };
            out.insert(
                path.strip_prefix(dir).expect("prefix").to_path_buf(),
                format!(
                    "{:o} {} {}.{} {content}",
                    meta.mode(),
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec()
                ),
            );
        }
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The shell block that follows `<!-- runbook:NAME -->` in README.md.
fn runbook_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(eso_testenv::repo_root().join("README.md")).expect("README.md");
    let marker = format!("<!-- runbook:{name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("{marker} is not followed by a ```sh block"));
    let (block, _) = body
        .split_once("\n```")
        .unwrap_or_else(|| panic!("the block after {marker} is not closed"));
    block.to_string()
}

/// Run a runbook block with bash (-eu), with `env` and `path_dir` first on PATH.
fn run_block(block: &str, env: &[(&str, String)], path_dir: &Path) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        path_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-euc", block])
        .env("PATH", path)
        .env_remove("ETCD_SNAPSHOT_ETCDCTL")
        .env_remove("ETCD_SNAPSHOT_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    support::run(&mut cmd)
}

// ---------------------------------------------------------------------------------------------
// The README's runbook, as written

#[test]
fn three_member_etcd_3_5_30_is_restored_as_the_readme_runbook_says() {
    let version = EtcdVersion::V3_5_30;
    let mut cluster = start(version, 3);
    let (snapshot, snap_rev) = snapshot_with_a_not_b(&cluster);
    // Stop etcd on every member; their data dirs stay.
    for i in 0..3 {
        cluster.stop_member(i);
    }
    let logs = tempfile::tempdir().expect("logs");
    // `etcd-snapshot` and `etcdctl` under their plain names, as on a node.
    let bin = tempfile::tempdir().expect("bin");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_etcd-snapshot"),
        bin.path().join("etcd-snapshot"),
    )
    .expect("link etcd-snapshot");
    std::os::unix::fs::symlink(
        version.etcdctl().expect("etcdctl"),
        bin.path().join("etcdctl"),
    )
    .expect("link etcdctl");
    let etcdutl = (
        "ETCD_SNAPSHOT_ETCDUTL",
        version.etcdutl().expect("etcdutl").display().to_string(),
    );

    // Member 1: restore, then start it as usual.
    let names = ["m1", "m2", "m3"];
    let peers = [peer_url(), peer_url(), peer_url()];
    let data_dirs: Vec<PathBuf> = (0..3).map(|i| cluster.data_dir(i).to_path_buf()).collect();
    let (ok, stdout, stderr) = run_block(
        &runbook_block("member-1"),
        &[
            ("SNAPSHOT", snapshot.display().to_string()),
            ("DATA_DIR", data_dirs[0].display().to_string()),
            ("NAME", names[0].to_string()),
            ("PEER_URL", peers[0].clone()),
            etcdutl.clone(),
        ],
        bin.path(),
    );
    assert!(ok, "restore on member 1: {stderr}");
    assert!(
        stdout.contains("Managed etcd cluster membership has been reset"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("bumped by {DEFAULT_BUMP_REVISION}")),
        "{stdout}"
    );
    let mut members = vec![EtcdOnDir::start_member(
        version,
        (names[0], &data_dirs[0], &peers[0]),
        &format!("{}={}", names[0], peers[0]),
        "new",
        &logs.path().join(format!("{}.log", names[0])),
    )];
    let member1 = members[0].endpoint.clone();

    // Members 2 and 3, one at a time: member add on member 1, old data dir moved aside, start
    // with an empty data dir and the printed --initial-cluster.
    for i in 1..3 {
        // etcd refuses `member add` ("unhealthy cluster") until every member has been connected
        // for 5 s; the README says to retry.
        let deadline = Instant::now() + WAIT;
        let (ok, stdout, stderr) = loop {
            let (ok, stdout, stderr) = run_block(
                &runbook_block("member-add"),
                &[
                    ("MEMBER1_CLIENT_URL", member1.clone()),
                    ("NAME", names[i].to_string()),
                    ("PEER_URL", peers[i].clone()),
                ],
                bin.path(),
            );
            if ok || !stderr.contains("unhealthy cluster") || Instant::now() > deadline {
                break (ok, stdout, stderr);
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(ok, "member add {}: {stderr}", names[i]);
        let initial_cluster = stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("member add printed no ETCD_INITIAL_CLUSTER: {stdout}"));
        let (ok, _, stderr) = run_block(
            &runbook_block("member-join"),
            &[("DATA_DIR", data_dirs[i].display().to_string())],
            bin.path(),
        );
        assert!(ok, "moving the data dir of {} aside: {stderr}", names[i]);
        assert!(!data_dirs[i].exists(), "the data dir was moved aside");
        let parent = data_dirs[i].parent().expect("parent");
        let moved = format!(
            "{}-old-",
            data_dirs[i].file_name().expect("name").to_string_lossy()
        );
        assert!(
            self::names(parent).iter().any(|n| n.starts_with(&moved)),
            "the old data dir is kept"
        );
        members.push(EtcdOnDir::start_member(
            version,
            (names[i], &data_dirs[i], &peers[i]),
            &initial_cluster,
            "existing",
            &logs.path().join(format!("{}.log", names[i])),
        ));
    }

    // All three serve the snapshot's data, and its revision bumped.
    for (m, member) in members.iter().enumerate() {
        let deadline = Instant::now() + WAIT;
        while local_get(version, &member.endpoint, "a2").is_none() {
            assert!(Instant::now() < deadline, "member {m} never got the data");
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..3 {
            assert_eq!(
                local_get(version, &member.endpoint, &format!("a{i}")),
                Some(format!("v{i}")),
                "member {m}"
            );
            assert_eq!(
                local_get(version, &member.endpoint, &format!("b{i}")),
                None,
                "member {m}: b{i} was written after the snapshot"
            );
        }
        let rev = revision(version, &member.endpoint);
        assert!(
            rev >= snap_rev + DEFAULT_BUMP_REVISION as i64,
            "member {m}: revision {rev}, snapshot {snap_rev}"
        );
    }
    let (ok, out, err) = ctl(version, &member1, &["member", "list", "-w", "json"]);
    assert!(ok, "member list: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("member list JSON");
    assert_eq!(list["members"].as_array().map_or(0, Vec::len), 3);
    drop(members);
}

// ---------------------------------------------------------------------------------------------
// The bump

#[tokio::test]
async fn a_bumped_restore_raises_the_revision_and_compacts_watches_from_before() {
    let version = EtcdVersion::V3_5_30;
    let mut cluster = start(version, 1);
    let (snapshot, snap_rev) = snapshot_with_a_not_b(&cluster);
    cluster.stop_member(0);
    let data_dir = cluster.scratch().join("restored");
    let peer = peer_url();
    let (ok, stdout, stderr) = support::run(
        cli()
            .env("ETCD_SNAPSHOT_ETCDUTL", version.etcdutl().expect("etcdutl"))
            .arg("restore")
            .arg("--cluster-reset")
            .arg(format!(
                "--cluster-reset-restore-path={}",
                snapshot.display()
            ))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg("--name=r")
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg("--bump-revision=5000"),
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("etcd version    etcd 3.5 data"), "{stdout}");
    assert!(
        stdout.contains("revision        bumped by 5000"),
        "{stdout}"
    );
    let logs = tempfile::tempdir().expect("logs");
    let member = EtcdOnDir::start_member(
        version,
        ("r", &data_dir, &peer),
        &format!("r={peer}"),
        "new",
        &logs.path().join("r.log"),
    );
    assert_eq!(revision(version, &member.endpoint), snap_rev + 5000);
    assert_eq!(
        local_get(version, &member.endpoint, "a0"),
        Some("v0".into())
    );

    // A watcher that had seen the snapshot's revision (or any revision since) is told its
    // revision is compacted, so it relists instead of missing changes.
    let mut client = etcd_client::Client::connect([member.endpoint.as_str()], None)
        .await
        .expect("connect");
    let mut stream = client
        .watch(
            "a0",
            Some(etcd_client::WatchOptions::new().with_start_revision(snap_rev)),
        )
        .await
        .expect("watch");
    let compacted = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(resp)) if resp.compact_revision() > 0 || resp.canceled() => {
                    return format!(
                        "compact revision {}, canceled {}",
                        resp.compact_revision(),
                        resp.canceled()
                    );
                }
                Ok(Some(_)) => continue,
                Ok(None) => return "stream ended".into(),
                Err(e) => return e.to_string(),
            }
        }
    })
    .await
    .expect("the old watch ends within the timeout");
    assert_eq!(
        compacted,
        format!("compact revision {}, canceled true", snap_rev + 5000)
    );

    // A watch from the new revision gets the next change.
    let mut stream = client
        .watch(
            "a0",
            Some(etcd_client::WatchOptions::new().with_start_revision(snap_rev + 5001)),
        )
        .await
        .expect("watch");
    client.put("a0", "after", None).await.expect("put");
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(resp)) if !resp.events().is_empty() => return resp,
                Ok(Some(_)) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the new watch sees the put");
    let kv = event.events()[0].kv().expect("kv");
    assert_eq!(kv.mod_revision(), snap_rev + 5001);
}

// ---------------------------------------------------------------------------------------------
// Refusals before anything is touched

/// Run `etcd-snapshot restore` of `snapshot` into `data_dir` with `tools` and `extra` flags; it
/// must fail with one error line, leaving `data_dir` (and its parent's entries) exactly as they
/// were. Returns the line.
fn refused(snapshot: &Path, data_dir: &Path, tools: &[(&str, PathBuf)], extra: &[&str]) -> String {
    let parent = data_dir.parent().expect("parent");
    let (before, beside) = (tree(data_dir), names(parent));
    let mut cmd = cli();
    cmd.env("PATH", "/nonexistent");
    for (var, path) in tools {
        cmd.env(var, path);
    }
    let (ok, stdout, stderr) = support::run(
        cmd.arg("restore")
            .arg("--cluster-reset")
            .arg(format!(
                "--cluster-reset-restore-path={}",
                snapshot.display()
            ))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg("--name=m0")
            .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380")
            .args(extra),
    );
    assert!(!ok, "restore must be refused: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].ends_with("nothing was changed"),
        "the line says nothing was touched: {stderr}"
    );
    assert_eq!(
        tree(data_dir),
        before,
        "the data dir is byte for byte as it was"
    );
    assert_eq!(names(parent), beside, "nothing left beside the data dir");
    lines[0].to_string()
}

/// A stopped member's real data dir, alone in a directory of its own.
fn stopped_data_dir(cluster: &mut EtcdCluster, under: &Path) -> PathBuf {
    cluster.stop_member(0);
    let data_dir = under.join("etcd");
    std::fs::create_dir_all(under).expect("mkdir");
    let (ok, _, err) = support::run(
        Command::new("cp")
            .arg("-a")
            .arg(cluster.data_dir(0))
            .arg(&data_dir),
    );
    assert!(ok, "cp: {err}");
    data_dir
}

#[test]
fn a_snapshot_of_a_newer_etcd_than_the_tool_is_refused_before_anything_is_touched() {
    let mut newer = start(EtcdVersion::V3_5_30, 1);
    let (snapshot, _) = snapshot_with_a_not_b(&newer);
    let node = tempfile::tempdir().expect("node");
    let data_dir = stopped_data_dir(&mut newer, node.path());
    let ctl_34 = EtcdVersion::V3_4.etcdctl().expect("etcdctl 3.4");

    // etcd 3.5 data, and only etcd 3.4's etcdctl: refused even without the bump.
    let line = refused(
        &snapshot,
        &data_dir,
        &[("ETCD_SNAPSHOT_ETCDCTL", ctl_34.clone())],
        &["--no-bump-revision"],
    );
    assert!(line.contains("holds etcd 3.5 data"), "{line}");
    assert!(
        line.contains("term and confState"),
        "the evidence is named: {line}"
    );
    assert!(
        line.contains(&format!(
            "etcdctl 3.4.23 ({}) is older than etcd 3.5",
            ctl_34.display()
        )),
        "{line}"
    );

    // verify applies the same rule.
    let (ok, _, stderr) = support::run(
        cli()
            .env("PATH", "/nonexistent")
            .env("ETCD_SNAPSHOT_ETCDCTL", &ctl_34)
            .arg("verify")
            .arg(&snapshot),
    );
    assert!(!ok);
    assert!(stderr.contains("holds etcd 3.5 data"), "{stderr}");

    // A reset of the data dir's own 3.5 data with etcd 3.4's etcdctl: refused the same way.
    let (before, ok_and_err) = (
        tree(&data_dir),
        support::run(
            cli()
                .env("PATH", "/nonexistent")
                .env("ETCD_SNAPSHOT_ETCDCTL", &ctl_34)
                .arg("restore")
                .arg("--cluster-reset")
                .arg("--no-bump-revision")
                .arg(format!("--data-dir={}", data_dir.display())),
        ),
    );
    assert!(!ok_and_err.0);
    assert!(
        ok_and_err.2.contains("holds etcd 3.5 data"),
        "{}",
        ok_and_err.2
    );
    assert_eq!(tree(&data_dir), before);
}

#[test]
fn a_bump_with_a_tool_that_cannot_is_refused_before_anything_is_touched() {
    // etcdutl 3.5.1 (before the backport) and etcd 3.4's etcdctl have no --bump-revision.
    for (version, var, tool) in [
        (
            EtcdVersion::V3_5,
            "ETCD_SNAPSHOT_ETCDUTL",
            EtcdVersion::V3_5.etcdutl(),
        ),
        (
            EtcdVersion::V3_4,
            "ETCD_SNAPSHOT_ETCDCTL",
            EtcdVersion::V3_4.etcdctl(),
        ),
    ] {
        let tool = tool.expect("tool");
        let mut cluster = start(version, 1);
        let (snapshot, _) = snapshot_with_a_not_b(&cluster);
        let node = tempfile::tempdir().expect("node");
        let data_dir = stopped_data_dir(&mut cluster, node.path());
        let line = refused(&snapshot, &data_dir, &[(var, tool.clone())], &[]);
        assert!(
            line.contains(&format!(
                "cannot bump the revision: {} {} ({}) has no --bump-revision/--mark-compacted",
                if var.ends_with("ETCDUTL") {
                    "etcdutl"
                } else {
                    "etcdctl"
                },
                version.release(),
                tool.display()
            )),
            "{version:?}: {line}"
        );
        assert!(line.contains("--no-bump-revision"), "{line}");

        // Turned off explicitly, the same tool restores.
        let (ok, stdout, stderr) = support::run(
            cli()
                .env("PATH", "/nonexistent")
                .env(var, &tool)
                .arg("restore")
                .arg("--cluster-reset")
                .arg("--no-bump-revision")
                .arg(format!(
                    "--cluster-reset-restore-path={}",
                    snapshot.display()
                ))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg("--name=m0")
                .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380"),
        );
        assert!(ok, "{version:?}: {stderr}");
        assert!(stdout.contains("NOT bumped"), "{stdout}");
    }
}
