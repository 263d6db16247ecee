//! The end-to-end tier: a real single-node Kubernetes v1.20 cluster (kubelet, containerd, stock
//! kube-apiserver, controller-manager, scheduler, kube-proxy, etcd with kubeadm's certificates) in
//! a network namespace of its own (`scripts/e2e-cluster.sh`). The cluster is heavy, so this binary
//! starts one and runs its scenarios in sequence; then it proves the machine is as it was.
//! Needs root (it says `SKIPPED: not root` otherwise).

use crate::e2e_support;
use crate::support;

mod agent_restart;
mod storage;
mod upgrade;

use e2e_support::{
    OPERATOR_NS, OPERATOR_TAG, RELEASE, TOLERATE_MASTER, kubectl, pod_ready, snapshot_dir,
};
use eso_testenv::{Cluster, HostState};
use etcd_snapshot::api::{ETCDSnapshotFile, Phase};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use kube::api::{Api, LogParams, PostParams};
use kube::{Client, ResourceExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "default";
const PAUSE_IMAGE: &str = "localhost/eso-e2e/pause:3.4";
#[test]
fn e2e_cluster_runs_pods_reaches_etcd_and_leaves_the_machine_as_it_was() {
    let Some(mut cluster) = Cluster::claim().expect("claim the machine for the e2e cluster") else {
        return; // not root: SKIPPED printed
    };
    let before = HostState::capture();

    let t = Instant::now();
    cluster.up().expect("e2e cluster up");
    eprintln!("e2e: cluster up in {:.1?}", t.elapsed());

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(scenarios(&cluster));

    let t = Instant::now();
    cluster.down().expect("e2e cluster down leaves nothing");
    eprintln!("e2e: cluster down in {:.1?}", t.elapsed());
    let diff = HostState::capture().diff(&before);
    assert!(
        diff.is_empty(),
        "the machine is not as it was before the cluster:\n{}",
        diff.join("\n")
    );
}

async fn scenarios(cluster: &Cluster) {
    let client = support::client_from(&cluster.kubeconfig()).await;
    let t = Instant::now();
    node_is_a_kubeadm_control_plane_node(cluster, &client).await;
    pod_network_pod_runs(&client).await;
    eprintln!("e2e: pod network pod Running in {:.1?}", t.elapsed());
    let t = Instant::now();
    host_network_pod_reads_etcd_with_kubeadm_client_cert(cluster, &client).await;
    eprintln!("e2e: hostNetwork etcdctl pod in {:.1?}", t.elapsed());
    let t = Instant::now();
    pod_reaches_a_cluster_ip_through_kube_proxy(cluster, &client).await;
    eprintln!("e2e: ClusterIP through kube-proxy in {:.1?}", t.elapsed());
    let (esf, path) =
        operator_installed_by_helm_takes_an_on_demand_snapshot(cluster, &client).await;
    local_snapshot_file_and_kubectl(cluster, &client, &esf, &path).await;
    let t = Instant::now();
    controller_metrics_through_its_service(cluster, &client).await;
    eprintln!(
        "e2e: controller metrics through its Service in {:.1?}",
        t.elapsed()
    );
    // The GitOps schedule ticks once a minute from here on, during the failover too.
    let s3 = storage::s3_for_the_pods(cluster).await;
    let applied = storage::apply_gitops_schedule(cluster, &client).await;
    leader_pod_deleted_standby_takes_over(cluster, &client).await;
    // The upgrade's image while the schedule ticks (host side only).
    e2e_support::build_and_import_operator_image(cluster, upgrade::UPGRADE_TAG);
    storage::s3_copy_ready_and_in_seaweedfs(&client, &s3, applied).await;
    storage::verified_inside_the_agent_pod(&client, applied).await;
    storage::one_snapshot_per_minute_and_retention_keeps_its_count(cluster, &client, &s3, applied)
        .await;
    storage::suspend_gitops_schedule(cluster, &client).await;

    let t = Instant::now();
    agent_restart::agent_pod_deleted_during_a_large_snapshot(cluster, &client).await;
    eprintln!("e2e: agent pod deletion scenario in {:.1?}", t.elapsed());

    let work = tempfile::tempdir().expect("temp dir");
    let values = work.path().join("upgraded-values.yaml");
    std::fs::write(&values, upgrade::upgraded_values(cluster)).expect("write values");
    upgrade::helm_upgrade_rolls_out_and_takes_effect(cluster, &client, &values).await;
    upgrade::helm_uninstall_keeps_every_snapshot_and_reinstall_shows_them(
        cluster, &client, &s3, &values,
    )
    .await;
}

/// The operator image (built from the binary under test, imported into the node), installed by
/// one `helm install --wait` with the default schedule; its 2 controller pods and agent pod get
/// Ready, and `etcd-snapshot trigger`
/// gets a Ready snapshot of the node's etcd into the node's snapshot directory.
async fn operator_installed_by_helm_takes_an_on_demand_snapshot(
    cluster: &Cluster,
    client: &Client,
) -> (ETCDSnapshotFile, PathBuf) {
    e2e_support::build_and_import_operator_image(cluster, OPERATOR_TAG);
    let work = tempfile::tempdir().expect("temp dir");
    let values = work.path().join("values.yaml");
    std::fs::write(&values, e2e_support::values_yaml(cluster, OPERATOR_TAG, ""))
        .expect("write values");
    let snapshot_dir = snapshot_dir(cluster);
    // One `helm install --wait` with the chart's default schedule: Helm 4's kstatus waiter
    // accepts a valid schedule at once (Ready=True before its first run).
    let installed = Instant::now();
    e2e_support::install_release(cluster, &values);
    eprintln!("e2e: helm install --wait in {:.1?}", installed.elapsed());

    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    let ready = pods
        .list(&Default::default())
        .await
        .expect("list operator pods");
    let names: Vec<String> = ready.items.iter().map(|p| p.name_any()).collect();
    let controllers = names.iter().filter(|n| n.contains("controller")).count();
    assert!(
        controllers == 2 && names.iter().any(|n| n.contains("agent")),
        "expected 2 controller pods and an agent pod, got {names:?}"
    );
    for pod in &ready.items {
        assert!(
            pod_ready(pod),
            "pod {} not Ready after helm --wait",
            pod.name_any()
        );
    }

    let t = Instant::now();
    let out = e2e_support::trigger(cluster, RELEASE);
    eprintln!(
        "e2e: on-demand snapshot in {:.1?}; helm install to its Ready snapshot in {:.1?}",
        t.elapsed(),
        installed.elapsed()
    );
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let ready: Vec<ETCDSnapshotFile> = files
        .list(&Default::default())
        .await
        .expect("list ETCDSnapshotFiles")
        .items
        .into_iter()
        .filter(|f| f.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
        .collect();
    let esf = ready
        .first()
        .unwrap_or_else(|| panic!("no Ready ETCDSnapshotFile:\n{out}"));
    assert_eq!(esf.spec.node_name, cluster.node_name());
    let path = esf
        .spec
        .location
        .strip_prefix("file://")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("not a local snapshot: {}", esf.spec.location));
    assert!(
        path.starts_with(&snapshot_dir),
        "{} is not in the node's snapshot directory",
        path.display()
    );
    let (revision, keys) = support::snapshot_status(&path);
    assert!(
        revision > 0 && keys > 0,
        "empty snapshot {}",
        path.display()
    );
    (esf.clone(), path)
}

/// The local snapshot file on the host: mode 0600, sha256 = `status.sha256`; kubectl 1.35 shows
/// the columns and the `ETCDSnapshotCreated` event (events work on the stock 1.20 API server);
/// `kubectl delete esf` removes the file and the object.
async fn local_snapshot_file_and_kubectl(
    cluster: &Cluster,
    client: &Client,
    esf: &ETCDSnapshotFile,
    path: &Path,
) {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let name = esf.name_any();
    let meta = std::fs::metadata(path).expect("snapshot file metadata");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} mode",
        path.display()
    );
    let bytes = std::fs::read(path).expect("read snapshot file");
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(
        esf.status.as_ref().and_then(|s| s.sha256.as_deref()),
        Some(sha.as_str()),
        "status.sha256 of {name}"
    );

    let kubectl = |args: &[&str]| kubectl(cluster, args);
    let (ok, out, err) = kubectl(&["get", "esf", &name]);
    assert!(ok, "kubectl get esf: {err}");
    for column in ["SNAPSHOTNAME", "NODE", "LOCATION", "SIZE", "PHASE"] {
        assert!(out.contains(column), "no {column} column:\n{out}");
    }
    for value in [
        esf.spec.snapshot_name.as_str(),
        cluster.node_name(),
        esf.spec.location.as_str(),
        "Ready",
    ] {
        assert!(out.contains(value), "kubectl get esf lacks {value}:\n{out}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, out, err) = kubectl(&["describe", "esf", &name]);
        assert!(ok, "kubectl describe esf: {err}");
        if out.contains(etcd_snapshot::consts::REASON_CREATED) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl describe esf shows no {} event after 120 s:\n{out}",
            etcd_snapshot::consts::REASON_CREATED
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let t = Instant::now();
    let (ok, out, err) = kubectl(&["delete", "esf", &name, "--timeout=3m"]);
    assert!(ok, "kubectl delete esf: {out}\n{err}");
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    assert!(
        files.get_opt(&name).await.expect("get esf").is_none(),
        "{name} still exists after kubectl delete"
    );
    assert!(!path.exists(), "{} still on the host", path.display());
    eprintln!("e2e: kubectl delete esf in {:.1?}", t.elapsed());
}

/// The controller's metrics answer through its Service's ClusterIP from the node's network
/// namespace (kube-proxy's rules), as Prometheus in the cluster would scrape them.
async fn controller_metrics_through_its_service(cluster: &Cluster, client: &Client) {
    let services: Api<Service> = Api::namespaced(client.clone(), OPERATOR_NS);
    let name = format!("{RELEASE}-controller-metrics");
    let svc = services
        .get(&name)
        .await
        .expect("controller metrics Service");
    let spec = svc.spec.expect("Service spec");
    let ip = spec.cluster_ip.expect("Service has a ClusterIP");
    let port = spec
        .ports
        .and_then(|p| p.first().map(|p| p.port))
        .expect("Service port");
    let url = format!("http://{ip}:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, out, err) = support::run(cluster.node_command("curl").args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            &url,
        ]));
        if ok && out.contains("# TYPE etcd_snapshot") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{url} from the node: {err}\n{out}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `kubectl delete pod` of the leader: the standby holds the Lease within the lease duration,
/// and an on-demand snapshot triggered then lands once (no duplicate).
async fn leader_pod_deleted_standby_takes_over(cluster: &Cluster, client: &Client) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NS);
    let holder = || async {
        leases
            .get_opt(etcd_snapshot::consts::LEADER_LEASE)
            .await
            .expect("get the leader Lease")
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
            .filter(|h| !h.is_empty())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let old = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(Instant::now() < deadline, "no leader after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    assert!(
        pods.get_opt(&old).await.expect("get pod").is_some(),
        "the Lease holder {old} is not a pod of the release"
    );
    // Only the release schedule's records: another schedule ticks meanwhile.
    let selector = format!("{}={RELEASE}", etcd_snapshot::consts::LABEL_SCHEDULE);
    let before = e2e_support::snapshot_files(client, &selector).await.len();

    let t = Instant::now();
    let (ok, out, err) = kubectl(
        cluster,
        &["delete", "pod", "-n", OPERATOR_NS, &old, "--wait=false"],
    );
    assert!(ok, "kubectl delete pod {old}: {out}\n{err}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let new = loop {
        if let Some(h) = holder().await.filter(|h| *h != old) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader 120 s after deleting {old}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = t.elapsed();
    eprintln!("e2e: leader {old} deleted, {new} leads after {took:.1?}");
    assert!(
        took <= etcd_snapshot::leader::LEASE_DURATION + Duration::from_secs(5),
        "the standby took {took:.1?} to lead (lease duration {:?})",
        etcd_snapshot::leader::LEASE_DURATION
    );

    let t = Instant::now();
    e2e_support::trigger(cluster, RELEASE);
    eprintln!(
        "e2e: on-demand snapshot after failover in {:.1?}",
        t.elapsed()
    );
    let after = e2e_support::snapshot_files(client, &selector).await;
    assert_eq!(
        after.len(),
        before + 1,
        "one trigger, one new record: {:?}",
        after.iter().map(|f| f.name_any()).collect::<Vec<_>>()
    );
}

/// The node carries kubeadm 1.20's control-plane labels and taint, so the chart's agent
/// DaemonSet (nodeSelector + tolerations) lands on it.
async fn node_is_a_kubeadm_control_plane_node(cluster: &Cluster, client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(cluster.node_name()).await.expect("get node");
    let labels = node.labels();
    for label in [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ] {
        assert!(labels.contains_key(label), "node lacks label {label}");
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node-role.kubernetes.io/master" && t.effect == "NoSchedule"),
        "node lacks the master NoSchedule taint: {taints:?}"
    );
}

/// A pod on the bridge network (sandbox from the self-built pause image, CNI address).
async fn pod_network_pod_runs(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = pod_from_json(&format!(
        r#"{{"metadata":{{"name":"pause"}},"spec":{{"tolerations":{TOLERATE_MASTER},
            "containers":[{{"name":"pause","image":"{PAUSE_IMAGE}","imagePullPolicy":"Never"}}]}}}}"#
    ));
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pause pod");
    let pod = wait_pod(&pods, "pause", |phase| phase == "Running").await;
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .expect("running pod has an IP");
    assert!(
        ip.starts_with("10.203.128."),
        "pod IP {ip} is not from the CNI range"
    );
}

/// A hostNetwork pod reads the node's etcd at 127.0.0.1:2379 with kubeadm's healthcheck client
/// certificate from the host path, as the operator's agent will; its log is read through
/// kube-apiserver -> kubelet.
async fn host_network_pod_reads_etcd_with_kubeadm_client_cert(cluster: &Cluster, client: &Client) {
    e2e_support::import_etcdctl_image(cluster);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = e2e_support::etcdctl_pod(
        cluster,
        "etcdctl-host",
        true,
        &[
            "--endpoints=https://127.0.0.1:2379",
            "get",
            "--prefix",
            "--keys-only",
            "/registry/namespaces/",
        ],
    );
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create hostNetwork etcdctl pod");
    wait_pod(&pods, "etcdctl-host", |phase| phase == "Succeeded").await;
    let log = pods
        .logs("etcdctl-host", &LogParams::default())
        .await
        .expect("read the pod's log through kubelet");
    assert!(
        log.contains("/registry/namespaces/kube-system"),
        "etcdctl did not list the cluster's own namespaces:\n{log}"
    );
}

/// A pod on the bridge network reaches a ClusterIP Service (DNAT by kube-proxy's iptables rules)
/// whose endpoint is the node's etcd, as pods reach the API server's `kubernetes` Service.
async fn pod_reaches_a_cluster_ip_through_kube_proxy(cluster: &Cluster, client: &Client) {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let svc: Service = serde_json::from_str(
        r#"{"metadata":{"name":"node-etcd"},"spec":{"ports":[{"name":"client","port":2379,"protocol":"TCP"}]}}"#,
    )
    .expect("Service JSON");
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    let ep: Endpoints = serde_json::from_str(&format!(
        r#"{{"metadata":{{"name":"node-etcd"}},"subsets":[{{"addresses":[{{"ip":"{}"}}],
            "ports":[{{"name":"client","port":2379,"protocol":"TCP"}}]}}]}}"#,
        cluster.node_ip()
    ))
    .expect("Endpoints JSON");
    endpoints
        .create(&PostParams::default(), &ep)
        .await
        .expect("create Endpoints");
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("Service has a ClusterIP");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // The server certificate does not name the ClusterIP; the client certificate still has to be
    // accepted, so the request proves the path end to end.
    let endpoint = format!("--endpoints=https://{cluster_ip}:2379");
    let pod = e2e_support::etcdctl_pod(
        cluster,
        "etcdctl-svc",
        false,
        &[
            &endpoint,
            "--insecure-skip-tls-verify",
            "--command-timeout=20s",
            "endpoint",
            "health",
        ],
    );
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create etcdctl Service pod");
    let pod = wait_pod(&pods, "etcdctl-svc", |phase| {
        phase == "Succeeded" || phase == "Failed"
    })
    .await;
    let log = pods
        .logs("etcdctl-svc", &LogParams::default())
        .await
        .unwrap_or_default();
    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
    assert_eq!(
        phase, "Succeeded",
        "etcdctl through {cluster_ip}:2379 failed:\n{log}"
    );
}

fn pod_from_json(json: &str) -> Pod {
    serde_json::from_str(json).expect("pod JSON")
}

/// Poll the pod until `done(phase)`; generous timeout (a busy 2-core machine).
async fn wait_pod(pods: &Api<Pod>, name: &str, done: impl Fn(&str) -> bool) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pod = pods.get(name).await.expect("get pod");
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if done(&phase) {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} still {phase:?} after 180 s: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
