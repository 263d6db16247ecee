//! Encryption at rest against the real etcd 3.5 and SeaweedFS: `save --encryption-key-file`
//! stores local and S3 copies that do not reveal what etcd holds, `ls` lists them, `verify` and
//! `restore` decrypt them with the key and fail with one clear line without it, with another
//! key, or when the stored bytes were tampered with. No mocks.

use crate::etcdctl as etcd_support;
use crate::operator_support;
use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion, S3Options, S3Server, free_port};
use etcd_snapshot::api::ETCDSnapshotSchedule;
use etcd_snapshot::consts;
use etcd_snapshot::snapshot::crypt::EncryptionKey;
use etcd_support::EtcdOnDir;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use operator_support::{NS, OperatorEnv, OperatorOptions, SECRET, is_local, local_path, s3_key};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{cli, etcd_flags, run, s3_flags, s3_object};

const VERSION: EtcdVersion = EtcdVersion::V3_5_30;

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n / 2];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    hex::encode(bytes)
}

fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    run(Command::new(VERSION.etcdctl().expect("etcdctl"))
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args))
}

/// Restore tools for the CLI under test.
fn with_tools(cmd: &mut Command) -> &mut Command {
    cmd.env("ETCD_SNAPSHOT_ETCDUTL", VERSION.etcdutl().expect("etcdutl"))
        .env_remove("ETCD_SNAPSHOT_ENCRYPTION_KEY_FILE")
}

/// A 0600 key file holding a fresh key as base64; returns (path, base64 text).
fn key_file(dir: &Path, name: &str) -> (PathBuf, String) {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).expect("random");
    let text = base64_encode(&key);
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (path, text)
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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

/// The error line of a failed run: exactly one line, starting with `error: `.
fn one_error_line(ok: bool, stderr: &str) -> String {
    assert!(!ok, "expected a failure");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_snapshots_hide_the_data_and_restore_only_with_their_key() {
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "snaps").await;
    let etcd = EtcdCluster::start(EtcdOptions {
        version: VERSION,
        members: 1,
        tls: false,
    })
    .expect("start etcd");
    // A value to look for in the stored bytes, and bulk so the snapshot spans several segments.
    let secret = format!("PLAINTEXT-MARKER-{}", random_hex(32));
    let (ok, _, err) = etcdctl(
        &etcd.endpoint(0),
        &["put", "/registry/secrets/default/db", &secret],
    );
    assert!(ok, "put: {err}");
    for i in 0..4 {
        let (ok, _, err) = etcdctl(
            &etcd.endpoint(0),
            &["put", &format!("/bulk/{i}"), &random_hex(100_000)],
        );
        assert!(ok, "put: {err}");
    }

    let work = tempfile::tempdir().expect("tempdir");
    let snapdir = work.path().join("snapshots");
    let (key, key_text) = key_file(work.path(), "key");
    let (other_key, other_text) = key_file(work.path(), "other-key");
    let started = Instant::now();

    // save: local + S3, compressed and encrypted.
    let (ok, out, err) = run(cli()
        .arg("save")
        .arg("--node-name=node-a")
        .arg("--snapshot-compress")
        .arg(format!("--encryption-key-file={}", key.display()))
        .arg(format!("--dir={}", snapdir.display()))
        .args(etcd_flags(&etcd))
        .args(s3_flags(&s3, "snaps", "enc")));
    assert!(ok, "save failed: {err}");
    let name = saved_name(&out);
    assert!(
        name.starts_with("on-demand-node-a-") && name.ends_with(".zst.enc"),
        "{name}"
    );
    assert_eq!(out.matches(" saved.").count(), 2, "local and S3: {out}");

    // The stored bytes: encrypted, not zstd, not containing the value; S3 records the key id.
    let local = std::fs::read(snapdir.join(&name)).expect("local copy");
    let (object, meta) = s3_object(&s3, "snaps", &format!("enc/{name}")).await;
    for (what, bytes) in [("local", &local), ("S3", &object)] {
        assert!(
            bytes.starts_with(b"ESOENC1\0"),
            "{what} copy has the header"
        );
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{what} copy leaks the value"
        );
        assert!(
            zstd::decode_all(&bytes[..]).is_err(),
            "{what} copy is valid zstd"
        );
        assert!(
            bytes.len() > 2 * 65536,
            "{what} copy spans several segments"
        );
    }
    assert_eq!(
        meta.get("etcd-snapshot-encryption").map(String::as_str),
        Some("aes-256-gcm")
    );
    let key_id = meta
        .get("etcd-snapshot-encryption-key-id")
        .cloned()
        .expect("key id recorded");
    assert_eq!(key_id.len(), 16);
    assert_eq!(
        meta.get("etcd-snapshot-sha256"),
        Some(&hex::encode(Sha256::digest(&object)))
    );

    // ls lists both encrypted copies as snapshots.
    let (ok, out, err) = run(cli()
        .arg("ls")
        .arg("--node-name=node-a")
        .arg(format!("--dir={}", snapdir.display()))
        .args(s3_flags(&s3, "snaps", "enc")));
    assert!(ok, "ls failed: {err}");
    let rows = out
        .lines()
        .filter(|l| l.starts_with(&format!("{name} ")))
        .count();
    assert_eq!(rows, 2, "{out}");

    // verify: with the key (local and S3), without it, with another key.
    let verify = |extra: &[String]| {
        run(with_tools(&mut cli())
            .arg("verify")
            .arg(&name)
            .arg(format!("--dir={}", snapdir.display()))
            .args(extra))
    };
    let key_flag = format!("--encryption-key-file={}", key.display());
    let (ok, out, err) = verify(std::slice::from_ref(&key_flag));
    assert!(ok, "verify with the key failed: {err}");
    assert!(
        out.contains(&format!(
            "encryption      OK: aes-256-gcm with key id {key_id}, every segment authenticated"
        )),
        "{out}"
    );
    assert!(out.contains("verified: every check passed"), "{out}");
    let mut with_s3 = s3_flags(&s3, "snaps", "enc");
    with_s3.push(key_flag.clone());
    let (ok, out, err) = verify(&with_s3);
    assert!(ok, "verify of the S3 copy failed: {err}");
    assert!(out.contains("verified: every check passed"), "{out}");

    let (ok, _, err) = verify(&[]);
    let line = one_error_line(ok, &err);
    assert!(
        line.contains(&format!(
            "is encrypted (key id {key_id}) and no encryption key was given"
        )),
        "{line}"
    );
    let (ok, _, err) = verify(&s3_flags(&s3, "snaps", "enc"));
    let line = one_error_line(ok, &err);
    assert!(line.contains("no encryption key was given"), "{line}");
    let (ok, _, err) = verify(&[format!("--encryption-key-file={}", other_key.display())]);
    let line = one_error_line(ok, &err);
    assert!(
        line.contains(&format!(
            "encrypted with key id {key_id}, but the given key has id"
        )),
        "{line}"
    );
    // The key also comes from the environment.
    let (ok, _, err) = run(with_tools(&mut cli())
        .env("ETCD_SNAPSHOT_ENCRYPTION_KEY_FILE", &key)
        .arg("verify")
        .arg(&name)
        .arg(format!("--dir={}", snapdir.display())));
    assert!(ok, "verify with the key from the environment failed: {err}");
    // ... and from the config file, like every flag.
    let config = work.path().join("config.yaml");
    std::fs::write(&config, format!("encryption-key-file: {}\n", key.display())).expect("config");
    let (ok, _, err) = run(with_tools(&mut cli())
        .arg("verify")
        .arg(format!("--config={}", config.display()))
        .arg(&name)
        .arg(format!("--dir={}", snapdir.display())));
    assert!(ok, "verify with the key from the config file failed: {err}");

    // restore --output: the plain snapshot, which etcdutl reads and which holds the value.
    let plain = work.path().join("plain.db");
    let (ok, out, err) = run(with_tools(&mut cli())
        .arg("restore")
        .arg(format!("--cluster-reset-restore-path={name}"))
        .arg(format!("--output={}", plain.display()))
        .arg(format!("--dir={}", snapdir.display()))
        .arg(&key_flag));
    assert!(ok, "restore --output failed: {err}");
    assert_eq!(out.trim(), plain.display().to_string());
    assert!(contains(
        &std::fs::read(&plain).expect("plain"),
        secret.as_bytes()
    ));
    let (revision, keys) = support::snapshot_status(&plain);
    assert!(revision >= 5 && keys >= 5, "status {revision} {keys}");

    // restore without the key, or with another one: nothing touches the data dir.
    let data_dir = work.path().join("data");
    std::fs::create_dir(&data_dir).expect("data dir");
    std::fs::write(data_dir.join("keep-me"), "old").expect("old data");
    let restore = |extra: &[String]| {
        run(with_tools(&mut cli())
            .arg("restore")
            .arg("--cluster-reset")
            .arg(format!("--cluster-reset-restore-path={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg("--name=restored")
            .args(extra))
    };
    let mut s3_wrong = s3_flags(&s3, "snaps", "enc");
    s3_wrong.push(format!("--encryption-key-file={}", other_key.display()));
    for extra in [s3_flags(&s3, "snaps", "enc"), s3_wrong] {
        let (ok, _, err) = restore(&extra);
        let line = one_error_line(ok, &err);
        assert!(line.contains(&key_id), "{line}");
        let entries: Vec<_> = std::fs::read_dir(&data_dir)
            .expect("data dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("keep-me")]);
        let siblings: Vec<_> = std::fs::read_dir(work.path())
            .expect("work")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains("-old-"))
            .collect();
        assert!(siblings.is_empty(), "{siblings:?}");
    }

    // restore from S3 with the key: a fresh etcd serves the value.
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut s3_key = s3_flags(&s3, "snaps", "enc");
    s3_key.push(key_flag.clone());
    s3_key.push(format!("--initial-advertise-peer-urls={peer}"));
    let (ok, out, err) = restore(&s3_key);
    assert!(ok, "restore with the key failed: {err}");
    assert!(out.contains("encryption      OK"), "{out}");
    let restored = EtcdOnDir::start(VERSION, &data_dir, "restored", &peer);
    assert_eq!(
        restored.get("/registry/secrets/default/db").as_deref(),
        Some(secret.as_str())
    );
    drop(restored);

    // A tampered copy whose recorded checksum was rewritten to match (an attacker with write
    // access to the bucket can do that) is still refused: the segment does not authenticate.
    let mut bad = local.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(snapdir.join(&name), &bad).expect("tamper");
    std::fs::write(
        snapdir.join(".checksums").join(&name),
        hex::encode(Sha256::digest(&bad)),
    )
    .expect("rewrite checksum");
    let (ok, _, err) = verify(std::slice::from_ref(&key_flag));
    let line = one_error_line(ok, &err);
    assert!(line.contains("does not authenticate"), "{line}");

    // Key material never appears in any output.
    for text in [&key_text, &other_text] {
        assert!(!err.contains(text.as_str()));
    }
    eprintln!("encryption test took {:?}", started.elapsed());
}

#[tokio::test]
async fn unusable_key_files_are_refused_before_any_work() {
    let work = tempfile::tempdir().expect("tempdir");
    let bad = work.path().join("bad-key");
    let secret_text = "not-a-key-but-secret-looking-text";
    std::fs::write(&bad, secret_text).expect("write");
    let (ok, _, err) = run(cli()
        .arg("save")
        .arg("--node-name=n")
        .arg(format!("--encryption-key-file={}", bad.display()))
        .arg(format!("--dir={}", work.path().join("s").display()))
        .arg("--etcd-endpoint=http://127.0.0.1:1"));
    let line = one_error_line(ok, &err);
    assert!(
        line.contains("the encryption key must be 32 bytes"),
        "{line}"
    );
    assert!(!line.contains(secret_text), "{line}");
    assert!(!work.path().join("s").exists(), "nothing was written");
    let (ok, _, err) = run(with_tools(&mut cli())
        .arg("verify")
        .arg("x-n-1.enc")
        .arg(format!(
            "--encryption-key-file={}",
            work.path().join("missing").display()
        ))
        .arg(format!("--dir={}", work.path().display())));
    let line = one_error_line(ok, &err);
    assert!(line.contains("cannot read encryption key file"), "{line}");
}

/// The `Stalled` condition message of a schedule (it is invalid), when it is True.
async fn invalid_message(env: &OperatorEnv, name: &str) -> Option<String> {
    let s = Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get(name)
        .await
        .ok()?;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == consts::conditions::STALLED && c.status == "True")
        .map(|c| c.message)
}

async fn put_key_secret(env: &OperatorEnv, value: &[u8]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("snapshot-key".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_string(), ByteString(value.to_vec()))].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(env.admin.clone(), NS)
        .patch(
            "snapshot-key",
            &PatchParams::apply("eso-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply key Secret");
}

/// A schedule with `spec.encryption`: Invalid (with a clear reason, never the key) while its key
/// Secret is missing or holds no usable key; once the key is there, a run produces Ready
/// encrypted copies (local and S3) that record the key id, hide the data, and verify with the
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_with_encryption_produces_ready_encrypted_copies() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    let secret = format!("PLAINTEXT-MARKER-{}", random_hex(32));
    let (ok, _, err) = etcdctl(
        &env.etcd.endpoint(0),
        &["put", "/registry/secrets/x", &secret],
    );
    assert!(ok, "put: {err}");
    env.apply(&format!(
        "apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: sealed
spec:
  schedule: \"0 0 1 1 *\"
  compression: {{type: zstd}}
  encryption:
    keySecretRef: {{name: snapshot-key}}
  s3:
    enabled: true
    configSecretRef: {{name: {SECRET}}}
"
    ));
    let message = env
        .wait_until(
            "the schedule to be Invalid for its missing key",
            Duration::from_secs(30),
            async || invalid_message(&env, "sealed").await,
        )
        .await;
    assert_eq!(
        message,
        format!("encryption key Secret {NS}/snapshot-key not found or has no key \"key\"")
    );

    let bad = "secret-but-not-a-key";
    put_key_secret(&env, bad.as_bytes()).await;
    let message = env
        .wait_until(
            "the schedule to be Invalid for its unusable key",
            Duration::from_secs(30),
            async || {
                invalid_message(&env, "sealed")
                    .await
                    .filter(|m| m.contains("32 bytes"))
            },
        )
        .await;
    assert!(!message.contains(bad), "{message}");

    let key = EncryptionKey::generate().expect("key");
    let key_text = key.to_base64();
    put_key_secret(&env, key_text.as_bytes()).await;
    env.wait_until(
        "the schedule to be valid once the key is there",
        Duration::from_secs(30),
        async || {
            invalid_message(&env, "sealed")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    let requested = env.request_run("sealed").await;
    let files = env
        .wait_run_ready(&requested, 2, Duration::from_secs(60))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, &key_text).expect("key file");
    for f in &files {
        assert!(
            f.spec.snapshot_name.ends_with(".zst.enc"),
            "{}",
            f.spec.snapshot_name
        );
        let enc = f
            .status
            .as_ref()
            .and_then(|s| s.encryption.clone())
            .expect("status.encryption");
        assert_eq!(enc.algorithm, "aes-256-gcm");
        assert_eq!(enc.key_id, key.id().to_hex());
        let stored = if is_local(f) {
            std::fs::read(local_path(f)).expect("local copy")
        } else {
            let (body, meta) = env.s3_object(&s3_key(f)).await.expect("S3 object");
            assert_eq!(
                meta.get("etcd-snapshot-encryption-key-id"),
                Some(&key.id().to_hex())
            );
            body
        };
        assert!(stored.starts_with(b"ESOENC1\0"));
        assert!(
            !contains(&stored, secret.as_bytes()),
            "the copy leaks the value"
        );
    }
    let local = files.iter().find(|f| is_local(f)).expect("local copy");
    let (ok, out, err) = run(with_tools(&mut cli())
        .arg("verify")
        .arg(local_path(local))
        .arg(format!("--encryption-key-file={}", key_path.display())));
    assert!(ok, "verify of the operator's copy failed: {err}");
    assert!(out.contains("verified: every check passed"), "{out}");

    let logs = format!(
        "{}{}{}",
        env.log("controller ctl-1"),
        env.log("agent node0"),
        env.diagnostics()
    );
    assert!(!logs.contains(&key_text), "the key appears in a log");
    // ... nor in any record, schedule status or event.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(env.admin.clone())
        .list(&Default::default())
        .await
        .expect("list events");
    let schedule = Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get("sealed")
        .await
        .expect("schedule");
    let objects = format!(
        "{}{}{}",
        serde_json::to_string(&files).expect("json"),
        serde_json::to_string(&schedule).expect("json"),
        serde_json::to_string(&events.items).expect("json")
    );
    assert!(
        objects.contains("InvalidSchedule") || objects.contains("Invalid"),
        "the events were listed"
    );
    for text in [key_text.as_str(), bad] {
        assert!(
            !objects.contains(text),
            "key material in a resource or event"
        );
    }
    assert!(!logs.contains(bad), "the bad key appears in a log");
    env.assert_no_forbidden();
}
