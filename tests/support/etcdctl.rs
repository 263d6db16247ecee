//! `etcdctl` against a test etcd: the calls the restore tests make on the data they restored.
//! Include with `#[path = "support/etcdctl.rs"] mod etcdctl;`.
#![allow(dead_code)]

use eso_testenv::EtcdVersion;
use std::process::Command;

/// `etcdctl --endpoints=ENDPOINT ARGS` of `version` (v3 API, 10 s command timeout):
/// (success, stdout, stderr).
pub fn ctl(version: EtcdVersion, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(version.etcdctl().expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Put `PREFIX0 = v0` .. `PREFIX{n-1} = v{n-1}`.
pub fn put_keys(version: EtcdVersion, endpoint: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let (ok, _, err) = ctl(
            version,
            endpoint,
            &["put", &format!("{prefix}{i}"), &format!("v{i}")],
        );
        assert!(ok, "etcdctl put: {err}");
    }
}

/// A linearizable read of `key`'s value.
pub fn get(version: EtcdVersion, endpoint: &str, key: &str) -> Option<String> {
    read(version, endpoint, key, "l")
}

/// A serializable read: what this member itself holds.
pub fn local_get(version: EtcdVersion, endpoint: &str, key: &str) -> Option<String> {
    read(version, endpoint, key, "s")
}

fn read(version: EtcdVersion, endpoint: &str, key: &str, consistency: &str) -> Option<String> {
    let (ok, out, err) = ctl(
        version,
        endpoint,
        &[
            "get",
            key,
            &format!("--consistency={consistency}"),
            "--print-value-only",
        ],
    );
    assert!(ok, "etcdctl get: {err}");
    let v = out.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The member's current revision (`endpoint status`).
pub fn revision(version: EtcdVersion, endpoint: &str) -> i64 {
    let (ok, out, err) = ctl(version, endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(ok, "etcdctl endpoint status: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}
