//! Harness of the real-cluster tier (`tests/it/e2e*.rs`): the operator image built from the binary
//! under test and imported into the node, the chart installed with real Helm 4, kubectl 1.35 with
//! a discovery cache of its own, and the CLI pointed at the cluster. Declared once in
//! `tests/it/main.rs` as `crate::e2e_support`.
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

/// What a person debugging a failed scenario needs once the cluster is gone: the operator's
/// pods, their logs (both containers' last lines), its Leases, the schedules and records, and the
/// events of its namespace. The cluster dir (and with it every pod log) is removed at teardown.
pub fn operator_diagnostics(cluster: &Cluster) -> String {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let views: [&[&str]; 5] = [
        &["get", "pods", "-n", OPERATOR_NS, "-o", "wide"],
        &[
            "logs",
            "-n",
            OPERATOR_NS,
            "-l",
            &selector,
            "--all-containers",
            "--prefix",
            "--tail=150",
            "--max-log-requests=10",
        ],
        &[
            "get",
            "leases",
            "-n",
            OPERATOR_NS,
            "-o",
            "custom-columns=NAME:.metadata.name,HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime,RV:.metadata.resourceVersion",
        ],
        &[
            "get",
            "etcdsnapshotschedules,etcdsnapshotfiles",
            "-o",
            "yaml",
        ],
        &[
            "get",
            "events",
            "-n",
            OPERATOR_NS,
            "--sort-by=.lastTimestamp",
        ],
    ];
    let mut out = String::new();
    for args in views {
        let (_, stdout, stderr) = kubectl(cluster, args);
        out.push_str(&format!("$ kubectl {}\n{stdout}{stderr}\n", args.join(" ")));
    }
    out
}

/// `helm --kubeconfig ADMIN ARGS CHART --namespace etcd-snapshot --values VALUES`; panics with
/// Helm's output when it fails. `args` starts with the verb and the release, e.g.
/// `["install", RELEASE, "--wait"]`.
pub fn helm(cluster: &Cluster, args: &[&str], values: &Path) {
    let (ok, out, err) = support::run(
        helm_command(cluster)
            .args(args)
            .arg(chart())
            .args(["--namespace", OPERATOR_NS, "--values"])
            .arg(values),
    );
    assert!(ok, "helm {args:?} failed:\n{out}\n{err}");
}

/// `helm --kubeconfig ADMIN` with every cache and config of Helm and of its Kubernetes client in
/// the cluster dir: by default Helm's client writes its discovery and HTTP caches to
/// `~/.kube/cache`, which would outlive the cluster (the tier checks the machine is as it was).
fn helm_command(cluster: &Cluster) -> Command {
    let home = cluster.dir().join("helm");
    let mut cmd = Command::new(eso_testenv::bin("helm").expect("helm installed"));
    cmd.env("KUBECACHEDIR", cluster.dir().join("kubectl-cache"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig());
    cmd
}

/// `helm install RELEASE --create-namespace --wait --timeout=5m` with `values`: Helm 4's kstatus
/// waiter returns once every resource of the chart is Ready (a valid schedule is at once).
pub fn install_release(cluster: &Cluster, values: &Path) {
    helm(
        cluster,
        &[
            "install",
            RELEASE,
            "--create-namespace",
            "--wait",
            "--timeout=5m",
        ],
        values,
    );
}

/// A Helm command without the chart argument (`uninstall`, `history`, `list`...).
pub fn helm_plain(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    support::run(
        helm_command(cluster)
            .args(args)
            .args(["--namespace", OPERATOR_NS]),
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

// ---------------------------------------------------------------------------------------------
// Pods, etcd, S3, GitOps-style apply and polling, for the scenarios after the install.

/// An image holding only the static `etcdctl` 3.5 binary (its entrypoint).
pub const ETCDCTL_IMAGE: &str = "localhost/eso-e2e/etcdctl:test";

/// Build the [`ETCDCTL_IMAGE`] and import it into the node.
pub fn import_etcdctl_image(cluster: &Cluster) {
    let etcdctl = eso_testenv::EtcdVersion::V3_5
        .etcdctl()
        .expect("etcdctl 3.5 installed");
    let work = tempfile::tempdir().expect("temp dir");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs dir");
    std::fs::copy(&etcdctl, rootfs.join("etcdctl")).expect("copy etcdctl");
    let tar = work.path().join("etcdctl.tar");
    eso_testenv::cluster::docker_archive(&rootfs, ETCDCTL_IMAGE, &tar, &["/etcdctl"])
        .expect("pack etcdctl image");
    cluster.import_image(&tar).expect("import etcdctl image");
}

/// A pod that runs `etcdctl ARGS` once ([`ETCDCTL_IMAGE`]) with kubeadm's healthcheck client
/// certificate of the node (its pki folder mounted at `/pki`: `--cacert`, `--cert` and `--key`
/// are added); `host_network` puts it in the node's network namespace, where etcd answers on
/// 127.0.0.1:2379.
pub fn etcdctl_pod(cluster: &Cluster, name: &str, host_network: bool, args: &[&str]) -> Pod {
    let tolerations: serde_json::Value =
        serde_json::from_str(TOLERATE_MASTER).expect("tolerations JSON");
    let mut argv = vec![
        "--cacert=/pki/ca.crt".to_string(),
        "--cert=/pki/healthcheck-client.crt".to_string(),
        "--key=/pki/healthcheck-client.key".to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "hostNetwork": host_network,
            "restartPolicy": "Never",
            "tolerations": tolerations,
            "volumes": [{"name": "pki", "hostPath": {
                "path": cluster.etcd_pki_dir(), "type": "Directory"}}],
            "containers": [{
                "name": "etcdctl",
                "image": ETCDCTL_IMAGE,
                "imagePullPolicy": "Never",
                "args": argv,
                "volumeMounts": [{"name": "pki", "mountPath": "/pki", "readOnly": true}],
            }],
        },
    }))
    .expect("etcdctl pod JSON")
}

/// Poll `check` every half second until it gives a value; panics after `timeout` saying what
/// was awaited. Timeouts are generous: the machine has 2 busy cores.
pub async fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `kubectl apply --server-side --field-manager=MANAGER -f` of `yaml`, as a GitOps tool applies
/// manifests (Flux and Argo CD use server-side apply); panics with kubectl's output on failure.
pub fn apply_server_side(cluster: &Cluster, manager: &str, yaml: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("manifest.yaml");
    std::fs::write(&file, yaml).expect("write manifest");
    let file = file.display().to_string();
    let (ok, out, err) = kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            &format!("--field-manager={manager}"),
            "-f",
            &file,
        ],
    );
    assert!(ok, "kubectl apply --server-side failed:\n{out}\n{err}");
}

/// The S3 config Secret as the README documents it (`examples/s3-secret.yaml`: k3s's keys, type
/// `etcdsnapshot.io/s3-config-secret`, in the operator's namespace) for a SeaweedFS reachable
/// from the pods (plain HTTP, path-style).
pub fn s3_secret_yaml(
    name: &str,
    s3: &eso_testenv::S3Server,
    bucket: &str,
    folder: &str,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {OPERATOR_NS}
type: etcdsnapshot.io/s3-config-secret
stringData:
  etcd-s3-endpoint: "{endpoint}"
  etcd-s3-bucket: {bucket}
  etcd-s3-folder: {folder}
  etcd-s3-region: {region}
  etcd-s3-access-key: {access}
  etcd-s3-secret-key: {secret}
  etcd-s3-bucket-lookup-type: path
  etcd-s3-insecure: "true"
"#,
        endpoint = s3.host_port(),
        region = s3.region,
        access = s3.access_key,
        secret = s3.secret_key,
    )
}

/// `(bucket, key)` of an `s3://bucket/key` location.
pub fn s3_bucket_key(location: &str) -> (String, String) {
    let rest = location
        .strip_prefix("s3://")
        .unwrap_or_else(|| panic!("not an S3 location: {location}"));
    let (bucket, key) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("no key in {location}"));
    (bucket.to_string(), key.to_string())
}

/// The ETCDSnapshotFiles matching a label selector (`""`: all).
pub async fn snapshot_files(
    client: &kube::Client,
    selector: &str,
) -> Vec<etcd_snapshot::api::ETCDSnapshotFile> {
    let api: kube::Api<etcd_snapshot::api::ETCDSnapshotFile> = kube::Api::all(client.clone());
    api.list(&kube::api::ListParams::default().labels(selector))
        .await
        .expect("list ETCDSnapshotFiles")
        .items
}

/// Entries of the node's snapshot folder (no hidden entries but the temp files, whose names
/// carry `.partial-`).
pub fn snapshot_dir_entries(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(snapshot_dir(cluster))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') || n.contains(".partial-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A client of the node's etcd from the host (`https://NODE_IP:2379`, kubeadm's healthcheck
/// client certificate).
pub async fn node_etcd(cluster: &Cluster) -> etcd_client::Client {
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
    let pki = cluster.etcd_pki_dir();
    let read = |name: &str| std::fs::read(pki.join(name)).expect("read etcd pki file");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("healthcheck-client.crt"),
            read("healthcheck-client.key"),
        ));
    etcd_client::Client::connect(
        [format!("https://{}:2379", cluster.node_ip())],
        Some(ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("connect to the node's etcd")
}

/// etcd's `dbSize` of the node's member.
pub async fn node_etcd_db_size(etcd: &mut etcd_client::Client) -> i64 {
    etcd.status().await.expect("etcd status").db_size()
}

/// Put `mib` MiB of incompressible values (1 MiB each, keys `PREFIX0000`...) into the node's
/// etcd, so that a snapshot of it takes a while.
pub async fn fill_node_etcd(etcd: &mut etcd_client::Client, prefix: &str, mib: usize) {
    support::put_incompressible(etcd, prefix, mib).await;
}

/// Delete every key under `prefix`, compact the history physically and defragment, so the
/// node's etcd (and every later snapshot of it) is small again.
pub async fn drop_node_etcd_prefix(etcd: &mut etcd_client::Client, prefix: &str) {
    use etcd_client::{CompactionOptions, DeleteOptions};
    let deleted = etcd
        .delete(prefix, Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("etcd delete prefix");
    let revision = deleted.header().map_or(0, |h| h.revision());
    match etcd
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
    {
        Ok(_) => {}
        // kube-apiserver compacts too; already compacted is as good.
        Err(e) if e.to_string().contains("compacted") => {}
        Err(e) => panic!("etcd compact: {e}"),
    }
    etcd.defragment().await.expect("etcd defragment");
}
