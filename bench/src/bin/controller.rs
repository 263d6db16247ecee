//! Controller at scale (`make bench-controller`): a real kube-apiserver with the chart's RBAC and
//! audit logging, a real etcd and agent, `BENCH_SCHEDULES` schedules (default 50) and
//! `BENCH_FILES` Ready local snapshot records (default 10,000) with their files on disk. Then the
//! release `etcd-snapshot controller` starts as its ServiceAccount and the harness measures:
//! - time from process start to steady state (every schedule's status counts all its records),
//! - the controller's RSS (peak and at the end of the idle window),
//! - API requests per minute while idle (from the API server's audit log, by user, verb and
//!   resource), over `BENCH_IDLE_SECONDS` (default 180),
//! - time to prune `BENCH_PRUNE` records (default 1,000: retention lowered on some schedules),
//!   until the records are gone and the agent has deleted their files,
//! - the agent's RSS (sampled from its start: once it has looked at all its node's records, at
//!   the end of the idle window, and the peak), against [`AGENT_RSS_TARGET_MIB`].
//!
//! Results are printed and written to `target/bench/controller.md` (or `$BENCH_OUT/…`).

use eso_testenv::{ApiServer, ApiServerOptions, ApiUser, EtcdCluster, EtcdOptions, EtcdVersion};
use eso_testenv::{Proc, free_port};
use etcd_snapshot::api::{Compression, ETCDSnapshotFile, ETCDSnapshotSchedule, Storage};
use etcd_snapshot::consts;
use etcd_snapshot::naming::{label_value, snapshot_name};
use etcd_snapshot::operator::patch_file_status;
use etcd_snapshot::storage::catalog::StoredCopy;
use etcd_snapshot::storage::local::LocalDir;
use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const NS: &str = "etcd-snapshot";
const CONTROLLER_SA: &str = "etcd-snapshot-controller";
const AGENT_SA: &str = "etcd-snapshot-agent";
const NODE: &str = "bench-node";
/// Never fires during a run: the benchmark measures the controller at rest and while pruning.
const CRON: &str = "0 0 1 1 *";
/// The agent's RSS target with `BENCH_FILES` (10,000) records of its node.
const AGENT_RSS_TARGET_MIB: f64 = 64.0;
/// The controller's RSS target.
const CONTROLLER_RSS_TARGET_MIB: f64 = 150.0;

struct Opts {
    files: usize,
    schedules: usize,
    idle: Duration,
    prune: usize,
    bin: PathBuf,
    out: PathBuf,
}

fn env_num(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number").into()),
        Err(_) => Ok(default),
    }
}

fn opts() -> Result<Opts> {
    let root = eso_testenv::repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let o = Opts {
        files: usize::try_from(env_num("BENCH_FILES", 10_000)?)?,
        schedules: usize::try_from(env_num("BENCH_SCHEDULES", 50)?)?,
        idle: Duration::from_secs(env_num("BENCH_IDLE_SECONDS", 180)?),
        prune: usize::try_from(env_num("BENCH_PRUNE", 1_000)?)?,
        bin: std::env::var_os("ESO_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release/etcd-snapshot")),
        out: std::env::var_os("BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("bench")),
    };
    if o.schedules == 0 || o.files < o.schedules || o.prune > o.files / 2 {
        return Err("need BENCH_SCHEDULES >= 1, BENCH_FILES >= BENCH_SCHEDULES and BENCH_PRUNE <= BENCH_FILES/2".into());
    }
    if !o.bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release` (make bench does)",
            o.bin.display()
        )
        .into());
    }
    Ok(o)
}

async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn kubectl(api: &ApiServer, args: &[&str]) -> Result<()> {
    let out = api.kubectl()?.args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Resident set size (current, peak) of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Audit events (one per request: only the RequestReceived stage is logged) after `offset`.
fn audit_counts(log: &Path, offset: u64) -> Result<BTreeMap<(String, String), u64>> {
    let mut f = std::fs::File::open(log)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut counts = BTreeMap::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let user = v["user"]["username"].as_str().unwrap_or("?");
        let who = if user.ends_with(CONTROLLER_SA) {
            "controller"
        } else if user.ends_with(AGENT_SA) {
            "agent"
        } else {
            continue;
        };
        let what = format!(
            "{} {}",
            v["verb"].as_str().unwrap_or("?"),
            v["objectRef"]["resource"].as_str().unwrap_or("-")
        );
        *counts.entry((who.to_string(), what)).or_insert(0) += 1;
    }
    Ok(counts)
}

/// `etcd_snapshot_reconcile_total{controller="agent"}` from the agent's /metrics.
async fn agent_reconciles(addr: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find(|l| {
            l.starts_with("etcd_snapshot_reconcile_total{") && l.contains("controller=\"agent\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn schedule_name(i: usize) -> String {
    format!("bench-s{i:02}")
}

async fn create_schedules(client: &Client, o: &Opts, per: usize) -> Result<()> {
    let api: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    for i in 0..o.schedules {
        let name = schedule_name(i);
        let s: ETCDSnapshotSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdsnapshot.io/v1",
            "kind": "ETCDSnapshotSchedule",
            "metadata": { "name": name },
            "spec": {
                "schedule": CRON,
                "namePrefix": name,
                "local": { "enabled": true, "retention": { "count": per } },
            }
        }))?;
        api.create(&PostParams::default(), &s).await?;
    }
    Ok(())
}

/// Write the files and create their Ready records (as the agent records its snapshots, plus the
/// schedule label), `per` for each schedule, one a minute going back from now.
async fn create_files(client: &Client, o: &Opts, dir: &LocalDir, per: usize) -> Result<()> {
    dir.ensure()?;
    let api: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let now = jiff::Timestamp::now().as_second();
    let mut jobs = Vec::new();
    for s in 0..o.schedules {
        for k in 0..per {
            jobs.push((s, k));
        }
    }
    let content = vec![0u8; 4096];
    for (s, k) in &jobs {
        let name = snapshot_name(
            &schedule_name(*s),
            NODE,
            now - 60 * (*k as i64 + 1),
            Compression::None,
        );
        std::fs::write(dir.path().join(&name), &content)?;
    }
    let done = AtomicU64::new(0);
    futures::stream::iter(jobs.into_iter().map(Ok::<_, Box<dyn Error + Send + Sync>>))
        .try_for_each_concurrent(32, |(s, k)| {
            let api = api.clone();
            let done = &done;
            async move {
                let schedule = schedule_name(s);
                let unix = now - 60 * (k as i64 + 1);
                let name = snapshot_name(&schedule, NODE, unix, Compression::None);
                let copy = StoredCopy {
                    storage: Storage::Local,
                    location: dir.location(&name),
                    name,
                    node_name: NODE.to_string(),
                    size: 4096,
                    created_unix: unix,
                    compression: Compression::None,
                    sha256: Some(
                        "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7".into(),
                    ),
                    cluster_id: None,
                    revision: Some(1000 + unix),
                    s3: None,
                    encryption: None,
                };
                let mut esf = copy.to_esf();
                let status = esf.status.take().ok_or("no status")?;
                esf.spec.schedule_name = Some(schedule.clone());
                esf.labels_mut()
                    .insert(consts::LABEL_SCHEDULE.into(), label_value(&schedule));
                esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
                let created = api.create(&PostParams::default(), &esf).await?;
                patch_file_status(&api, &created.name_any(), &status, "eso-bench").await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(2000) {
                    eprintln!("  {n} records");
                }
                Ok(())
            }
        })
        .await
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("{what}: not reached within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every schedule's status counts `per` Ready records.
async fn steady(client: &Client, per: usize) -> Result<bool> {
    let api: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .all(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.ready_snapshots as usize == per
                    && st.observed_generation == s.metadata.generation
            })
        }))
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    let per = o.files / o.schedules;
    let total = per * o.schedules;
    let mut work = tempfile::Builder::new()
        .prefix("eso-bench-ctl-")
        .tempdir()?;
    if std::env::var_os("BENCH_KEEP").is_some() {
        work.disable_cleanup(true);
        eprintln!("keeping {}", work.path().display());
    }
    let audit_log = work.path().join("audit.log");
    let policy = work.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, ResponseComplete]\nrules:\n- level: Metadata\n  users: [\"system:serviceaccount:{NS}:{CONTROLLER_SA}\", \"system:serviceaccount:{NS}:{AGENT_SA}\"]\n- level: None\n"
        ),
    )?;
    eprintln!(
        "starting kube-apiserver (audit log {})",
        audit_log.display()
    );
    let api = ApiServer::start_with_args(
        ApiServerOptions {
            users: vec![
                ApiUser::service_account(NS, CONTROLLER_SA),
                ApiUser::service_account(NS, AGENT_SA),
            ],
        },
        &[
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
        ],
    )?;
    let admin = client_from(api.admin_kubeconfig()).await?;
    let root = eso_testenv::repo_root();
    let crds = root.join("crds/etcdsnapshot.io.yaml");
    kubectl(&api, &["apply", "-f", &crds.display().to_string()])?;
    kubectl(
        &api,
        &[
            "wait",
            "--for=condition=established",
            "crd/etcdsnapshotfiles.etcdsnapshot.io",
            "crd/etcdsnapshotschedules.etcdsnapshot.io",
        ],
    )?;
    kubectl(&api, &["create", "namespace", NS])?;
    let rbac = root.join("deploy/rbac.yaml");
    kubectl(&api, &["apply", "-f", &rbac.display().to_string()])?;
    let node = Node {
        metadata: ObjectMeta {
            name: Some(NODE.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node)
        .await?;

    let etcd = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: false,
    })?;
    let dir = LocalDir::new(&work.path().join("snapshots"));
    eprintln!("creating {} schedules and {total} records", o.schedules);
    let t = Instant::now();
    create_schedules(&admin, &o, per).await?;
    create_files(&admin, &o, &dir, per).await?;
    let setup = t.elapsed();

    let kubeconfig = |sa: &str| -> Result<String> {
        Ok(api
            .kubeconfig(&format!("system:serviceaccount:{NS}:{sa}"))
            .ok_or("no ServiceAccount kubeconfig")?
            .display()
            .to_string())
    };
    let log_env = ("ETCD_SNAPSHOT_LOG".to_string(), "info".to_string());
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let agent = Proc::spawn_with_env(
        "agent",
        &o.bin,
        &[
            "agent".into(),
            "--node-name".into(),
            NODE.into(),
            "--namespace".into(),
            NS.into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--etcd-endpoint".into(),
            etcd.endpoint(0),
            "--metrics-addr".into(),
            agent_metrics.clone(),
        ],
        &[
            ("KUBECONFIG".into(), kubeconfig(AGENT_SA)?),
            log_env.clone(),
        ],
        &work.path().join("agent.log"),
    )?;
    let agent_pid = agent.pid().ok_or("agent has no pid")?;
    let agent_peak = Arc::new(AtomicU64::new(0));
    let agent_sampler = {
        let peak = agent_peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = rss_kib(agent_pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    wait_for("agent registered", Duration::from_secs(60), || {
        let leases = leases.clone();
        async move {
            Ok(leases
                .get_opt(&format!("etcd-snapshot-agent-{NODE}"))
                .await?
                .is_some())
        }
    })
    .await?;
    // Let the agent finish its first look at its records (each reconciled once) before the
    // controller starts.
    wait_for(
        "agent reconciled every record",
        Duration::from_secs(600),
        || {
            let addr = agent_metrics.clone();
            async move { Ok(agent_reconciles(&addr).await.unwrap_or(0) >= total as u64) }
        },
    )
    .await?;
    let agent_rss_started = rss_kib(agent_pid).map(|r| r.0).unwrap_or(0);

    eprintln!("starting the controller");
    let audit_at_start = file_len(&audit_log);
    let started = Instant::now();
    let controller = Proc::spawn_with_env(
        "controller",
        &o.bin,
        &[
            "controller".into(),
            "--namespace".into(),
            NS.into(),
            "--identity".into(),
            "bench".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", free_port()),
        ],
        &[
            ("KUBECONFIG".into(), kubeconfig(CONTROLLER_SA)?),
            log_env.clone(),
        ],
        &work.path().join("controller.log"),
    )?;
    let pid = controller.pid().ok_or("controller has no pid")?;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let to_steady = wait_for("steady state", Duration::from_secs(600), || {
        let admin = admin.clone();
        async move { steady(&admin, per).await }
    })
    .await?;
    let to_steady = started.elapsed().max(to_steady);
    let startup_requests: u64 = audit_counts(&audit_log, audit_at_start)?
        .iter()
        .filter(|((who, _), _)| who == "controller")
        .map(|(_, n)| n)
        .sum();
    let rss_steady = rss_kib(pid).map(|r| r.0).unwrap_or(0);
    eprintln!(
        "steady after {:.1}s; idle for {}s",
        to_steady.as_secs_f64(),
        o.idle.as_secs()
    );

    // Idle: settle for 10 s, then count requests.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_from = file_len(&audit_log);
    tokio::time::sleep(o.idle).await;
    let idle_counts = audit_counts(&audit_log, idle_from)?;
    let rss_idle = rss_kib(pid).map(|r| r.0).unwrap_or(0);
    let agent_rss = rss_kib(agent_pid).map(|r| r.0).unwrap_or(0);

    // Prune: lower retention by 100 on enough schedules to drop `prune` records.
    let drop_each = (per / 2).clamp(1, 100);
    let schedules_to_prune = o.prune.div_ceil(drop_each).min(o.schedules);
    let pruned = drop_each * schedules_to_prune;
    let esfs: Api<ETCDSnapshotFile> = Api::all(admin.clone());
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(admin.clone());
    eprintln!("pruning {pruned} records ({schedules_to_prune} schedules keep {drop_each} fewer)");
    let prune_from = file_len(&audit_log);
    let t = Instant::now();
    for i in 0..schedules_to_prune {
        let patch =
            serde_json::json!({"spec": {"local": {"retention": {"count": per - drop_each}}}});
        schedules
            .patch(
                &schedule_name(i),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let left = total - pruned;
    let records_gone = wait_for("records pruned", Duration::from_secs(900), || {
        let esfs = esfs.clone();
        async move {
            let list = esfs.list(&ListParams::default()).await?.items;
            Ok(list.len() == left)
        }
    })
    .await?;
    let files_gone = t.elapsed().max(records_gone);
    let files_now = count_files(dir.path());
    let prune_counts = audit_counts(&audit_log, prune_from)?;
    let peak_rss = peak
        .load(Ordering::Relaxed)
        .max(rss_kib(pid).map(|r| r.1).unwrap_or(0));
    sampler.abort();
    let agent_peak_rss = agent_peak
        .load(Ordering::Relaxed)
        .max(rss_kib(agent_pid).map(|r| r.1).unwrap_or(0));
    agent_sampler.abort();

    let minutes = o.idle.as_secs_f64() / 60.0;
    let mut table = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    table.push_str(&format!(
        "{total} ETCDSnapshotFiles (Ready, local, one node) over {} schedules; real kube-apiserver v1.20 + etcd 3.5; controller and agent as their ServiceAccounts with deploy/rbac.yaml; release build; default flags (resync 5m, S3 sync 10m).\n\n",
        o.schedules
    ));
    table.push_str("| measure | value | target |\n|---|---|---|\n");
    table.push_str(&format!(
        "| setup: create {total} records (admin, 32 in parallel, create + status) | {:.1} s | - |\n",
        setup.as_secs_f64()
    ));
    table.push_str(&format!(
        "| controller start → steady state (every schedule's status counts its {per} records) | {:.1} s | <= 30 s |\n",
        to_steady.as_secs_f64()
    ));
    table.push_str(&format!(
        "| controller API requests from start to steady state | {startup_requests} | - |\n"
    ));
    table.push_str(&format!(
        "| controller RSS at steady state / after {}s idle / peak | {:.1} / {:.1} / {:.1} MiB | <= {CONTROLLER_RSS_TARGET_MIB} MiB |\n",
        o.idle.as_secs(),
        mib(rss_steady),
        mib(rss_idle),
        mib(peak_rss)
    ));
    for who in ["controller", "agent"] {
        let n: u64 = idle_counts
            .iter()
            .filter(|((w, _), _)| w == who)
            .map(|(_, n)| n)
            .sum();
        let detail: Vec<String> = idle_counts
            .iter()
            .filter(|((w, _), _)| w == who)
            .map(|((_, what), n)| format!("{what}: {n}"))
            .collect();
        table.push_str(&format!(
            "| {who} API requests per minute while idle ({}s window) | {:.1} ({}) | no relist storm |\n",
            o.idle.as_secs(),
            n as f64 / minutes,
            if detail.is_empty() { "none".to_string() } else { detail.join(", ") }
        ));
    }
    table.push_str(&format!(
        "| agent RSS with its node's {total} records: after its first look at them / after {}s idle / peak (prune included) | {:.1} / {:.1} / {:.1} MiB | <= {AGENT_RSS_TARGET_MIB} MiB |\n",
        o.idle.as_secs(),
        mib(agent_rss_started),
        mib(agent_rss),
        mib(agent_peak_rss)
    ));
    let prune_detail: Vec<String> = prune_counts
        .iter()
        .map(|((who, what), n)| format!("{who} {what}: {n}"))
        .collect();
    table.push_str(&format!(
        "| prune {pruned} records: retention lowered → records gone (agent deleted the files, finalizers released) | {:.1} s | - |\n",
        files_gone.as_secs_f64()
    ));
    table.push_str(&format!(
        "| files left on disk after the prune | {files_now} (expected {left}) | - |\n"
    ));
    table.push_str(&format!(
        "| API requests during the prune | {} |  - |\n",
        prune_detail.join(", ")
    ));
    let verdict = |name: &str, value: f64, target: f64| {
        format!(
            "{name} peak RSS {value:.1} MiB, target <= {target} MiB: {}",
            if value <= target { "PASS" } else { "FAIL" }
        )
    };
    table.push_str(&format!(
        "\n{}\n{}\n",
        verdict("controller", mib(peak_rss), CONTROLLER_RSS_TARGET_MIB),
        verdict("agent", mib(agent_peak_rss), AGENT_RSS_TARGET_MIB)
    ));
    println!("{table}");
    std::fs::create_dir_all(&o.out)?;
    let out = o.out.join("controller.md");
    std::fs::write(&out, &table)?;
    eprintln!("written to {}", out.display());
    if files_now != left {
        return Err(format!("{files_now} files left on disk, expected {left}").into());
    }
    drop(controller);
    drop(agent);
    drop(etcd);
    drop(api);
    Ok(())
}
