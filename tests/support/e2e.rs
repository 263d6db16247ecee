//! Harness of the real-cluster tier (`tests/e2e*.rs`): the operator image built from the binary
//! under test and imported into the node, the chart installed with real Helm 4, kubectl 1.35 with
//! a discovery cache of its own, and the CLI pointed at the cluster. Include with
//! `#[path = "support/e2e.rs"] mod e2e_support;` next to `mod support;`.
#![allow(dead_code)]

use crate::support;
use eso_testenv::Cluster;
use k8s_openapi::api::core::v1::Pod;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const OPERATOR_REPOSITORY: &str = "localhost/eso-e2e/etcd-snapshot";
pub const OPERATOR_TAG: &str = "e2e";
pub const OPERATOR_NS: &str = "etcd-snapshot";
pub const RELEASE: &str = "etcd-snapshot";

/// Pods must tolerate the control-plane taint kubeadm 1.20 puts on the only node.
pub const TOLERATE_MASTER: &str =
    r#"[{"key":"node-role.kubernetes.io/master","operator":"Exists","effect":"NoSchedule"}]"#;

pub fn repo() -> PathBuf {
    eso_testenv::repo_root()
}

/// The chart in this source tree.
pub fn chart() -> PathBuf {
    repo().join("charts/etcd-snapshot-operator")
}

/// Where the chart's agent writes the node's snapshots (the `snapshotDir` of [`values_yaml`]).
pub fn snapshot_dir(cluster: &Cluster) -> PathBuf {
    cluster.dir().join("var/lib/etcd-snapshots")
}

/// `kubectl --kubeconfig ADMIN --cache-dir CLUSTER/kubectl-cache ARGS`: (success, stdout, stderr).
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    support::run(
        Command::new(eso_testenv::kubectl().expect("kubectl installed"))
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .arg(format!(
                "--cache-dir={}",
                cluster.dir().join("kubectl-cache").display()
            ))
            .args(args),
    )
}

/// `helm ARGS CHART --namespace etcd-snapshot --values VALUES --kubeconfig ADMIN`; panics with
/// Helm's output when it fails. `args` starts with the verb and the release, e.g.
/// `["install", RELEASE, "--wait"]`.
pub fn helm(cluster: &Cluster, args: &[&str], values: &Path) {
    let (ok, out, err) = support::run(
        Command::new(eso_testenv::bin("helm").expect("helm installed"))
            .args(args)
            .arg(chart())
            .args(["--namespace", OPERATOR_NS, "--values"])
            .arg(values)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig()),
    );
    assert!(ok, "helm {args:?} failed:\n{out}\n{err}");
}

/// A Helm command without the chart argument (`uninstall`, `history`, `list`...).
pub fn helm_plain(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    support::run(
        Command::new(eso_testenv::bin("helm").expect("helm installed"))
            .args(args)
            .args(["--namespace", OPERATOR_NS, "--kubeconfig"])
            .arg(cluster.kubeconfig()),
    )
}

/// Build the operator image from the binary under test (`scripts/build-image.sh`) with `tag` and
/// import it into the node's containerd.
pub fn build_and_import_operator_image(cluster: &Cluster, tag: &str) {
    let t = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let build_image = repo().join("scripts/build-image.sh");
    let (ok, out, err) = support::run(
        Command::new(&build_image)
            .arg("--bin")
            .arg(env!("CARGO_BIN_EXE_etcd-snapshot"))
            .arg("--out")
            .arg(work.path())
            .args(["--repository", OPERATOR_REPOSITORY, "--tag", tag]),
    );
    assert!(ok, "scripts/build-image.sh failed: {err}");
    let archive = PathBuf::from(out.trim());
    cluster
        .import_image(&archive)
        .expect("import the operator image");
    eprintln!(
        "e2e: operator image {OPERATOR_REPOSITORY}:{tag} built and imported in {:.1?}",
        t.elapsed()
    );
}

/// Chart values for the e2e node: the image under test, kubeadm's etcd client certificate from
/// the node's pki folder, the node's snapshot folder, and tolerations for the control-plane
/// taint. `extra` is appended as is (top-level YAML keys other than `image`, `etcd` and
/// `controller`).
pub fn values_yaml(cluster: &Cluster, tag: &str, extra: &str) -> String {
    let pki = cluster.etcd_pki_dir();
    format!(
        r#"image: {{repository: {OPERATOR_REPOSITORY}, tag: {tag}, pullPolicy: Never}}
etcd:
  preset: custom
  custom:
    certDir: {pki}
    caFile: {pki}/ca.crt
    certFile: {pki}/healthcheck-client.crt
    keyFile: {pki}/healthcheck-client.key
    snapshotDir: {snapshots}
    nodeSelector: {{node-role.kubernetes.io/control-plane: ""}}
controller:
  tolerations: {TOLERATE_MASTER}
{extra}"#,
        pki = pki.display(),
        snapshots = snapshot_dir(cluster).display(),
    )
}

/// `etcd-snapshot trigger SCHEDULE --wait --timeout 5m` against the cluster; panics with the
/// CLI's output when it fails; returns its stdout.
pub fn trigger(cluster: &Cluster, schedule: &str) -> String {
    let (ok, out, err) = support::run(
        support::cli()
            .args(["trigger", schedule, "--wait", "--timeout", "5m"])
            .env("KUBECONFIG", cluster.kubeconfig()),
    );
    assert!(ok, "etcd-snapshot trigger {schedule} failed:\n{out}\n{err}");
    out
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
