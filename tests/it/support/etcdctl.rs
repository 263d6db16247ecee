//! `etcdctl` against a test etcd: the calls the restore tests make on the data they restored,
//! and [`EtcdOnDir`], an etcd the test starts on a data dir of its own.
//! Declared once in `tests/it/main.rs` as `crate::etcdctl`.
#![allow(dead_code)]

use eso_testenv::{EtcdVersion, Proc, free_port};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a started member may take to answer `endpoint health`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// An etcd member the test starts on a data dir of its own (one a restore wrote, or an empty one
/// joining a cluster), its client URL picked at run time on 127.0.0.1; stopped when dropped.
pub struct EtcdOnDir {
    _proc: Proc,
    /// Client URL.
    pub endpoint: String,
    /// Its release.
    pub version: EtcdVersion,
}

impl EtcdOnDir {
    /// Member `name` alone in a new cluster (as after `restore --cluster-reset`) on `data_dir`;
    /// its log is beside the data dir (`<data dir>.log`).
    pub fn start(version: EtcdVersion, data_dir: &Path, name: &str, peer_url: &str) -> EtcdOnDir {
        EtcdOnDir::start_member(
            version,
            (name, data_dir, peer_url),
            &format!("{name}={peer_url}"),
            "new",
            &data_dir.with_extension("log"),
        )
    }

    /// Member `name` of `initial_cluster` (`--initial-cluster-state` `state`: `new` or
    /// `existing`) on `data_dir`, logging to `log`; returns once it is healthy.
    pub fn start_member(
        version: EtcdVersion,
        (name, data_dir, peer_url): (&str, &Path, &str),
        initial_cluster: &str,
        state: &str,
        log: &Path,
    ) -> EtcdOnDir {
        let client = format!("http://127.0.0.1:{}", free_port());
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
            "--log-level=warn".to_string(),
        ];
        let mut proc = Proc::spawn_with_env(
            &format!("etcd {name}"),
            &version.etcd().expect("etcd"),
            &args,
            &[("ETCD_UNSUPPORTED_ARCH".into(), String::new())],
            log,
        )
        .expect("start etcd on the data dir");
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            proc.check_running().expect("etcd keeps running");
            if ctl(version, &client, &["endpoint", "health"]).0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {name} not healthy: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        EtcdOnDir {
            _proc: proc,
            endpoint: client,
            version,
        }
    }

    /// A linearizable read of `key`'s value.
    pub fn get(&self, key: &str) -> Option<String> {
        get(self.version, &self.endpoint, key)
    }

    /// How many members the cluster has.
    pub fn member_count(&self) -> usize {
        let (ok, out, err) = ctl(
            self.version,
            &self.endpoint,
            &["member", "list", "-w", "json"],
        );
        assert!(ok, "member list: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("member list JSON");
        v["members"].as_array().map_or(0, Vec::len)
    }
}

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
