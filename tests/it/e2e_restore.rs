//! The disaster-recovery drill of the README's restore runbook on the real cluster of the e2e
//! tier (`scripts/e2e-cluster.sh`): the operator installed by Helm snapshots the node's etcd to
//! S3; later objects are made; the API server and etcd are stopped; `etcd-snapshot restore
//! --cluster-reset` restores the cluster's own etcd from S3 on the node, as an operator of a
//! kubeadm node would; etcd and the API server start again; the cluster is back at the snapshot,
//! with a higher revision, and recovers without anything restarted by hand.
//!
//! `ESO_E2E_RESTORE_NO_BUMP=1` runs the same drill with `--no-bump-revision` and reports (does
//! not assert) what the cluster does then: the evidence for the default. Needs root (it says
//! `SKIPPED: not root` otherwise).

use crate::e2e_support;
use crate::support;

use e2e_support::{OPERATOR_NS, OPERATOR_TAG, RELEASE, TOLERATE_MASTER, kubectl, pod_ready};
use eso_testenv::{Cluster, EtcdVersion, HostState, S3Options, S3Server};
use etcd_snapshot::api::{ETCDSnapshotFile, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NS: &str = "drill";
const BUCKET: &str = "restore-drill";
const FOLDER: &str = "cluster";
const PAUSE_IMAGE: &str = "localhost/eso-e2e/pause:3.4";
/// Objects made before the snapshot (restored) and after it (gone after the restore).
const BEFORE: usize = 5;
const AFTER: usize = 5;
/// How long the cluster may take to recover after the restore (a busy 2-core machine; the
/// informers' relist and the kubelet's pod sync are seconds when nothing is wrong).
const RECOVERY: Duration = Duration::from_secs(300);

#[test]
fn e2e_restore_drill_of_the_runbook_brings_the_cluster_back_to_the_snapshot() {
    let Some(mut cluster) = Cluster::claim().expect("claim the machine for the e2e cluster") else {
        return; // not root: SKIPPED printed
    };
    let total = Instant::now();
    let before = HostState::capture();
    let t = Instant::now();
    cluster.up().expect("e2e cluster up");
    eprintln!("e2e-restore: cluster up in {:.1?}", t.elapsed());

    let bump = std::env::var("ESO_E2E_RESTORE_NO_BUMP").as_deref() != Ok("1");
    let host_ip = cluster.host_ip().parse().expect("host IP");
    let mut s3 = S3Server::start(S3Options {
        bind: Some(host_ip),
        ..Default::default()
    })
    .expect("start SeaweedFS on the cluster's host address");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(drill(&cluster, &s3, bump));
    s3.stop();
    drop(s3);

    let t = Instant::now();
    cluster.down().expect("e2e cluster down leaves nothing");
    eprintln!("e2e-restore: cluster down in {:.1?}", t.elapsed());
    let diff = HostState::capture().diff(&before);
    assert!(
        diff.is_empty(),
        "the machine is not as it was before the cluster:\n{}",
        diff.join("\n")
    );
    eprintln!("e2e-restore: whole test in {:.1?}", total.elapsed());
}

async fn drill(cluster: &Cluster, s3: &S3Server, bump: bool) {
    let client = support::client_from(&cluster.kubeconfig()).await;
    support::create_bucket(s3, BUCKET).await;
    install_operator_with_s3(cluster, s3);

    // Before the snapshot: a namespace, ConfigMaps, a Deployment with a running pod.
    make_namespace(&client, NS).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for i in 0..BEFORE {
        make_config_map(&cms, &format!("before-{i}")).await;
    }
    make_deployment(&client, "web").await;
    wait_ready_replicas(&client, "web", 1, Duration::from_secs(180))
        .await
        .expect("Deployment web Ready before the snapshot");
    let web_pods = pod_uids(&client, "app=web").await;
    let operator_pods = operator_pod_uids(&client).await;

    // The snapshot, through the operator, with its S3 copy.
    let t = Instant::now();
    e2e_support::trigger(cluster, RELEASE);
    let snapshot = newest_ready_s3_snapshot(&client).await;
    eprintln!(
        "e2e-restore: snapshot {snapshot} (S3 copy Ready) in {:.1?}",
        t.elapsed()
    );

    // After the snapshot: more ConfigMaps, a second Deployment, and one "before" object deleted.
    for i in 0..AFTER {
        make_config_map(&cms, &format!("after-{i}")).await;
    }
    cms.delete("before-0", &Default::default())
        .await
        .expect("delete before-0");
    make_deployment(&client, "later").await;
    wait_ready_replicas(&client, "later", 1, Duration::from_secs(180))
        .await
        .expect("Deployment later Ready after the snapshot");
    let later_pods = pod_uids(&client, "app=later").await;
    let revision_before = etcd_revision(cluster);
    eprintln!("e2e-restore: etcd revision before the restore: {revision_before}");

    // The runbook: stop the API server and etcd, restore on the node from S3, start them again.
    let drill_started = Instant::now();
    control_plane(cluster, "stop-control-plane");
    let t = Instant::now();
    let out = restore_on_the_node(cluster, s3, &snapshot, bump);
    eprintln!(
        "e2e-restore: etcd-snapshot restore in {:.1?}:\n{out}",
        t.elapsed()
    );
    control_plane(cluster, "start-control-plane");
    let api_back = Instant::now();
    eprintln!(
        "e2e-restore: control plane back {:.1?} after it was stopped",
        drill_started.elapsed()
    );

    // A person's first move after a restore: an on-demand snapshot, requested at once, before
    // the agents renewed their (restored, stale) registration Leases. It must be served once
    // they have, not dropped.
    let early = {
        let kubeconfig = cluster.kubeconfig();
        std::thread::spawn(move || {
            let t = Instant::now();
            let (ok, out, err) = support::run(
                support::cli()
                    .args(["trigger", RELEASE, "--wait", "--timeout", "5m"])
                    .env("KUBECONFIG", kubeconfig),
            );
            (ok, format!("{:.1?}: {out}{err}", t.elapsed()))
        })
    };

    let revision_after = etcd_revision(cluster);
    eprintln!(
        "e2e-restore: etcd revision after the restore: {revision_after} (bump {})",
        if bump { "on" } else { "off" }
    );
    let report = Report::new(bump);

    // The snapshot's objects are back, the later ones gone.
    let names = config_map_names(cluster);
    report.check(
        "ConfigMaps are those of the snapshot",
        names
            == (0..BEFORE)
                .map(|i| format!("before-{i}"))
                .collect::<Vec<_>>(),
        &format!("{names:?}"),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    report.check(
        "Deployment later (made after the snapshot) is gone",
        deployments
            .get_opt("later")
            .await
            .ok()
            .is_some_and(|d| d.is_none()),
        "",
    );
    report.check(
        "the revision is higher than before the restore",
        revision_after > revision_before,
        &format!("{revision_before} -> {revision_after}"),
    );

    // Recovery, without restarting anything by hand.
    let took = wait_until(RECOVERY, || async {
        operator_recovered(&client, &operator_pods).await
    })
    .await;
    report.timed("the operator's pods (same pods) Ready again", took);
    let took = wait_until(RECOVERY, || async {
        pods_ready(&client, "app=web", Some(&web_pods)).await
    })
    .await;
    report.timed("Deployment web's pod (same pod) Ready again", took);
    let took = wait_until(RECOVERY, || async {
        later_pods.iter().all(|uid| {
            !cluster
                .dir()
                .join("var/lib/kubelet/pods")
                .join(uid)
                .exists()
        })
    })
    .await;
    report.timed("the kubelet removed the pod of Deployment later", took);
    // Controllers act on the restored state: a scale-up gets its pod.
    let scaled = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale web to 2");
    let took = wait_ready_replicas(&client, "web", 2, RECOVERY).await;
    report.timed(
        "Deployment web scaled to 2 after the restore",
        took.map(|_| scaled.elapsed()),
    );
    eprintln!(
        "e2e-restore: cluster recovered {:.1?} after the API server came back",
        api_back.elapsed()
    );

    let (ok, detail) = early
        .join()
        .unwrap_or_else(|_| (false, "the trigger thread panicked".into()));
    report.check(
        "an on-demand snapshot requested as soon as the API server was back",
        ok,
        &detail,
    );

    // A new on-demand snapshot through the operator.
    let t = Instant::now();
    let (ok, out, err) = support::run(
        support::cli()
            .args(["trigger", RELEASE, "--wait", "--timeout", "5m"])
            .env("KUBECONFIG", cluster.kubeconfig()),
    );
    report.check(
        "a new on-demand snapshot after the restore",
        ok,
        &format!("{:.1?}: {out}{err}", t.elapsed()),
    );
    // The snapshot's own records were Running when it was taken: the agent settles them by
    // their stored copies (Ready), so nothing holds the schedule's retention.
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let took = wait_until(RECOVERY, || async {
        files.list(&Default::default()).await.is_ok_and(|l| {
            !l.items.is_empty()
                && l.items
                    .iter()
                    .all(|f| f.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
        })
    })
    .await;
    report.timed("every snapshot record Ready (none left Running)", took);
    let (_, esf, _) = kubectl(cluster, &["get", "esf"]);
    eprintln!("e2e-restore: kubectl get esf after the drill:\n{esf}");
    eprintln!(
        "e2e-restore: drill (control plane stopped -> cluster recovered) in {:.1?}",
        drill_started.elapsed()
    );
    report.finish(cluster);
}

/// What the drill saw; with the bump every check must pass, without it the report is printed.
struct Report {
    bump: bool,
    failed: std::cell::RefCell<Vec<String>>,
}

impl Report {
    fn new(bump: bool) -> Report {
        Report {
            bump,
            failed: Default::default(),
        }
    }

    fn check(&self, what: &str, ok: bool, detail: &str) {
        let verdict = if ok { "yes" } else { "NO" };
        eprintln!("e2e-restore: {what}: {verdict} {detail}");
        if !ok {
            self.failed.borrow_mut().push(format!("{what} {detail}"));
        }
    }

    fn timed(&self, what: &str, took: Option<Duration>) {
        match took {
            Some(t) => self.check(what, true, &format!("after {t:.1?}")),
            None => self.check(what, false, &format!("not within {RECOVERY:?}")),
        }
    }

    fn finish(&self, cluster: &Cluster) {
        let failed = self.failed.borrow();
        if !failed.is_empty() {
            eprintln!(
                "e2e-restore: the operator after the drill:\n{}",
                e2e_support::operator_diagnostics(cluster)
            );
        }
        if self.bump {
            assert!(
                failed.is_empty(),
                "after the restore (logs in {}):\n{}",
                cluster.logs_dir().display(),
                failed.join("\n")
            );
        } else {
            eprintln!(
                "e2e-restore: WITHOUT the revision bump, {} check(s) failed:\n{}",
                failed.len(),
                failed.join("\n")
            );
        }
    }
}

/// `helm install --wait` with the image under test and the default schedule saving zstd
/// snapshots locally and to S3 (the chart makes the S3 config Secret).
fn install_operator_with_s3(cluster: &Cluster, s3: &S3Server) {
    e2e_support::build_and_import_operator_image(cluster, OPERATOR_TAG);
    let extra = format!(
        r#"schedule: {{compression: zstd}}
s3:
  enabled: true
  endpoint: "{endpoint}"
  insecure: true
  bucketLookupType: path
  bucket: {BUCKET}
  folder: {FOLDER}
  accessKey: "{access}"
  secretKey: "{secret}"
"#,
        endpoint = s3.host_port(),
        access = s3.access_key,
        secret = s3.secret_key,
    );
    let work = tempfile::tempdir().expect("temp dir");
    let values = work.path().join("values.yaml");
    std::fs::write(
        &values,
        e2e_support::values_yaml(cluster, OPERATOR_TAG, &extra),
    )
    .expect("write values");
    let t = Instant::now();
    e2e_support::install_release(cluster, &values);
    eprintln!("e2e-restore: helm install --wait in {:.1?}", t.elapsed());
}

/// `e2e-cluster.sh stop-control-plane|start-control-plane DIR`.
fn control_plane(cluster: &Cluster, verb: &str) {
    let t = Instant::now();
    let (ok, out, err) = support::run(
        std::process::Command::new(eso_testenv::cluster::cluster_script())
            .arg(verb)
            .arg(cluster.dir())
            .env("ESO_CACHE", eso_testenv::cache_dir()),
    );
    assert!(ok, "e2e-cluster.sh {verb}: {out}\n{err}");
    eprintln!("e2e-restore: {verb} in {:.1?}", t.elapsed());
}

/// The runbook's restore command, run on the node (its network namespace) with etcdutl 3.5.30,
/// the snapshot fetched from S3, the node's etcd name, data dir and peer URL (as in kubeadm's
/// `etcd.yaml`).
fn restore_on_the_node(cluster: &Cluster, s3: &S3Server, snapshot: &str, bump: bool) -> String {
    let etcdutl = EtcdVersion::V3_5_30
        .etcdutl()
        .expect("etcdutl 3.5.30 installed");
    let data_dir = cluster.dir().join("var/lib/etcd");
    let mut cmd = cluster.node_command(env!("CARGO_BIN_EXE_etcd-snapshot"));
    cmd.env("ETCD_SNAPSHOT_ETCDUTL", &etcdutl)
        .args([
            "restore",
            "--cluster-reset",
            &format!("--cluster-reset-restore-path={snapshot}"),
            &format!("--data-dir={}", data_dir.display()),
            &format!("--name={}", cluster.node_name()),
            &format!(
                "--initial-advertise-peer-urls=https://{}:2380",
                cluster.node_ip()
            ),
        ])
        .args(support::s3_flags(s3, BUCKET, FOLDER));
    if !bump {
        cmd.arg("--no-bump-revision");
    }
    let (ok, out, err) = support::run(&mut cmd);
    assert!(
        ok,
        "etcd-snapshot restore on the node failed:\n{out}\n{err}"
    );
    format!("{out}{err}")
}

/// The node's etcd revision (`etcdctl endpoint status` with kubeadm's healthcheck client cert).
fn etcd_revision(cluster: &Cluster) -> i64 {
    let etcdctl = EtcdVersion::V3_5.etcdctl().expect("etcdctl 3.5 installed");
    let pki = cluster.etcd_pki_dir();
    let (ok, out, err) = support::run(
        cluster
            .node_command(etcdctl)
            .arg("--endpoints=https://127.0.0.1:2379")
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!(
                "--cert={}",
                pki.join("healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("healthcheck-client.key").display()
            ))
            .args(["endpoint", "status", "-w", "json"]),
    );
    assert!(ok, "etcdctl endpoint status: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("endpoint status JSON");
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no revision in {out}"))
}

/// The drill's ConfigMaps as `kubectl get` lists them.
fn config_map_names(cluster: &Cluster) -> Vec<String> {
    let (ok, out, err) = kubectl(
        cluster,
        &[
            "get",
            "configmaps",
            "-n",
            NS,
            "-o",
            "name",
            "--sort-by=.metadata.name",
        ],
    );
    if !ok {
        eprintln!("e2e-restore: kubectl get configmaps failed: {err}");
    }
    out.lines()
        .map(|l| l.trim_start_matches("configmap/").to_string())
        .filter(|n| n != "kube-root-ca.crt") // made in every namespace by kube-controller-manager
        .collect()
}

async fn make_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .expect("Namespace JSON");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn make_config_map(cms: &Api<ConfigMap>, name: &str) {
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("made".to_string(), name.to_string())])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
}

/// A plain Deployment of one pause pod, labelled `app=NAME`.
async fn make_deployment(client: &Client, name: &str) {
    let d: Deployment = serde_json::from_str(&format!(
        r#"{{"metadata":{{"name":"{name}"}},"spec":{{"replicas":1,
            "selector":{{"matchLabels":{{"app":"{name}"}}}},
            "template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{
              "tolerations":{TOLERATE_MASTER},"terminationGracePeriodSeconds":1,
              "containers":[{{"name":"pause","image":"{PAUSE_IMAGE}","imagePullPolicy":"Never"}}]}}}}}}}}"#
    ))
    .expect("Deployment JSON");
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
}

/// Wait until the Deployment reports `n` ready replicas; how long it took, or None.
async fn wait_ready_replicas(
    client: &Client,
    name: &str,
    n: i32,
    timeout: Duration,
) -> Option<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let selector = format!("app={name}");
    wait_until(timeout, || async {
        let ready = deployments
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| d.status.and_then(|s| s.ready_replicas) == Some(n));
        let pods = Api::<Pod>::namespaced(client.clone(), NS)
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        ready && pods.len() == n as usize && pods.iter().all(pod_ready)
    })
    .await
}

async fn pod_uids(client: &Client, selector: &str) -> Vec<String> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect()
}

async fn operator_pod_uids(client: &Client) -> Vec<String> {
    Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
        .list(&Default::default())
        .await
        .expect("list operator pods")
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect()
}

/// Every pod of `selector` in the drill's namespace is Ready, and (when given) they are exactly
/// the pods `uids` (nothing was recreated).
async fn pods_ready(client: &Client, selector: &str, uids: Option<&[String]>) -> bool {
    let Ok(list) = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(selector))
        .await
    else {
        return false;
    };
    !list.items.is_empty()
        && list.items.iter().all(pod_ready)
        && uids.is_none_or(|u| {
            let mut got: Vec<String> = list.items.iter().filter_map(|p| p.uid()).collect();
            let mut want = u.to_vec();
            got.sort();
            want.sort();
            got == want
        })
}

/// The operator's pods are the same pods as before the restore and all Ready.
async fn operator_recovered(client: &Client, uids: &[String]) -> bool {
    let Ok(list) = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
        .list(&Default::default())
        .await
    else {
        return false;
    };
    let mut got: Vec<String> = list.items.iter().filter_map(|p| p.uid()).collect();
    let mut want = uids.to_vec();
    got.sort();
    want.sort();
    got == want && list.items.iter().all(pod_ready)
}

/// The name of the newest Ready S3 copy.
async fn newest_ready_s3_snapshot(client: &Client) -> String {
    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    files
        .list(&Default::default())
        .await
        .expect("list ETCDSnapshotFiles")
        .items
        .into_iter()
        .filter(|f| {
            f.spec.location.starts_with("s3://")
                && f.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
        })
        .max_by_key(|f| f.spec.snapshot_name.clone())
        .map(|f| f.spec.snapshot_name)
        .expect("a Ready S3 snapshot after trigger --wait")
}

/// Poll `done` every second until it holds (how long it took) or `timeout` passes (None).
async fn wait_until<F, Fut>(timeout: Duration, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if done().await {
            return Some(t.elapsed());
        }
        if t.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
