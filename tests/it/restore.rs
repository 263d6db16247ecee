//! Restore, cluster reset and verify against the real etcd 3.4.23, 3.5.1 and 3.5.30: snapshots
//! saved with `etcdctl snapshot save`, stored plain, zstd-compressed and as k3s zips, restored
//! into fresh data dirs and started with a real etcd. No mocks. (The runbook, the revision bump
//! and the version refusals: `restore_safety.rs`.)

use crate::etcdctl;
use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion, S3Options, S3Server, free_port};
use etcd_snapshot::restore::{
    self, DEFAULT_BUMP_REVISION, RestoreError, Source, Target, ToolKind, Toolbox, Tools,
    cluster_reset, restore_into,
};
use etcd_snapshot::storage::local::LocalDir;
use etcdctl::{EtcdOnDir, ctl, get, put_keys, revision};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

fn tools(version: EtcdVersion) -> Tools {
    let tools = Tools::find(
        version.etcdutl().ok(),
        Some(version.etcdctl().expect("etcdctl")),
    )
    .expect("etcd tools");
    let want = match version {
        EtcdVersion::V3_4 => ToolKind::Etcdctl,
        EtcdVersion::V3_5 | EtcdVersion::V3_5_30 => ToolKind::Etcdutl,
    };
    assert_eq!(tools.kind(), want);
    tools
}

fn toolbox(version: EtcdVersion) -> Toolbox {
    Toolbox::from(tools(version))
}

/// The default revision bump when the version's tool can do it (3.5.30), else none.
fn bump(version: EtcdVersion) -> Option<u64> {
    version.can_bump().then_some(DEFAULT_BUMP_REVISION)
}

/// `etcdctl snapshot save` of member `i`, with the cluster's own etcdctl version.
fn save(cluster: &EtcdCluster, i: usize, dest: &Path) {
    let version = cluster.options().version;
    let (ok, _, err) = ctl(
        version,
        &cluster.endpoint(i),
        &["snapshot", "save", &dest.display().to_string()],
    );
    assert!(ok, "etcdctl snapshot save: {err}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Zstd,
    Zip,
}

impl Format {
    fn suffix(self) -> &'static str {
        match self {
            Format::Plain => "",
            Format::Zstd => ".zst",
            Format::Zip => ".zip",
        }
    }
}

/// Store the plain snapshot `plain` in `dir` as `<base><suffix>` in `format`, recording its
/// sha256 in `.checksums/` as the operator does. Returns the snapshot name.
fn store(dir: &LocalDir, plain: &Path, base: &str, format: Format) -> String {
    let name = format!("{base}{}", format.suffix());
    dir.ensure().expect("snapshot dir");
    let data = std::fs::read(plain).expect("read plain snapshot");
    let stored = match format {
        Format::Plain => data,
        Format::Zstd => zstd::encode_all(&data[..], 3).expect("zstd"),
        Format::Zip => {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(base, options).expect("zip entry");
            zip.write_all(&data).expect("zip write");
            zip.finish().expect("zip finish").into_inner()
        }
    };
    std::fs::write(dir.path().join(&name), &stored).expect("write stored snapshot");
    dir.write_checksum(&name, &hex::encode(Sha256::digest(&stored)))
        .expect("record checksum");
    name
}

fn peer_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Names of the entries of a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A cluster with keys `a0..a2` in snapshot `<dir>/plain.db`, and `b0..b2` written after it.
fn snapshot_with_a_not_b(
    version: EtcdVersion,
    members: usize,
    member: usize,
) -> (EtcdCluster, PathBuf) {
    let cluster = start(version, members);
    put_keys(version, &cluster.endpoint(0), "a", 3);
    // A linearizable read on the member to snapshot: it has applied every put.
    assert_eq!(
        get(version, &cluster.endpoint(member), "a2"),
        Some("v2".into())
    );
    let plain = cluster.scratch().join("plain.db");
    save(&cluster, member, &plain);
    put_keys(version, &cluster.endpoint(0), "b", 3);
    (cluster, plain)
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_etcd-snapshot"))
}

fn cli_env(cmd: &mut Command, version: EtcdVersion) -> &mut Command {
    cmd.env("ETCD_SNAPSHOT_ETCDCTL", version.etcdctl().expect("etcdctl"));
    match version.etcdutl() {
        Ok(p) => cmd.env("ETCD_SNAPSHOT_ETCDUTL", p),
        Err(_) => cmd.env_remove("ETCD_SNAPSHOT_ETCDUTL"),
    }
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run etcd-snapshot");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Round trips

async fn round_trip(version: EtcdVersion, format: Format) {
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
    let name = store(&dir, &plain, "on-demand-n0-1700000000", format);
    let work = tempfile::tempdir().expect("work dir");
    let prepared = restore::prepare(
        &Source::Local {
            dir: &dir,
            name: name.clone(),
        },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect("fetch and check");
    let checks = prepared.checks().clone();
    assert_eq!(
        checks.recorded.len(),
        1,
        "the recorded checksum was compared"
    );
    assert_eq!(checks.recorded[0].from, format!(".checksums/{name}"));
    assert_eq!(
        checks.snapshot_size,
        std::fs::metadata(&plain).expect("stat").len()
    );
    let data_dir = cluster.scratch().join("restored");
    let peer = peer_url();
    let restored = restore_into(
        &tools(version),
        prepared.path(),
        &data_dir,
        "restored",
        &peer,
        bump(version),
    )
    .expect("restore");
    assert_eq!(restored.old_data_dir, None);
    drop(prepared);
    assert!(listing(work.path()).is_empty(), "work files are removed");

    let etcd = EtcdOnDir::start(version, &data_dir, "restored", &peer);
    for i in 0..3 {
        assert_eq!(etcd.get(&format!("a{i}")), Some(format!("v{i}")));
        assert_eq!(
            etcd.get(&format!("b{i}")),
            None,
            "b{i} was written after the snapshot"
        );
    }
    assert_eq!(etcd.member_count(), 1);
}

#[tokio::test]
async fn plain_snapshot_of_etcd_3_4_round_trips() {
    round_trip(EtcdVersion::V3_4, Format::Plain).await;
}

#[tokio::test]
async fn zstd_snapshot_of_etcd_3_4_round_trips() {
    round_trip(EtcdVersion::V3_4, Format::Zstd).await;
}

#[tokio::test]
async fn k3s_zip_snapshot_of_etcd_3_4_round_trips() {
    round_trip(EtcdVersion::V3_4, Format::Zip).await;
}

#[tokio::test]
async fn plain_snapshot_of_etcd_3_5_round_trips() {
    round_trip(EtcdVersion::V3_5, Format::Plain).await;
}

#[tokio::test]
async fn zstd_snapshot_of_etcd_3_5_round_trips() {
    round_trip(EtcdVersion::V3_5, Format::Zstd).await;
}

#[tokio::test]
async fn k3s_zip_snapshot_of_etcd_3_5_round_trips() {
    round_trip(EtcdVersion::V3_5, Format::Zip).await;
}

#[tokio::test]
async fn snapshot_of_one_member_of_three_restores_to_a_single_member() {
    for version in EtcdVersion::ALL {
        let (cluster, plain) = snapshot_with_a_not_b(version, 3, 1);
        let data_dir = cluster.scratch().join("single");
        let peer = peer_url();
        restore_into(
            &tools(version),
            &plain,
            &data_dir,
            "single",
            &peer,
            bump(version),
        )
        .expect("restore");
        let etcd = EtcdOnDir::start(version, &data_dir, "single", &peer);
        assert_eq!(etcd.get("a2"), Some("v2".into()), "{version:?}");
        assert_eq!(etcd.get("b0"), None, "{version:?}");
        assert_eq!(etcd.member_count(), 1, "{version:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals: nothing touched

fn data_dir_with_marker(parent: &Path) -> PathBuf {
    let data_dir = parent.join("etcd-data");
    std::fs::create_dir_all(data_dir.join("member")).expect("mkdir");
    std::fs::write(data_dir.join("marker"), b"keep me").expect("marker");
    data_dir
}

fn assert_untouched(data_dir: &Path) {
    assert_eq!(listing(data_dir), ["marker", "member"]);
    assert_eq!(
        std::fs::read(data_dir.join("marker")).expect("marker"),
        b"keep me"
    );
    let parent = data_dir.parent().expect("parent");
    assert_eq!(
        listing(parent),
        ["etcd-data"],
        "nothing beside the data dir"
    );
}

#[tokio::test]
async fn a_flipped_byte_is_refused_before_the_data_dir_is_touched() {
    let version = EtcdVersion::V3_5;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let tools = toolbox(version);
    for format in [Format::Plain, Format::Zstd, Format::Zip] {
        let dir = LocalDir::new(&cluster.scratch().join(format!("snaps{}", format.suffix())));
        let name = store(&dir, &plain, "s-n-1", format);
        let path = dir.path().join(&name);
        let mut data = std::fs::read(&path).expect("read");
        let middle = data.len() / 2;
        data[middle] ^= 0x01;
        std::fs::write(&path, &data).expect("corrupt");

        // With the recorded checksum, the stored sha256 catches it.
        let parent = tempfile::tempdir().expect("parent");
        let data_dir = data_dir_with_marker(parent.path());
        let work = tempfile::tempdir().expect("work");
        let source = Source::Local {
            dir: &dir,
            name: name.clone(),
        };
        let err = restore::prepare(&source, None, Target::WorkDir(work.path()))
            .await
            .expect_err("corrupt snapshot refused");
        assert!(
            matches!(err, RestoreError::ChecksumMismatch { .. }),
            "{format:?}: {err}"
        );
        assert!(
            listing(work.path()).is_empty(),
            "{format:?}: no files left behind"
        );
        assert_untouched(&data_dir);
        let err = restore::verify(&tools, &source, None, work.path())
            .await
            .expect_err("verify fails");
        assert!(err.is_corrupt_snapshot(), "{format:?}: {err}");

        // Without it, etcd's trailing hash (or the compression's own check) catches it.
        std::fs::remove_dir_all(dir.path().join(".checksums")).expect("drop checksums");
        let err = restore::prepare(&source, None, Target::WorkDir(work.path()))
            .await
            .expect_err("corrupt snapshot refused");
        assert!(err.is_corrupt_snapshot(), "{format:?}: {err}");
        if format == Format::Plain {
            assert!(
                matches!(err, RestoreError::EtcdHashMismatch { .. }),
                "{err}"
            );
        }
        assert!(
            listing(work.path()).is_empty(),
            "{format:?}: no files left behind"
        );
        let err = restore::verify(&tools, &source, None, work.path())
            .await
            .expect_err("verify fails");
        assert!(err.is_corrupt_snapshot(), "{format:?}: {err}");
        assert!(
            listing(work.path()).is_empty(),
            "{format:?}: verify leaves nothing"
        );

        // The CLI refuses too, and leaves the data dir alone (etcdutl 3.5.1 cannot bump).
        let (ok, _, stderr) = run(cli_env(&mut cli(), version)
            .arg("restore")
            .arg("--cluster-reset")
            .arg("--no-bump-revision")
            .arg(format!("--cluster-reset-restore-path={name}"))
            .arg(format!("--dir={}", dir.path().display()))
            .arg(format!("--data-dir={}", data_dir.display())));
        assert!(!ok, "{format:?}: restore must fail");
        assert!(stderr.contains(&name), "{stderr}");
        assert_untouched(&data_dir);
    }
}

#[tokio::test]
async fn a_recorded_checksum_mismatch_names_both_hashes() {
    let version = EtcdVersion::V3_4;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
    let name = store(&dir, &plain, "s-n-1", Format::Zstd);
    let actual = hex::encode(Sha256::digest(
        std::fs::read(dir.path().join(&name)).expect("read"),
    ));
    let wrong = "0".repeat(64);
    dir.write_checksum(&name, &wrong).expect("wrong checksum");
    let work = tempfile::tempdir().expect("work");
    let err = restore::prepare(
        &Source::Local { dir: &dir, name },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        matches!(err, RestoreError::ChecksumMismatch { .. }),
        "{msg}"
    );
    assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
    assert!(listing(work.path()).is_empty());

    // A caller-given expected hash is checked as well.
    let name = store(&dir, &plain, "s-n-2", Format::Plain);
    let err = restore::prepare(
        &Source::Path(dir.path().join(&name)),
        Some(&"1".repeat(64)),
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("mismatch");
    assert!(err.to_string().contains("expected by the caller"), "{err}");
}

#[tokio::test]
async fn wrong_compression_fails_clearly() {
    let version = EtcdVersion::V3_5;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
    dir.ensure().expect("dir");
    let work = tempfile::tempdir().expect("work");
    let data = std::fs::read(&plain).expect("read");

    // A .zst name holding plain bytes.
    std::fs::write(dir.path().join("plain-n-1.zst"), &data).expect("write");
    let err = restore::prepare(
        &Source::Local {
            dir: &dir,
            name: "plain-n-1.zst".into(),
        },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("plain bytes named .zst");
    let msg = err.to_string();
    assert!(
        msg.ends_with("plain-n-1.zst is named as zstd (.zst) but holds a plain etcd snapshot"),
        "{msg}"
    );

    // A truncated zstd frame.
    let compressed = zstd::encode_all(&data[..], 3).expect("zstd");
    std::fs::write(
        dir.path().join("cut-n-1.zst"),
        &compressed[..compressed.len() / 2],
    )
    .expect("write");
    let err = restore::prepare(
        &Source::Local {
            dir: &dir,
            name: "cut-n-1.zst".into(),
        },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("truncated frame");
    assert!(
        matches!(err, RestoreError::Decompress { format: "zstd", .. }),
        "{err}"
    );

    // zstd bytes without the suffix.
    std::fs::write(dir.path().join("packed-n-1"), &compressed).expect("write");
    let err = restore::prepare(
        &Source::Local {
            dir: &dir,
            name: "packed-n-1".into(),
        },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("zstd without suffix");
    assert!(
        matches!(err, RestoreError::NotCompressedAsNamed { .. }),
        "{err}"
    );
    assert!(listing(work.path()).is_empty(), "no files left behind");
}

#[tokio::test]
async fn path_traversal_names_are_refused() {
    let dir = LocalDir::new(Path::new("/var/lib/etcd-snapshots"));
    for bad in ["a/../../etc/passwd", "..", ".checksums", "x/y"] {
        assert!(
            matches!(Source::resolve(bad, &dir, None), Err(RestoreError::Name(_))),
            "{bad}"
        );
    }
    let work = tempfile::tempdir().expect("work");
    let err = restore::prepare(
        &Source::Local {
            dir: &dir,
            name: "../../etc/passwd".into(),
        },
        None,
        Target::WorkDir(work.path()),
    )
    .await
    .expect_err("traversal");
    assert!(matches!(err, RestoreError::Name(_)), "{err}");
    let (ok, _, stderr) = run(cli_env(&mut cli(), EtcdVersion::V3_5)
        .args(["verify", "a/../../etc/passwd", "--dir"])
        .arg(work.path()));
    assert!(!ok);
    assert!(stderr.contains("must not contain"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The data dir: moved aside, never deleted; running etcd refused

#[tokio::test]
async fn restore_moves_the_old_data_dir_aside_and_never_deletes_it() {
    let version = EtcdVersion::V3_5;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let tools = tools(version);
    let data_dir = data_dir_with_marker(&cluster.scratch().join("node"));
    let peer = peer_url();
    let first = restore_into(&tools, &plain, &data_dir, "n", &peer, None).expect("restore");
    let old1 = first.old_data_dir.expect("old data dir");
    assert_eq!(
        std::fs::read(old1.join("marker")).expect("marker"),
        b"keep me"
    );
    let second = restore_into(&tools, &plain, &data_dir, "n", &peer, None).expect("restore again");
    let old2 = second.old_data_dir.expect("old data dir");
    assert_ne!(
        old1, old2,
        "a second restore in the same second gets its own name"
    );
    assert!(
        old1.join("marker").exists(),
        "the first old dir is still there"
    );
    assert!(old2.join("member").join("snap").join("db").exists());
    let names = listing(data_dir.parent().expect("parent"));
    assert_eq!(
        names.len(),
        3,
        "data dir and two old dirs, nothing else: {names:?}"
    );
    let etcd = EtcdOnDir::start(version, &data_dir, "n", &peer);
    assert_eq!(etcd.get("a0"), Some("v0".into()));
}

#[tokio::test]
async fn a_running_etcd_data_dir_is_refused() {
    let version = EtcdVersion::V3_5;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let tools = tools(version);
    let data_dir = cluster.data_dir(0);
    let err = restore_into(&tools, &plain, data_dir, "m0", &peer_url(), None).expect_err("running");
    assert!(matches!(err, RestoreError::DataDirInUse { .. }), "{err}");
    let err = cluster_reset(&tools, data_dir, "m0", &peer_url(), None).expect_err("running");
    assert!(matches!(err, RestoreError::DataDirInUse { .. }), "{err}");
    assert_eq!(get(version, &cluster.endpoint(0), "b0"), Some("v0".into()));
}

#[tokio::test]
async fn cluster_reset_turns_a_stopped_three_member_cluster_into_one_with_the_data() {
    for version in EtcdVersion::ALL {
        let mut cluster = start(version, 3);
        put_keys(version, &cluster.endpoint(0), "k", 5);
        // Let the backend commit its batch (100 ms) before the members are killed.
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..3 {
            cluster.stop_member(i);
        }
        let data_dir = cluster.data_dir(0).to_path_buf();
        let peer = peer_url();
        let reset =
            cluster_reset(&tools(version), &data_dir, "m0", &peer, bump(version)).expect("reset");
        let old = reset.old_data_dir.expect("old data dir kept");
        assert!(old.join("member").join("wal").exists(), "{version:?}");
        let etcd = EtcdOnDir::start(version, &data_dir, "m0", &peer);
        if let Some(by) = bump(version) {
            // 5 puts on a fresh cluster: revision 6, then the bump.
            assert_eq!(
                revision(version, &etcd.endpoint),
                6 + by as i64,
                "{version:?}"
            );
        }
        for i in 0..5 {
            assert_eq!(
                etcd.get(&format!("k{i}")),
                Some(format!("v{i}")),
                "{version:?}"
            );
        }
        assert_eq!(etcd.member_count(), 1, "{version:?}");
        put_keys(version, &etcd.endpoint, "after", 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Verify

#[tokio::test]
async fn verify_reports_revision_and_key_count() {
    for version in EtcdVersion::ALL {
        let cluster = start(version, 1);
        let endpoint = cluster.endpoint(0);
        put_keys(version, &endpoint, "x", 4);
        let first = cluster.scratch().join("first.db");
        save(&cluster, 0, &first);
        let rev1 = revision(version, &endpoint);
        put_keys(version, &endpoint, "y", 7);
        let second = cluster.scratch().join("second.db");
        save(&cluster, 0, &second);
        let rev2 = revision(version, &endpoint);

        let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
        let n1 = store(&dir, &first, "s-n-1", Format::Zstd);
        let n2 = store(&dir, &second, "s-n-2", Format::Zip);
        let tools = toolbox(version);
        let work = tempfile::tempdir().expect("work");
        let r1 = restore::verify(
            &tools,
            &Source::Local {
                dir: &dir,
                name: n1,
            },
            None,
            work.path(),
        )
        .await
        .expect("verify first");
        let r2 = restore::verify(
            &tools,
            &Source::Local {
                dir: &dir,
                name: n2,
            },
            None,
            work.path(),
        )
        .await
        .expect("verify second");
        assert_eq!(r1.status.revision, rev1, "{version:?}");
        assert_eq!(r2.status.revision, rev2, "{version:?}");
        assert_eq!(
            r2.status.total_key - r1.status.total_key,
            7,
            "{version:?}: one key per put"
        );
        assert!(r1.status.total_key >= 4, "{version:?}");
        assert_eq!(r1.checks.recorded.len(), 1);
        assert!(
            listing(work.path()).is_empty(),
            "verify removes its scratch files"
        );

        // The CLI prints each check and the figures.
        let (ok, stdout, stderr) = run(cli_env(&mut cli(), version)
            .args(["verify", "s-n-2.zip", "--dir"])
            .arg(dir.path()));
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("OK: matches .checksums/s-n-2.zip"),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("revision        {rev2}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("keys            {}", r2.status.total_key)),
            "{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI

#[tokio::test]
async fn cli_restore_prints_the_checks_the_old_dir_and_the_reference_message() {
    let version = EtcdVersion::V3_4;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
    let name = store(&dir, &plain, "on-demand-n0-1700000000", Format::Zstd);
    let data_dir = data_dir_with_marker(&cluster.scratch().join("node"));
    let peer = peer_url();

    let (ok, _, stderr) = run(cli_env(&mut cli(), version)
        .arg("restore")
        .arg(format!("--cluster-reset-restore-path={name}"))
        .arg(format!("--dir={}", dir.path().display()))
        .arg(format!("--data-dir={}", data_dir.display())));
    assert!(!ok);
    assert!(stderr.contains("pass --cluster-reset"), "{stderr}");
    assert_untouched(&data_dir);

    // etcd 3.4's etcdctl cannot bump the revision: it restores with the bump turned off.
    let (ok, stdout, stderr) = run(cli_env(&mut cli(), version)
        .arg("restore")
        .arg("--cluster-reset")
        .arg("--no-bump-revision")
        .arg(format!("--cluster-reset-restore-path={name}"))
        .arg(format!("--dir={}", dir.path().display()))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--name=n0")
        .arg(format!("--initial-advertise-peer-urls={peer}")));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("OK: matches .checksums/{name}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("etcd version    etcd 3.4 data (its meta bucket has neither"),
        "{stdout}"
    );
    assert!(stdout.contains("with etcdctl 3.4.23"), "{stdout}");
    assert!(stdout.contains("revision        NOT bumped"), "{stdout}");
    assert!(stdout.contains("etcd hash       OK"), "{stdout}");
    assert!(
        stdout.contains("The previous data dir was moved to"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now."
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  2. On each other member"), "{stdout}");
    let etcd = EtcdOnDir::start(version, &data_dir, "n0", &peer);
    assert_eq!(etcd.get("a1"), Some("v1".into()));
    assert_eq!(etcd.get("b1"), None);
}

#[tokio::test]
async fn cli_output_writes_only_the_verified_plain_snapshot() {
    let version = EtcdVersion::V3_5;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let dir = LocalDir::new(&cluster.scratch().join("snapshots"));
    let name = store(&dir, &plain, "etcd-snapshot-n0-1700000000", Format::Zip);
    let out = cluster.scratch().join("out").join("restore-me.db");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    let (ok, stdout, stderr) = run(cli()
        .env("PATH", "")
        .env_remove("ETCD_SNAPSHOT_ETCDUTL")
        .env_remove("ETCD_SNAPSHOT_ETCDCTL")
        .arg("restore")
        .arg(format!("--cluster-reset-restore-path={name}"))
        .arg(format!("--dir={}", dir.path().display()))
        .arg(format!("--output={}", out.display())));
    assert!(ok, "--output needs no etcd tool: {stderr}");
    assert_eq!(stdout.trim(), out.display().to_string());
    assert!(stderr.contains("etcd hash       OK"), "{stderr}");
    assert_eq!(
        std::fs::read(&out).expect("output"),
        std::fs::read(&plain).expect("plain")
    );
    assert_eq!(listing(out.parent().expect("parent")), ["restore-me.db"]);
    // An existing output file is never overwritten.
    let (ok, _, stderr) = run(cli()
        .arg("restore")
        .arg(format!("--cluster-reset-restore-path={name}"))
        .arg(format!("--dir={}", dir.path().display()))
        .arg(format!("--output={}", out.display())));
    assert!(!ok);
    assert!(stderr.contains("exists"), "{stderr}");
}

#[tokio::test]
async fn missing_etcd_tools_are_named() {
    let work = tempfile::tempdir().expect("work");
    let (ok, _, stderr) = run(cli()
        .env("PATH", "")
        .env("ETCD_SNAPSHOT_ETCDUTL", "/nonexistent/etcdutl")
        .env("ETCD_SNAPSHOT_ETCDCTL", "/nonexistent/etcdctl")
        .args(["verify", "s-n-1", "--dir"])
        .arg(work.path()));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/etcdutl") && stderr.contains("/nonexistent/etcdctl"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// S3

fn s3_client(s3: &S3Server) -> aws_sdk_s3::Client {
    support::s3_client(s3)
}

/// Upload `data` as `folder/name` with the sha256 `recorded` in its metadata (and the etcd
/// version, when given).
async fn put_object(
    client: &aws_sdk_s3::Client,
    name: &str,
    data: Vec<u8>,
    recorded: &str,
    etcd_version: Option<&str>,
) {
    let mut put = client
        .put_object()
        .bucket("snaps")
        .key(format!("cluster-a/{name}"))
        .metadata("etcd-snapshot-sha256", recorded);
    if let Some(v) = etcd_version {
        put = put.metadata("etcd-snapshot-etcd-version", v);
    }
    put.body(data.into()).send().await.expect("put object");
}

fn s3_flags(s3: &S3Server) -> Vec<String> {
    vec![
        "--s3".into(),
        format!("--s3-endpoint={}", s3.host_port()),
        "--s3-insecure".into(),
        "--s3-bucket-lookup-type=path".into(),
        "--s3-bucket=snaps".into(),
        "--s3-folder=cluster-a".into(),
        format!("--s3-access-key={}", s3.access_key),
        format!("--s3-secret-key={}", s3.secret_key),
    ]
}

#[tokio::test]
async fn s3_snapshots_are_downloaded_checked_and_restored() {
    let version = EtcdVersion::V3_5_30;
    let (cluster, plain) = snapshot_with_a_not_b(version, 1, 0);
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    let client = s3_client(&s3);
    client
        .create_bucket()
        .bucket("snaps")
        .send()
        .await
        .expect("create bucket");
    let data = std::fs::read(&plain).expect("read");
    let zst = zstd::encode_all(&data[..], 3).expect("zstd");
    let sha = |d: &[u8]| hex::encode(Sha256::digest(d));
    put_object(
        &client,
        "s-n-1.zst",
        zst.clone(),
        &sha(&zst),
        Some("3.5.30"),
    )
    .await;
    put_object(&client, "s-n-2", data.clone(), &sha(&data), None).await;
    put_object(&client, "bad-n-3.zst", zst.clone(), &"0".repeat(64), None).await;
    // Recorded as taken by etcd 3.6: newer than etcdutl 3.5.30, whatever the data says.
    put_object(
        &client,
        "new-n-5.zst",
        zst.clone(),
        &sha(&zst),
        Some("3.6.1"),
    )
    .await;

    // Restore from S3 with the CLI.
    let data_dir = data_dir_with_marker(&cluster.scratch().join("node"));
    let peer = peer_url();
    let (ok, stdout, stderr) = run(cli_env(&mut cli(), version)
        .args([
            "restore",
            "--cluster-reset",
            "--cluster-reset-restore-path=s-n-1.zst",
        ])
        .args(s3_flags(&s3))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--name=n0")
        .arg(format!("--initial-advertise-peer-urls={peer}")));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("OK: matches S3 object metadata"),
        "{stdout}"
    );
    assert!(
        stdout.contains("s3://snaps/cluster-a/s-n-1.zst"),
        "{stdout}"
    );
    assert!(!stdout.contains(&s3.secret_key) && !stderr.contains(&s3.secret_key));
    assert!(stdout.contains("revision        bumped by"), "{stdout}");
    let etcd = EtcdOnDir::start(version, &data_dir, "n0", &peer);
    assert_eq!(etcd.get("a0"), Some("v0".into()));
    assert_eq!(etcd.get("b0"), None);
    drop(etcd);

    // The etcd version recorded in the S3 metadata counts: refused before the data dir moves.
    let before = listing(data_dir.parent().expect("parent"));
    let (ok, _, stderr) = run(cli_env(&mut cli(), version)
        .args([
            "restore",
            "--cluster-reset",
            "--cluster-reset-restore-path=new-n-5.zst",
        ])
        .args(s3_flags(&s3))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--name=n0")
        .arg(format!("--initial-advertise-peer-urls={peer}")));
    assert!(!ok);
    assert!(
        stderr.contains("holds etcd 3.6 data (etcd 3.6.1 recorded in the S3 object metadata)")
            && stderr.contains("etcdutl 3.5.30"),
        "{stderr}"
    );
    assert_eq!(listing(data_dir.parent().expect("parent")), before);

    // --output of an uncompressed object: the download itself becomes the file.
    let out_dir = cluster.scratch().join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = out_dir.join("plain.db");
    let (ok, stdout, stderr) = run(cli()
        .args(["restore", "--cluster-reset-restore-path=s-n-2"])
        .args(s3_flags(&s3))
        .arg(format!("--output={}", out.display())));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), out.display().to_string());
    assert_eq!(std::fs::read(&out).expect("output"), data);
    assert_eq!(listing(&out_dir), ["plain.db"]);

    // A recorded hash that does not match, and a missing object.
    let (ok, _, stderr) = run(cli_env(&mut cli(), version)
        .args(["verify", "bad-n-3.zst"])
        .args(s3_flags(&s3)));
    assert!(!ok);
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("S3 object metadata"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(cli_env(&mut cli(), version)
        .args(["verify", "missing-n-4.zst"])
        .args(s3_flags(&s3)));
    assert!(!ok);
    assert!(
        stderr.contains("not found in s3://snaps/cluster-a"),
        "{stderr}"
    );
}
