//! Harness of the operator integration tests: a real kube-apiserver with the chart's RBAC
//! (`deploy/rbac.yaml`), SeaweedFS, an etcd cluster, Node objects, and the `etcd-snapshot`
//! binary running as real `controller` and `agent` processes under the ServiceAccount users that
//! RBAC binds. Everything stops when the [`OperatorEnv`] is dropped.
#![allow(dead_code)]

use crate::support;
use eso_testenv::{
    ApiServer, ApiServerOptions, ApiUser, EtcdCluster, EtcdOptions, EtcdVersion, Proc, S3Options,
    S3Server, free_port,
};
use etcd_snapshot::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase};
use etcd_snapshot::consts;
use etcd_snapshot::naming::{label_value, parse_snapshot_name, request_label};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The operator's namespace, as in `deploy/rbac.yaml`.
pub const NS: &str = "etcd-snapshot";
/// The controller's ServiceAccount.
pub const CONTROLLER_SA: &str = "etcd-snapshot-controller";
/// The agents' ServiceAccount.
pub const AGENT_SA: &str = "etcd-snapshot-agent";
/// The ServiceAccount of `etcd-snapshot uninstall` (the chart's pre-delete hook).
pub const UNINSTALL_SA: &str = "etcd-snapshot-uninstall";
/// The S3 bucket the environment creates.
pub const BUCKET: &str = "etcd-snapshots";
/// The S3 folder the config Secret names.
pub const FOLDER: &str = "cluster-a";
/// Name of the S3 config Secret made by [`OperatorEnv::create_s3_secret`].
pub const SECRET: &str = "etcd-s3-config";
/// Leader lease timing given to the controllers (`--lease-duration`).
pub const LEASE_DURATION: Duration = Duration::from_secs(3);
/// `--retry-period` given to the controllers.
pub const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(200);
/// Log lines shown per process when a wait fails.
const TAIL: usize = 40;

/// A cron that never fires during a test (runs are requested with the annotation instead).
pub const NEVER: &str = "0 0 1 1 *";

/// An ETCDSnapshotSchedule manifest for a test, e.g.
/// `Schedule::new("nightly").members("All").s3().yaml()`. Its cron is [`NEVER`] unless set.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: String,
    /// Spec lines, indented two spaces.
    spec: String,
    /// Lines of the `s3` block after its Secret reference (indented four spaces), when S3 is on.
    s3: Option<String>,
}

impl Schedule {
    /// A schedule named `name` that never ticks during a test and stores locally.
    pub fn new(name: &str) -> Schedule {
        Schedule {
            name: name.to_string(),
            cron: NEVER.to_string(),
            spec: String::new(),
            s3: None,
        }
    }

    /// Its cron expression.
    pub fn cron(mut self, cron: &str) -> Schedule {
        self.cron = cron.to_string();
        self
    }

    /// More spec lines, as written (indented two spaces, e.g. `"  suspend: true"`).
    pub fn spec(mut self, lines: &str) -> Schedule {
        if !lines.is_empty() {
            self.spec.push_str(lines);
            if !self.spec.ends_with('\n') {
                self.spec.push('\n');
            }
        }
        self
    }

    /// `members: All` or `One`.
    pub fn members(self, members: &str) -> Schedule {
        self.spec(&format!("  members: {members}"))
    }

    /// A local retention count.
    pub fn local_retention(self, count: u32) -> Schedule {
        self.spec(&format!("  local:\n    retention:\n      count: {count}"))
    }

    /// S3 through the config Secret [`SECRET`].
    pub fn s3(self) -> Schedule {
        self.s3_with("")
    }

    /// S3 through the config Secret [`SECRET`], with more lines of the `s3` block (indented four
    /// spaces, e.g. `"    retentionScope: Cluster\n"`).
    pub fn s3_with(mut self, lines: &str) -> Schedule {
        let mut lines = lines.to_string();
        if !lines.is_empty() && !lines.ends_with('\n') {
            lines.push('\n');
        }
        self.s3 = Some(self.s3.unwrap_or_default() + &lines);
        self
    }

    /// An S3 retention count (S3 on).
    pub fn s3_retention(self, count: u32) -> Schedule {
        self.s3_with(&format!("    retention:\n      count: {count}"))
    }

    /// The manifest.
    pub fn yaml(&self) -> String {
        let s3 = self.s3.as_ref().map_or_else(String::new, |lines| {
            format!("  s3:\n    enabled: true\n    configSecretRef:\n      name: {SECRET}\n{lines}")
        });
        format!(
            "apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: {}
spec:
  schedule: \"{}\"
{}{s3}",
            self.name, self.cron, self.spec
        )
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// etcd members (1 or 3).
    pub etcd_members: usize,
    /// etcd release.
    pub etcd_version: EtcdVersion,
    /// Agents `node0..`; agent K talks to member K (modulo the member count).
    pub agents: usize,
    /// Controllers `ctl-1..`, started one after the other (the first becomes leader).
    pub controllers: usize,
    /// RBAC manifest to apply instead of `deploy/rbac.yaml` (for the missing-rule test).
    pub rbac: Option<String>,
    /// A whole rendered install (e.g. `deploy/etcd-snapshot-operator.yaml`) to apply server-side
    /// into a freshly created namespace, instead of `deploy/rbac.yaml`.
    pub manifests: Option<String>,
    /// Extra arguments of every controller (e.g. `--s3-release-after 3s`).
    pub controller_args: Vec<String>,
    /// SeaweedFS options (e.g. a second identity with fewer actions).
    pub s3: S3Options,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        OperatorOptions {
            etcd_members: 1,
            etcd_version: EtcdVersion::V3_5,
            agents: 1,
            controllers: 1,
            rbac: None,
            manifests: None,
            controller_args: Vec::new(),
            s3: S3Options::default(),
        }
    }
}

/// The text of `deploy/rbac.yaml`.
pub fn rbac_yaml() -> String {
    let path = eso_testenv::repo_root().join("deploy/rbac.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// [`rbac_without`], dropping a rule left with no verb (the API server rejects an empty verb
/// list).
pub fn rbac_minus(kind: &str, name: &str, resource: &str, verb: &str) -> String {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&rbac_without(kind, name, resource, verb)) {
        let mut v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("rbac doc");
        if let Some(rules) = v["rules"].as_sequence_mut() {
            rules.retain(|r| r["verbs"].as_sequence().is_some_and(|v| !v.is_empty()));
        }
        out.push(serde_yaml::to_string(&v).expect("render YAML"));
    }
    out.join("---\n")
}

/// `deploy/rbac.yaml` with `verb` removed from the rules on `resource` of the `kind` named
/// `name` (e.g. the controller ClusterRole's `create` on `etcdsnapshotfiles`).
pub fn rbac_without(kind: &str, name: &str, resource: &str, verb: &str) -> String {
    let mut out = Vec::new();
    let mut removed = false;
    for doc in serde_yaml::Deserializer::from_str(&rbac_yaml()) {
        let mut value: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).expect("rbac.yaml document");
        let matches = value["kind"].as_str() == Some(kind)
            && value["metadata"]["name"].as_str() == Some(name);
        if matches && let Some(rules) = value["rules"].as_sequence_mut() {
            for rule in rules {
                let on_resource = rule["resources"]
                    .as_sequence()
                    .is_some_and(|r| r.iter().any(|x| x.as_str() == Some(resource)));
                if on_resource && let Some(verbs) = rule["verbs"].as_sequence_mut() {
                    let before = verbs.len();
                    verbs.retain(|v| v.as_str() != Some(verb));
                    removed |= verbs.len() != before;
                }
            }
        }
        out.push(serde_yaml::to_string(&value).expect("render YAML"));
    }
    assert!(
        removed,
        "rbac.yaml has no {kind}/{name} rule granting {verb} on {resource}"
    );
    out.join("---\n")
}

/// One operator environment at a time per test binary by default: each starts a kube-apiserver
/// (~365 MB) and timing-sensitive processes (3 s leases) on a 2-core machine.
/// `ESO_OPERATOR_PARALLEL=N` allows N at once.
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = std::env::var("ESO_OPERATOR_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        Semaphore::new(n)
    })
}

/// A running operator environment. Fields drop in order: the operator processes first, then the
/// servers, then the scratch directory (logs, snapshot directories).
pub struct OperatorEnv {
    procs: Mutex<BTreeMap<String, Proc>>,
    logs: Mutex<BTreeMap<String, PathBuf>>,
    /// The API server (admin kubeconfig, kubectl).
    pub api: ApiServer,
    /// The etcd cluster the agents snapshot.
    pub etcd: EtcdCluster,
    /// SeaweedFS.
    pub s3: S3Server,
    /// The administrator's client.
    pub admin: Client,
    nodes: Vec<String>,
    controller_args: Vec<String>,
    metrics: Mutex<BTreeMap<String, String>>,
    dir: tempfile::TempDir,
    _slot: SemaphorePermit<'static>,
}

impl OperatorEnv {
    /// Start everything and wait until the first controller leads and every agent has
    /// registered with a healthy etcd member.
    pub async fn start(opts: OperatorOptions) -> OperatorEnv {
        let slot = slots().acquire().await.expect("test slot");
        let api = ApiServer::start(ApiServerOptions {
            users: vec![
                ApiUser::service_account(NS, CONTROLLER_SA),
                ApiUser::service_account(NS, AGENT_SA),
                ApiUser::service_account(NS, UNINSTALL_SA),
            ],
        })
        .expect("start kube-apiserver");
        let admin = support::admin_client(&api).await;
        support::install_crds(&admin).await;
        match &opts.manifests {
            Some(manifests) => {
                let (ok, _, err) =
                    support::run(
                        api.kubectl()
                            .expect("kubectl")
                            .args(["create", "namespace", NS]),
                    );
                assert!(ok, "create namespace: {err}");
                kubectl_apply_server_side(&api, manifests);
            }
            None => kubectl_apply(&api, &opts.rbac.clone().unwrap_or_else(rbac_yaml)),
        }

        let s3 = S3Server::start(opts.s3).expect("start SeaweedFS");
        support::create_bucket(&s3, BUCKET).await;
        let etcd = EtcdCluster::start(EtcdOptions {
            version: opts.etcd_version,
            members: opts.etcd_members,
            tls: false,
        })
        .expect("start etcd");

        let mut dir = tempfile::Builder::new()
            .prefix("eso-operator-")
            .tempdir()
            .expect("temp dir");
        if std::env::var_os("ESO_KEEP_TESTENV").is_some() {
            dir.disable_cleanup(true);
            eprintln!("operator env: keeping {}", dir.path().display());
        }
        let nodes: Vec<String> = (0..opts.agents).map(|k| format!("node{k}")).collect();
        let node_api: Api<Node> = Api::all(admin.clone());
        for name in &nodes {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/hostname".to_string(),
                        name.clone(),
                    )])),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            node_api
                .create(&PostParams::default(), &node)
                .await
                .expect("create Node");
        }

        let env = OperatorEnv {
            procs: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(BTreeMap::new()),
            api,
            etcd,
            s3,
            admin,
            nodes,
            controller_args: opts.controller_args.clone(),
            metrics: Mutex::new(BTreeMap::new()),
            dir,
            _slot: slot,
        };
        for k in 0..opts.agents {
            env.start_agent(k);
        }
        for i in 1..=opts.controllers {
            env.start_controller(&format!("ctl-{i}"));
            if i == 1 {
                env.wait_for_leader("ctl-1", Duration::from_secs(20)).await;
            }
        }
        env.wait_agents_registered(Duration::from_secs(20)).await;
        env
    }

    /// Node names of the agents (`node0`, `node1`, …).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Snapshot directory of an agent.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    fn kubeconfig(&self, sa: &str) -> PathBuf {
        self.api
            .kubeconfig(&format!("system:serviceaccount:{NS}:{sa}"))
            .expect("ServiceAccount kubeconfig")
            .to_path_buf()
    }

    fn spawn(&self, key: &str, args: Vec<String>, sa: &str) {
        if let Some(i) = args.iter().position(|a| a == "--metrics-addr")
            && let Some(addr) = args.get(i + 1)
        {
            self.metrics
                .lock()
                .expect("metrics")
                .insert(key.to_string(), addr.clone());
        }
        // The agents verify snapshots with the restore tool of the etcd release under test.
        let version = self.etcd.options().version;
        let tool = match version {
            EtcdVersion::V3_4 => (etcd_snapshot::cli::restore::ENV_ETCDCTL, version.etcdctl()),
            EtcdVersion::V3_5 | EtcdVersion::V3_5_30 => {
                (etcd_snapshot::cli::restore::ENV_ETCDUTL, version.etcdutl())
            }
        };
        let log = self
            .dir
            .path()
            .join(format!("{}.log", key.replace(' ', "-")));
        let env = [
            (
                "KUBECONFIG".to_string(),
                self.kubeconfig(sa).display().to_string(),
            ),
            (
                "ETCD_SNAPSHOT_LOG".to_string(),
                "info,etcd_snapshot=debug".to_string(),
            ),
            (
                tool.0.to_string(),
                tool.1.map(|p| p.display().to_string()).unwrap_or_default(),
            ),
        ];
        let proc = Proc::spawn_with_env(
            key,
            Path::new(env!("CARGO_BIN_EXE_etcd-snapshot")),
            &args,
            &env,
            &log,
        )
        .unwrap_or_else(|e| panic!("start {key}: {e}"));
        self.logs.lock().expect("logs").insert(key.to_string(), log);
        self.procs
            .lock()
            .expect("procs")
            .insert(key.to_string(), proc);
    }

    /// Start a controller with leader identity `id` (as the controller ServiceAccount). A flag
    /// given in [`OperatorOptions::controller_args`] replaces the default one.
    pub fn start_controller(&self, id: &str) {
        let metrics = format!("127.0.0.1:{}", free_port());
        let defaults = [
            ("--namespace", NS),
            ("--identity", id),
            ("--metrics-addr", &metrics),
            ("--lease-duration", "3s"),
            ("--renew-deadline", "2s"),
            ("--retry-period", "500ms"),
            ("--resync", "5s"),
            ("--s3-sync-interval", "2s"),
        ];
        let overridden = |flag: &str| {
            self.controller_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let args = std::iter::once("controller".to_string())
            .chain(
                defaults
                    .iter()
                    .filter(|(flag, _)| !overridden(flag))
                    .flat_map(|(flag, value)| [flag.to_string(), value.to_string()]),
            )
            .chain(self.controller_args.iter().cloned())
            .collect();
        self.spawn(&format!("controller {id}"), args, CONTROLLER_SA);
    }

    /// Whether the process `key` (`"controller ctl-1"`, `"agent node0"`) is still running.
    pub fn is_running(&self, key: &str) -> bool {
        self.procs
            .lock()
            .expect("procs")
            .get_mut(key)
            .is_some_and(|p| p.check_running().is_ok())
    }

    /// Kill controller `id` with SIGKILL (no lease release).
    pub fn kill_controller(&self, id: &str) {
        self.kill(&format!("controller {id}"));
    }

    /// Start the agent of `node{k}` (as the agent ServiceAccount), on etcd member k.
    pub fn start_agent(&self, k: usize) {
        self.start_agent_process(k, &format!("agent node{k}"));
    }

    /// Start a second agent of `node{k}` beside the running one (same directory and member, its
    /// own metrics port), as a rollout starts the new pod while the old one is still stopping.
    /// Returns its process key.
    pub fn start_replacement_agent(&self, k: usize) -> String {
        let key = format!("agent node{k} (replacement)");
        self.start_agent_process(k, &key);
        key
    }

    fn start_agent_process(&self, k: usize, key: &str) {
        let node = format!("node{k}");
        let member = k % self.etcd.endpoints().len();
        let args = [
            "agent",
            "--node-name",
            &node,
            "--namespace",
            NS,
            "--dir",
            &self.node_dir(&node).display().to_string(),
            "--etcd-endpoint",
            &self.etcd.endpoint(member),
            "--heartbeat",
            "1s",
            "--sync-interval",
            "5s",
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
        ];
        self.spawn(key, args.iter().map(|s| s.to_string()).collect(), AGENT_SA);
    }

    /// Kill the agent of `node` with SIGKILL.
    pub fn kill_agent(&self, node: &str) {
        self.kill(&format!("agent {node}"));
    }

    /// Send SIGTERM to process `key` (as the kubelet does when a pod is deleted) and wait for it
    /// to exit; returns how long it took. Panics (with the logs) if it was still running after
    /// `limit`, when it is SIGKILLed.
    pub fn terminate(&self, key: &str, limit: Duration) -> Duration {
        let mut proc = self
            .procs
            .lock()
            .expect("procs")
            .remove(key)
            .unwrap_or_else(|| panic!("no running process {key:?}"));
        let start = Instant::now();
        tokio::task::block_in_place(|| proc.terminate(limit));
        let took = start.elapsed();
        assert!(
            took < limit,
            "{key} was still running {limit:?} after SIGTERM and was killed\n{}",
            self.diagnostics()
        );
        took
    }

    fn kill(&self, key: &str) {
        let mut proc = self
            .procs
            .lock()
            .expect("procs")
            .remove(key)
            .unwrap_or_else(|| panic!("no running process {key:?}"));
        proc.kill();
    }

    /// The `/metrics` text of a running process (`"agent node0"`, `"controller ctl-1"`).
    pub async fn metrics_text(&self, key: &str) -> String {
        let addr = self
            .metrics
            .lock()
            .expect("metrics")
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("no metrics address for {key:?}"));
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {key} metrics at {addr}: {e}"));
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("metrics request");
        let mut out = String::new();
        stream
            .read_to_string(&mut out)
            .await
            .expect("metrics response");
        out
    }

    /// Events (events.k8s.io, where the operator's Recorder writes them) about the object named
    /// `name`, as `(reason, note)`.
    pub async fn events_about(&self, name: &str) -> Vec<(String, String)> {
        self.events_of_type(name, None).await
    }

    /// (reason, note) of each Warning Event about the object named `name`.
    pub async fn warnings_about(&self, name: &str) -> Vec<(String, String)> {
        self.events_of_type(name, Some("Warning")).await
    }

    async fn events_of_type(&self, name: &str, type_: Option<&str>) -> Vec<(String, String)> {
        use k8s_openapi::api::events::v1::Event;
        let mut out = Vec::new();
        for ns in ["default", NS, "kube-system"] {
            let events: Api<Event> = Api::namespaced(self.admin.clone(), ns);
            let Ok(list) = events.list(&ListParams::default()).await else {
                continue;
            };
            for e in list.items {
                let about = e.regarding.as_ref().and_then(|r| r.name.as_deref());
                if about == Some(name) && type_.is_none_or(|t| e.type_.as_deref() == Some(t)) {
                    out.push((
                        e.reason.clone().unwrap_or_default(),
                        e.note.clone().unwrap_or_default(),
                    ));
                }
            }
        }
        out
    }

    /// Namespaces of the events with `reason` about the object named `name`.
    pub async fn event_namespaces(&self, name: &str, reason: &str) -> Vec<String> {
        use k8s_openapi::api::events::v1::Event;
        let events: Api<Event> = Api::all(self.admin.clone());
        let Ok(list) = events.list(&ListParams::default()).await else {
            return Vec::new();
        };
        list.items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .filter_map(|e| e.metadata.namespace)
            .collect()
    }

    /// Create or update the S3 config Secret [`SECRET`] pointing at `endpoint` (e.g. a proxy in
    /// front of SeaweedFS), with extra keys (e.g. `etcd-s3-timeout`).
    pub async fn create_s3_secret_at(&self, endpoint: &str, extra: &[(&str, &str)]) {
        use consts::secret_keys as k;
        let mut data: Vec<(&str, String)> = vec![
            (k::ENDPOINT, endpoint.to_string()),
            (k::ACCESS_KEY, self.s3.access_key.clone()),
            (k::SECRET_KEY, self.s3.secret_key.clone()),
            (k::BUCKET, BUCKET.to_string()),
            (k::FOLDER, FOLDER.to_string()),
            (k::BUCKET_LOOKUP_TYPE, "path".to_string()),
            (k::INSECURE, "true".to_string()),
            (k::REGION, self.s3.region.clone()),
        ];
        data.extend(extra.iter().map(|(key, v)| (*key, v.to_string())));
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            type_: Some(consts::SECRET_TYPE.into()),
            data: Some(
                data.into_iter()
                    .map(|(key, v)| (key.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.admin.clone(), NS)
            .patch(
                SECRET,
                &PatchParams::apply("eso-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply S3 config Secret");
    }

    /// The log of a process (also after it was killed).
    pub fn log(&self, key: &str) -> String {
        let path = self.logs.lock().expect("logs").get(key).cloned();
        path.map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Keys of every process started (also those killed since), for [`Self::log`].
    pub fn process_names(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The log of controller `id`.
    pub fn controller_log(&self, id: &str) -> String {
        self.log(&format!("controller {id}"))
    }

    /// Which processes have exited, and the last lines of every log.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        if let Ok(mut procs) = self.procs.lock() {
            for (name, proc) in procs.iter_mut() {
                if let Err(e) = proc.check_running() {
                    out.push_str(&format!("!! {name} is not running: {e}\n"));
                }
            }
        }
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "---- {name}: last {TAIL} lines of {} ----\n{}\n",
                path.display(),
                lines[lines.len().saturating_sub(TAIL)..].join("\n")
            ));
        }
        out
    }

    /// Poll `check` every 200 ms until it returns `Some`; panic after `timeout` with `what` and
    /// the tails of the controller and agent logs.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n{}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fail if any operator process logged a 403 (a permission `deploy/rbac.yaml` lacks).
    pub fn assert_no_forbidden(&self) {
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let denied: Vec<&str> = text
                .lines()
                .filter(|l| l.to_lowercase().contains("forbidden"))
                .collect();
            assert!(
                denied.is_empty(),
                "{name} was refused by RBAC (deploy/rbac.yaml lacks a rule):\n{}",
                denied.join("\n")
            );
        }
    }

    /// Holder of the controller's leader Lease.
    pub async fn leader(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), NS);
        leases
            .get_opt(consts::LEADER_LEASE)
            .await
            .expect("read leader lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    }

    /// Wait until `id` holds the leader Lease; returns how long it took.
    pub async fn wait_for_leader(&self, id: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        self.wait_until(
            &format!("controller {id} to hold the leader lease"),
            timeout,
            async || (self.leader().await.as_deref() == Some(id)).then_some(()),
        )
        .await;
        start.elapsed()
    }

    /// Wait until the agent of `node` has renewed its registration after `since` (a restarted
    /// agent is live again).
    pub async fn wait_agent_renewed(&self, node: &str, since: jiff::Timestamp) {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), NS);
        let name = etcd_snapshot::operator::AgentInfo::lease_name(node);
        self.wait_until(
            &format!("the agent of {node} to renew its registration"),
            Duration::from_secs(20),
            async || {
                let renewed = leases.get_opt(&name).await.ok()??.spec?.renew_time?.0;
                (renewed > since).then_some(())
            },
        )
        .await;
    }

    async fn wait_agents_registered(&self, timeout: Duration) {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), NS);
        let lp = ListParams::default().labels(&format!("{}=true", consts::LABEL_AGENT));
        let want = self.nodes.len();
        self.wait_until(
            &format!("{want} agents to register with a healthy etcd member"),
            timeout,
            async || {
                let healthy = leases
                    .list(&lp)
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|l| {
                        l.annotations()
                            .get(consts::ANNOTATION_ETCD_HEALTH)
                            .is_some_and(|h| h == "true")
                    })
                    .count();
                (healthy == want).then_some(())
            },
        )
        .await;
    }

    /// The `etcd-snapshot` binary with the kubeconfig of ServiceAccount `sa`.
    pub fn cli_as(&self, sa: &str) -> Command {
        let mut cmd = support::cli();
        cmd.env("KUBECONFIG", self.kubeconfig(sa));
        cmd
    }

    /// `kubectl auth can-i VERB RESOURCE` for ServiceAccount `sa` (in namespace `ns`, if given).
    pub fn can_i(&self, sa: &str, verb: &str, resource: &str, ns: Option<&str>) -> bool {
        let mut cmd = self.kubectl();
        cmd.args(["auth", "can-i", verb, resource])
            .arg(format!("--as=system:serviceaccount:{NS}:{sa}"));
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let (_, out, _) = support::run(&mut cmd);
        out.trim() == "yes"
    }

    /// Wait until RBAC answers `want` for [`Self::can_i`] (the API server has taken an RBAC
    /// change).
    pub async fn wait_can_i(
        &self,
        sa: &str,
        verb: &str,
        resource: &str,
        ns: Option<&str>,
        want: bool,
    ) {
        self.wait_until(
            &format!("can-i {verb} {resource} for {sa} to be {want}"),
            Duration::from_secs(20),
            async || (self.can_i(sa, verb, resource, ns) == want).then_some(()),
        )
        .await;
    }

    /// `kubectl` as the administrator.
    pub fn kubectl(&self) -> Command {
        self.api.kubectl().expect("kubectl")
    }

    /// `kubectl apply -f -` of a manifest, as the administrator.
    pub fn apply(&self, yaml: &str) {
        kubectl_apply(&self.api, yaml);
    }

    /// Create or update the S3 config Secret [`SECRET`] for SeaweedFS, with `secret_key` (the
    /// server's real one when `None`).
    pub async fn create_s3_secret(&self, secret_key: Option<&str>) {
        let keys = (
            self.s3.access_key.clone(),
            secret_key.unwrap_or(&self.s3.secret_key).to_string(),
        );
        self.create_s3_secret_with_keys(keys).await;
    }

    /// Create or update the S3 config Secret [`SECRET`] with these access and secret keys (e.g.
    /// [`eso_testenv::S3Server::limited_keys`]).
    pub async fn create_s3_secret_with_keys(&self, (access_key, secret_key): (String, String)) {
        use consts::secret_keys as k;
        let data = [
            (k::ENDPOINT, self.s3.host_port()),
            (k::ACCESS_KEY, access_key),
            (k::SECRET_KEY, secret_key),
            (k::BUCKET, BUCKET.to_string()),
            (k::FOLDER, FOLDER.to_string()),
            (k::BUCKET_LOOKUP_TYPE, "path".to_string()),
            (k::INSECURE, "true".to_string()),
            (k::REGION, self.s3.region.clone()),
        ];
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            type_: Some(consts::SECRET_TYPE.into()),
            data: Some(
                data.into_iter()
                    .map(|(key, v)| (key.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.admin.clone(), NS)
            .patch(
                SECRET,
                &PatchParams::apply("eso-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply S3 config Secret");
    }

    /// Request an on-demand run of `schedule` through the `requested-at` annotation; returns the
    /// value set. Waits first until the clock is past the second of every existing snapshot of
    /// the schedule: snapshot names carry Unix seconds, so two runs within one second would get
    /// the same names.
    pub async fn request_run(&self, schedule: &str) -> String {
        let newest = self
            .files(&format!(
                "{}={}",
                consts::LABEL_SCHEDULE,
                label_value(schedule)
            ))
            .await
            .iter()
            .filter_map(|f| parse_snapshot_name(&f.spec.snapshot_name).map(|p| p.unix_seconds))
            .max()
            .unwrap_or(0);
        self.wait_until(
            "the clock to pass the newest snapshot's second",
            Duration::from_secs(3),
            async || (jiff::Timestamp::now().as_second() > newest).then_some(()),
        )
        .await;
        let value = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({
            "metadata": {"annotations": {consts::ANNOTATION_REQUESTED_AT: value}}
        });
        Api::<ETCDSnapshotSchedule>::all(self.admin.clone())
            .patch(schedule, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate schedule");
        value
    }

    /// The ESF API (as the administrator).
    pub fn files_api(&self) -> Api<ETCDSnapshotFile> {
        Api::all(self.admin.clone())
    }

    /// ESFs matching a label selector (`""` for all), sorted by name.
    pub async fn files(&self, selector: &str) -> Vec<ETCDSnapshotFile> {
        let mut items = self
            .files_api()
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list ESFs")
            .items;
        items.sort_by_key(|f| f.name_any());
        items
    }

    /// ESFs of the on-demand run requested with `value`.
    pub async fn run_files(&self, value: &str) -> Vec<ETCDSnapshotFile> {
        self.files(&format!(
            "{}={}",
            consts::LABEL_REQUEST,
            request_label(value)
        ))
        .await
    }

    /// Wait until the run requested with `value` has exactly `copies` ESFs and every one is
    /// Ready or Failed; return them.
    pub async fn wait_run_finished(
        &self,
        value: &str,
        copies: usize,
        timeout: Duration,
    ) -> Vec<ETCDSnapshotFile> {
        self.wait_until(
            &format!("{copies} finished ESFs of the run requested at {value}"),
            timeout,
            async || {
                let files = self.run_files(value).await;
                (files.len() == copies && files.iter().all(finished)).then_some(files)
            },
        )
        .await
    }

    /// As [`Self::wait_run_finished`], and assert every copy is Ready.
    pub async fn wait_run_ready(
        &self,
        value: &str,
        copies: usize,
        timeout: Duration,
    ) -> Vec<ETCDSnapshotFile> {
        let files = self.wait_run_finished(value, copies, timeout).await;
        let failed: Vec<String> = files
            .iter()
            .filter(|f| phase(f) != Phase::Ready)
            .map(|f| format!("{}: {:?} {}", f.name_any(), phase(f), error_message(f)))
            .collect();
        assert!(
            failed.is_empty(),
            "copies of the run requested at {value} failed: {failed:?}\n{}",
            self.diagnostics()
        );
        files
    }

    /// Delete a Node object.
    pub async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.admin.clone())
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Node");
    }

    /// Keys of the snapshot objects under the S3 folder (without `.metadata/` objects).
    pub async fn s3_keys(&self) -> Vec<String> {
        support::s3_keys(&self.s3, BUCKET, FOLDER).await
    }

    /// Body and user metadata of an S3 object, or `None` when it does not exist.
    pub async fn s3_object(
        &self,
        key: &str,
    ) -> Option<(Vec<u8>, std::collections::HashMap<String, String>)> {
        let got = support::s3_client(&self.s3)
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        let meta = got.metadata().cloned().unwrap_or_default();
        let body = got.body.collect().await.expect("S3 body").into_bytes();
        Some((body.to_vec(), meta))
    }

    /// Multipart uploads in progress under the test folder, as (key, upload id).
    pub async fn multipart_uploads(&self) -> Vec<(String, String)> {
        let out = support::s3_client(&self.s3)
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(format!("{FOLDER}/"))
            .send()
            .await
            .expect("list multipart uploads");
        out.uploads()
            .iter()
            .filter_map(|u| Some((u.key()?.to_string(), u.upload_id()?.to_string())))
            .collect()
    }

    /// Snapshot file names in a node's directory (as the agent's directory listing sees them).
    pub fn local_snapshots(&self, node: &str) -> Vec<String> {
        let dir = etcd_snapshot::storage::local::LocalDir::new(&self.node_dir(node));
        let mut names: Vec<String> = dir
            .list()
            .expect("list snapshot dir")
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        names
    }
}

fn kubectl_apply(api: &ApiServer, yaml: &str) {
    kubectl_apply_args(api, yaml, &["apply", "-f", "-"]);
}

/// `kubectl apply --server-side` (taking over fields another manager set, e.g. the CRDs).
fn kubectl_apply_server_side(api: &ApiServer, yaml: &str) {
    kubectl_apply_args(
        api,
        yaml,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
    );
}

fn kubectl_apply_args(api: &ApiServer, yaml: &str, args: &[&str]) {
    let mut child = api
        .kubectl()
        .expect("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The phase of an ESF (`Pending` without status).
pub fn phase(f: &ETCDSnapshotFile) -> Phase {
    f.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// Ready or Failed.
pub fn finished(f: &ETCDSnapshotFile) -> bool {
    matches!(phase(f), Phase::Ready | Phase::Failed)
}

/// The status error message of an ESF (empty without one).
pub fn error_message(f: &ETCDSnapshotFile) -> String {
    f.status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .and_then(|e| e.message.clone())
        .unwrap_or_default()
}

/// Whether an ESF is a local copy (by its storage label).
pub fn is_local(f: &ETCDSnapshotFile) -> bool {
    f.labels()
        .get(consts::LABEL_STORAGE)
        .is_some_and(|s| s != consts::STORAGE_S3)
}

/// The path of a local ESF's file.
pub fn local_path(f: &ETCDSnapshotFile) -> PathBuf {
    PathBuf::from(
        f.spec
            .location
            .strip_prefix("file://")
            .unwrap_or_else(|| panic!("{} is not a file:// location", f.spec.location)),
    )
}

/// The object key of an S3 ESF in [`BUCKET`].
pub fn s3_key(f: &ETCDSnapshotFile) -> String {
    f.spec
        .location
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap_or_else(|| panic!("{} is not in s3://{BUCKET}/", f.spec.location))
        .to_string()
}

/// The recorded sha256 of an ESF.
pub fn recorded_sha256(f: &ETCDSnapshotFile) -> String {
    f.status
        .as_ref()
        .and_then(|s| s.sha256.clone())
        .unwrap_or_else(|| panic!("{} has no status.sha256", f.name_any()))
}

/// Hex sha256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
