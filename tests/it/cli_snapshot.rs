//! The k3s-compatible CLI against the real etcd (3.4 and 3.5, plain and TLS) and SeaweedFS:
//! save (local, S3, S3-only, compressed), ls, delete, prune, config file, and bad input.

use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion, S3Options, S3Server};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::{cli, etcd_flags, run, s3_flags, s3_object};

fn start_etcd(version: EtcdVersion, tls: bool) -> EtcdCluster {
    EtcdCluster::start(EtcdOptions {
        version,
        members: 1,
        tls,
    })
    .expect("start etcd")
}

fn saved_name(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("Snapshot ")
                .and_then(|r| r.strip_suffix(" saved."))
        })
        .expect("a 'Snapshot NAME saved.' line")
        .to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_stores_local_and_s3_copies_on_every_etcd_variant() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "snaps").await;
    for version in EtcdVersion::ALL {
        for tls in [false, true] {
            let etcd = start_etcd(version, tls);
            support::put_keys(&etcd, "/reg/key", 20);
            for compress in [false, true] {
                let dir = tempfile::tempdir().expect("tempdir");
                let snapdir = dir.path().join("snapshots");
                let folder = format!("f-{version:?}-{tls}-{compress}").to_lowercase();
                let mut cmd = cli();
                cmd.arg("save")
                    .arg("--node-name=node-a")
                    .arg(format!("--dir={}", snapdir.display()))
                    .args(etcd_flags(&etcd))
                    .args(s3_flags(&s3, "snaps", &folder));
                if compress {
                    cmd.arg("--snapshot-compress");
                }
                let (ok, out, err) = run(&mut cmd);
                assert!(ok, "{version:?} tls={tls} compress={compress}: {err}");
                assert_eq!(
                    out.matches(" saved.").count(),
                    2,
                    "one line per copy: {out}"
                );
                let name = saved_name(&out);
                assert!(name.starts_with("on-demand-node-a-"), "{name}");
                assert_eq!(name.ends_with(".zst"), compress, "{name}");

                // Local copy: private file, recorded checksum, a valid etcd snapshot inside.
                let file = snapdir.join(&name);
                let mode = std::fs::metadata(&file)
                    .expect("local copy")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
                let dmode = std::fs::metadata(&snapdir)
                    .expect("dir")
                    .permissions()
                    .mode();
                assert_eq!(dmode & 0o777, 0o700);
                let stored = std::fs::read(&file).expect("read");
                let recorded = std::fs::read_to_string(snapdir.join(".checksums").join(&name))
                    .expect("checksum file");
                assert!(recorded.starts_with(&sha256_hex(&stored)), "{recorded}");
                let plain = dir.path().join("plain.db");
                std::fs::write(&plain, support::plain_bytes(&file)).expect("write plain");
                let (_, keys) = support::snapshot_status(&plain);
                assert!(keys >= 20, "{keys} keys");

                // S3 copy: the same bytes, metadata with sha256, cluster ID, node, compression.
                let (body, meta) = s3_object(&s3, "snaps", &format!("{folder}/{name}")).await;
                assert_eq!(body, stored, "S3 and local copies are the same bytes");
                assert_eq!(meta.get("etcd-snapshot-sha256"), Some(&sha256_hex(&body)));
                assert_eq!(
                    meta.get("etcd-snapshot-node-name").map(String::as_str),
                    Some("node-a")
                );
                assert_eq!(
                    meta.get("etcd-snapshot-compression").map(String::as_str),
                    Some(if compress { "zstd" } else { "none" })
                );
                assert_eq!(
                    meta.get("etcd-snapshot-cluster-id").map(String::len),
                    Some(16)
                );
                assert!(meta.contains_key("etcd-snapshot-revision"));
                // The etcd release that served it: restore's version rule reads it.
                assert_eq!(
                    meta.get("etcd-snapshot-etcd-version").map(String::as_str),
                    Some(version.release())
                );
                // Nothing temporary left behind.
                let leftovers: Vec<_> = std::fs::read_dir(&snapdir)
                    .expect("list")
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
                    .collect();
                assert!(leftovers.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn s3_only_writes_no_local_file() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "only").await;
    let etcd = start_etcd(EtcdVersion::V3_5, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = run(cli()
        .args(["save", "--node-name=n1", "--s3-only", "--snapshot-compress"])
        .arg(format!("--dir={}", dir.path().join("snaps").display()))
        .args(etcd_flags(&etcd))
        .args(s3_flags(&s3, "only", "")));
    assert!(ok, "{err}");
    assert_eq!(out.matches(" saved.").count(), 1, "{out}");
    let name = saved_name(&out);
    assert!(!dir.path().join("snaps").join(&name).exists());
    let (body, _) = s3_object(&s3, "only", &name).await;
    let plain = dir.path().join("plain.db");
    std::fs::write(&plain, zstd::decode_all(&body[..]).expect("zstd")).expect("write");
    support::snapshot_status(&plain);
}

#[tokio::test]
async fn ls_delete_and_json_output_cover_both_copies() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "list").await;
    let etcd = start_etcd(EtcdVersion::V3_5, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_flag = format!("--dir={}", dir.path().display());
    let s3f = s3_flags(&s3, "list", "cluster-a");
    let (ok, out, err) = run(cli()
        .args(["save", "--node-name=n1"])
        .arg(&dir_flag)
        .args(etcd_flags(&etcd))
        .args(&s3f));
    assert!(ok, "{err}");
    let name = saved_name(&out);

    let (ok, table, err) = run(cli()
        .args(["ls", "--node-name=n1"])
        .arg(&dir_flag)
        .args(&s3f));
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Name", "Location", "Size", "Created"]
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains(&name) && lines[2].contains(&name));
    assert!(table.contains(&format!("file://{}/{name}", dir.path().display())));
    assert!(table.contains(&format!("s3://list/cluster-a/{name}")));

    let (ok, json, err) = run(cli()
        .args(["list", "-o", "json", "--node-name=n1"])
        .arg(&dir_flag)
        .args(&s3f));
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["kind"], "ETCDSnapshotFileList");
    let items = doc["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["spec"]["snapshotName"], name.as_str());
        assert_eq!(item["status"]["readyToUse"], true);
        assert_eq!(item["status"]["sha256"].as_str().map(str::len), Some(64));
    }
    let (ok, yaml, _) = run(cli()
        .args(["l", "-o", "yaml", "--node-name=n1"])
        .arg(&dir_flag));
    assert!(ok && yaml.contains("kind: ETCDSnapshotFileList"), "{yaml}");

    let (ok, out, _) = run(cli()
        .args(["delete", &name, "on-demand-n1-1"])
        .arg(&dir_flag)
        .args(&s3f));
    assert!(!ok, "a missing name gives a failure exit");
    assert!(out.contains(&format!("Snapshot {name} deleted.")), "{out}");
    assert!(out.contains("Snapshot on-demand-n1-1 not found."), "{out}");
    let (ok, table, _) = run(cli()
        .args(["ls", "--node-name=n1"])
        .arg(&dir_flag)
        .args(&s3f));
    assert!(ok);
    assert_eq!(table.lines().count(), 1, "only the header left: {table}");
}

/// Copy one real snapshot under several names (local) and upload it with chosen metadata (S3).
async fn seed(dir: &Path, s3: &S3Server, bucket: &str, source: &Path, cluster_id: &str) {
    let data = std::fs::read(source).expect("read source snapshot");
    let client = support::s3_client(s3);
    for (node, t) in [
        ("n1", 1000),
        ("n1", 2000),
        ("n1", 3000),
        ("n2", 1500),
        ("n2", 2500),
    ] {
        let name = format!("etcd-snapshot-{node}-{t}");
        if node == "n1" {
            std::fs::write(dir.join(&name), &data).expect("write");
        }
        client
            .put_object()
            .bucket(bucket)
            .key(format!("f/{name}"))
            .metadata("etcd-snapshot-cluster-id", cluster_id)
            .metadata("etcd-snapshot-node-name", node)
            .body(data.clone().into())
            .send()
            .await
            .expect("put");
    }
    client
        .put_object()
        .bucket(bucket)
        .key("f/etcd-snapshot-n1-500")
        .metadata("etcd-snapshot-cluster-id", "00000000000000ff")
        .metadata("etcd-snapshot-node-name", "n1")
        .body(data.into())
        .send()
        .await
        .expect("put other cluster");
}

#[tokio::test]
async fn prune_keeps_n_per_node_and_never_touches_other_clusters() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "prune").await;
    let etcd = start_etcd(EtcdVersion::V3_5, false);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = run(cli()
        .args(["save", "--node-name=n0"])
        .arg(format!("--dir={}", tmp.path().join("src").display()))
        .args(etcd_flags(&etcd)));
    assert!(ok, "{err}");
    let source = tmp.path().join("src").join(saved_name(&out));
    let mut conn = etcd_snapshot::snapshot::EtcdConfig::new(etcd.endpoints())
        .connect()
        .await
        .expect("connect");
    let cluster_id = conn.member_info().await.expect("info").cluster_id;
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).expect("mkdir");
    seed(&dir, &s3, "prune", &source, &cluster_id).await;
    let dir_flag = format!("--dir={}", dir.display());
    let s3f = s3_flags(&s3, "prune", "f");
    let prune = |extra: &[&str]| {
        let mut cmd = cli();
        cmd.args([
            "prune",
            "--name=etcd-snapshot",
            "--snapshot-retention=1",
            "--node-name=n1",
        ])
        .arg(&dir_flag)
        .args(&s3f)
        .args(etcd_flags(&etcd))
        .args(extra);
        run(&mut cmd)
    };

    let (ok, plan, err) = prune(&["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        plan.contains("keep   etcd-snapshot-n1-3000 (local): newest"),
        "{plan}"
    );
    assert!(
        plan.contains("delete etcd-snapshot-n1-1000 (local): beyond the newest 1"),
        "{plan}"
    );
    assert!(plan.contains("keep   etcd-snapshot-n2-2500 (s3)"), "{plan}");
    assert!(plan.contains("delete etcd-snapshot-n2-1500 (s3)"), "{plan}");
    assert!(plan.contains("skip   etcd-snapshot-n1-500 (s3)"), "{plan}");
    assert_eq!(
        std::fs::read_dir(&dir).expect("ls").count(),
        3,
        "dry run deletes nothing"
    );

    let (ok, _, err) = prune(&[]);
    assert!(ok, "{err}");
    let (_, table, _) = run(cli()
        .args(["ls", "--node-name=n1"])
        .arg(&dir_flag)
        .args(&s3f));
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "etcd-snapshot-n1-500",
            "etcd-snapshot-n2-2500",
            "etcd-snapshot-n1-3000",
            "etcd-snapshot-n1-3000"
        ],
        "{table}"
    );

    // --retention-scope cluster keeps 1 in total for this cluster.
    let (ok, _, err) = prune(&["--retention-scope=cluster"]);
    assert!(ok, "{err}");
    let (_, table, _) = run(cli()
        .args(["ls", "--node-name=n1"])
        .arg(&dir_flag)
        .args(&s3f));
    assert!(!table.contains("etcd-snapshot-n2-2500"), "{table}");
    assert!(
        table.contains("etcd-snapshot-n1-500"),
        "other cluster untouched: {table}"
    );
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One config file (k3s's server config: `etcd-s3-*`, `etcd-snapshot-*` and keys of the k3s
/// server that no subcommand takes) and one alias (flags before the subcommand) serve every
/// subcommand, as in k3s: each takes what it uses and ignores the rest; the skipped keys are
/// named in one warning line.
#[tokio::test]
async fn one_config_file_and_one_alias_serve_every_subcommand_as_in_k3s() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "conf").await;
    let etcd = start_etcd(EtcdVersion::V3_4, false);
    let tmp = tempfile::tempdir().expect("tempdir");
    let snaps = tmp.path().join("snaps");
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "# k3s server keys\ntoken: server-token-x\ntls-san: [a.example.com]\ncluster-init: true\n\
             etcd-snapshot-schedule-cron: \"0 */5 * * *\"\ndata-dir: /nonexistent/k3s\n\
             # ours, under k3s's names\netcd-snapshot-dir: {}\netcd-snapshot-compress: true\n\
             etcd-snapshot-retention: 1\netcd-s3: true\netcd-s3-endpoint: {}\netcd-s3-insecure: true\n\
             etcd-s3-bucket: conf\netcd-s3-bucket-lookup-type: path\netcd-s3-folder: k3s\n\
             etcd-s3-timeout: 2m\netcd-endpoint: [{}]\nnode-name: cfg-node\n",
            snaps.display(),
            s3.host_port(),
            etcd.endpoint(0)
        ),
    )
    .expect("write config");
    let with_config = |args: &[&str]| {
        run(cli()
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key))
    };
    let skipped = "skipped keys that no subcommand takes: token, tls-san, cluster-init, \
                   etcd-snapshot-schedule-cron";

    let (ok, out, err) = with_config(&["save"]);
    assert!(ok, "{err}");
    let first = saved_name(&out);
    assert!(
        first.starts_with("on-demand-cfg-node-") && first.ends_with(".zst"),
        "{first}"
    );
    assert_eq!(out.matches(" saved.").count(), 2, "{out}");
    assert_eq!(err.lines().count(), 1, "one warning line: {err}");
    assert!(
        err.starts_with("warning: config file ") && err.trim_end().ends_with(skipped),
        "{err}"
    );
    assert!(
        snaps.join(&first).exists(),
        "--etcd-snapshot-dir wins over data-dir"
    );
    // A second snapshot, one second later (names carry the second).
    let t = unix_now();
    while unix_now() == t {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, out, err) = with_config(&["save"]);
    assert!(ok, "{err}");
    let second = saved_name(&out);
    assert_ne!(first, second);

    let (ok, out, err) = with_config(&["ls"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 5, "header and four copies: {out}");
    // etcd-snapshot-retention: 1 is prune's; the S3 copies count as many.
    let (ok, out, err) = with_config(&["prune", "--name=on-demand"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.matches(&format!("Snapshot {first} pruned")).count(),
        2,
        "{out}"
    );
    let (ok, out, err) = with_config(&["delete", &second]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Snapshot {second} deleted.")),
        "{out}"
    );
    // verify takes the same file: the snapshot is gone, so it says so (not a flag error).
    let (ok, _, err) = with_config(&["verify", &second]);
    assert!(!ok && err.contains("not found"), "{err}");
    // restore takes its S3 and directory settings from it, and ignores the rest.
    let (ok, _, err) = with_config(&["restore", "--snapshot", &second]);
    assert!(!ok && err.contains("--cluster-reset"), "{err}");

    // The alias form: the same flags before any subcommand, k3s's flags included.
    let mut alias: Vec<String> = vec![
        format!("--dir={}", snaps.display()),
        "--node-name=alias-node".into(),
        "--snapshot-compress".into(),
        "--snapshot-retention=3".into(),
        "--etcd-server=https://127.0.0.1:6443".into(),
        "--etcd-token=server-token-x".into(),
        "--etcd-s3-config-secret=k3s-etcd-snapshot-s3-config".into(),
        "--etcd-s3-retention=2".into(),
    ];
    alias.extend(etcd_flags(&etcd));
    alias.extend(s3_flags(&s3, "conf", "alias"));
    let es = |sub: &[&str]| run(cli().args(&alias).args(sub));
    let (ok, out, err) = es(&["save"]);
    assert!(ok, "{err}");
    let third = saved_name(&out);
    assert!(third.starts_with("on-demand-alias-node-") && third.ends_with(".zst"));
    assert!(err.is_empty(), "{err}");
    for sub in [&["ls"][..], &["l", "-o", "json"], &["prune", "--dry-run"]] {
        let (ok, out, err) = es(sub);
        assert!(ok, "{sub:?}: {err}");
        assert!(out.contains(&third), "{sub:?}: {out}");
    }
    let (ok, out, err) = es(&["delete", &third]);
    assert!(ok, "{err}");
    assert!(out.contains("deleted."), "{out}");

    // --data-dir as k3s: without --dir, snapshots live in <data-dir>/server/db/snapshots.
    let k3s = tmp.path().join("k3s");
    let (ok, out, err) = run(cli()
        .args(["save", "--node-name=dd"])
        .arg(format!("--data-dir={}", k3s.display()))
        .args(etcd_flags(&etcd)));
    assert!(ok, "{err}");
    assert!(
        k3s.join("server/db/snapshots")
            .join(saved_name(&out))
            .exists(),
        "{out}"
    );
}

fn assert_one_line_error(ok: bool, err: &str, needle: &str) {
    assert!(!ok, "should fail");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error:"), "{err}");
    assert!(last.contains(needle), "expected {needle:?} in {err}");
}

#[tokio::test]
async fn bad_input_gets_one_clear_line() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "exists").await;
    let etcd = start_etcd(EtcdVersion::V3_5, true);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir_flag = format!("--dir={}", tmp.path().display());
    let save = |extra: &[String]| {
        let mut cmd = cli();
        cmd.args(["save", "--node-name=n"])
            .arg(&dir_flag)
            .args(extra);
        run(&mut cmd)
    };
    let tls = etcd.tls().expect("tls");

    let (ok, _, err) = save(&["--etcd-endpoint=127.0.0.1:2379".into()]);
    assert_one_line_error(ok, &err, "must start with http:// or https://");

    let mut flags = etcd_flags(&etcd);
    flags[1] = "--etcd-cacert=/nonexistent/ca.crt".into();
    let (ok, _, err) = save(&flags);
    assert_one_line_error(ok, &err, "cannot read etcd CA /nonexistent/ca.crt");

    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    flags[1] = format!("--etcd-cacert={}", garbage.display());
    let (ok, _, err) = save(&flags);
    assert_one_line_error(ok, &err, "is not a PEM file");

    let closed = eso_testenv::free_port();
    let (ok, _, err) = save(&[format!("--etcd-endpoint=http://127.0.0.1:{closed}")]);
    assert_one_line_error(ok, &err, "cannot reach etcd");

    let mut flags = etcd_flags(&etcd);
    flags.extend(s3_flags(&s3, "missing-bucket", ""));
    let (ok, _, err) = save(&flags);
    assert_one_line_error(ok, &err, "missing-bucket");

    let mut flags = etcd_flags(&etcd);
    let mut s3f = s3_flags(&s3, "exists", "");
    s3f[7] = "--s3-secret-key=wrong-secret-value".into();
    flags.extend(s3f);
    let (ok, _, err) = save(&flags);
    assert_one_line_error(ok, &err, "credentials");
    assert!(
        !err.contains("wrong-secret-value"),
        "the secret leaked: {err}"
    );

    let mut flags = etcd_flags(&etcd);
    flags.push("--name=../../etc/evil".into());
    let (ok, _, err) = save(&flags);
    assert_one_line_error(ok, &err, "must not contain");

    let (ok, _, err) = run(cli().args(["delete", "../x"]).arg(&dir_flag));
    assert_one_line_error(ok, &err, "must not contain");

    let (ok, _, err) = run(cli()
        .args(["prune", "--snapshot-retention=0"])
        .arg(&dir_flag));
    assert!(!ok && err.contains("0"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let (ok, _, err) = run(cli().args(["prune", "--max-age=soon"]).arg(&dir_flag));
    assert_one_line_error(ok, &err, "soon");

    let _ = tls;
}
