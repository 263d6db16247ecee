//! Which runs are due (a tick, an on-demand request) and the records each run creates.

use super::run_time;
use crate::api::time::{from_time, to_time};
use crate::api::{
    Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotSchedule,
    ETCDSnapshotScheduleStatus, Members, Storage,
};
use crate::consts;
use crate::controller::validate::ValidSchedule;
use crate::naming::{esf_name, label_value, request_label, snapshot_name, with_encryption_suffix};
use crate::operator::AgentInfo;
use crate::schedule::Due;
use crate::storage::config::S3Config;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Where a schedule's S3 copies go: the resolved settings, and the name of the config Secret they
/// came from (`None` for inline settings).
pub type S3Target = (S3Config, Option<String>);

/// Node labels by node name (nodes that do not exist are absent).
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

/// One run of a schedule (a tick or an on-demand request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The run's time: the second its snapshot names carry.
    pub unix: i64,
    /// The label that marks the run's records: the tick label with the tick's unix seconds, or
    /// the request label with a hash of the `requested-at` value.
    pub label: (&'static str, String),
}

impl Run {
    /// Whether the run answers an on-demand request (not a tick).
    pub fn is_on_demand(&self) -> bool {
        self.label.0 == consts::LABEL_REQUEST
    }
}

/// The status once `unserved` runs (due, but no live agent could take them) are known: they do
/// not count towards verification, and an unserved on-demand request stays pending
/// (`lastRequestedAt` keeps the value it had, so the next reconcile tries again) rather than being
/// dropped, as right after a control-plane restart or a restore, before the agents renewed their
/// registration. An unserved tick stays consumed (a Warning says so; the next tick comes). Returns
/// whether a request is pending (the reconcile then retries with backoff).
pub fn unserved(
    s: &ETCDSnapshotSchedule,
    status: &mut ETCDSnapshotScheduleStatus,
    unserved: &[Run],
) -> bool {
    let mut pending = false;
    for run in unserved {
        if s.spec.verify.is_some() {
            status.runs_since_verify = status.runs_since_verify.map(|n| n.saturating_sub(1));
        }
        if run.is_on_demand() {
            status.last_requested_at = s
                .status
                .as_ref()
                .and_then(|st| st.last_requested_at.clone());
            pending = true;
        }
    }
    pending
}

/// What is due now.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The runs to create, in order (an on-demand request first, then a tick).
    pub runs: Vec<Run>,
    /// The note of the `MissedSchedule` Warning event, when a tick was missed (more than the
    /// starting deadline late) and the schedule is not suspended.
    pub missed: Option<String>,
    /// The next tick.
    pub next: Option<DateTime<Utc>>,
    /// The status with the handled request, the last tick and the run count advanced.
    pub status: ETCDSnapshotScheduleStatus,
}

/// The runs that are due at `now`. `fresh_runs_since_verify` is the verification counter as the
/// API server has it (used with `spec.verify`); `last_run` is the newest run second this process
/// created for the schedule (the cache may not show its records yet).
///
/// An on-demand request (a new `requested-at` value) runs once: not when `files` already hold
/// records of it, and never in a second another run of the schedule has, the tick due in the
/// same reconcile included (snapshot names carry whole seconds). A tick runs unless the schedule is suspended; a tick missed by more than the
/// starting deadline is skipped with an event.
pub fn runs(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    files: &[ETCDSnapshotFile],
    fresh_runs_since_verify: Option<u32>,
    last_run: Option<i64>,
    now: DateTime<Utc>,
) -> RunPlan {
    let mut status = s.status.clone().unwrap_or_default();
    if s.spec.verify.is_some() {
        status.runs_since_verify = fresh_runs_since_verify;
    }
    let mut runs = Vec::new();
    if let Some(requested) = s.annotations().get(consts::ANNOTATION_REQUESTED_AT)
        && status.last_requested_at.as_deref() != Some(requested.as_str())
    {
        let taken = files
            .iter()
            .filter_map(run_time)
            .chain(last_run)
            .max()
            .unwrap_or(i64::MIN);
        let run = Run {
            unix: now.timestamp().max(taken.saturating_add(1)),
            label: (consts::LABEL_REQUEST, request_label(requested)),
        };
        let already = files
            .iter()
            .any(|f| f.labels().get(run.label.0) == Some(&run.label.1));
        if !already {
            runs.push(run);
            count_run(s, &mut status);
        }
        status.last_requested_at = Some(requested.clone());
    }

    let created = super::created_at(s, now);
    let last = status.last_schedule_time.as_ref().map(from_time);
    let mut missed = None;
    let next = match valid
        .schedule
        .due(last, created, now, valid.starting_deadline)
    {
        Due::Run { tick } => {
            if !s.spec.suspend {
                runs.push(Run {
                    unix: tick.timestamp(),
                    label: (consts::LABEL_TICK, tick.timestamp().to_string()),
                });
                count_run(s, &mut status);
            }
            status.last_schedule_time = Some(to_time(tick));
            valid.schedule.next_after(now)
        }
        Due::Missed { latest, next } => {
            if !s.spec.suspend {
                missed = Some(format!(
                    "missed the tick of {} (more than the starting deadline late); waiting for the next",
                    latest.to_rfc3339()
                ));
            }
            status.last_schedule_time = Some(to_time(latest));
            next
        }
        Due::Wait { next } => next,
    };
    // A request and a tick in one reconcile never share a second: their records' names would
    // be the same, and the tick's would be refused as existing (the request's second is free
    // of other runs, so the one after the tick is too).
    if let [request, tick] = runs.as_mut_slice()
        && request.is_on_demand()
        && request.unix == tick.unix
    {
        request.unix = tick.unix.saturating_add(1);
    }
    RunPlan {
        runs,
        missed,
        next,
        status,
    }
}

/// Count a created run towards the next scheduled verification.
fn count_run(s: &ETCDSnapshotSchedule, status: &mut ETCDSnapshotScheduleStatus) {
    if s.spec.verify.is_some() {
        status.runs_since_verify = Some(status.runs_since_verify.unwrap_or(0).saturating_add(1));
    }
}

/// Where the schedule's S3 copies go: the settings read from its config Secret, else its inline
/// settings when S3 is enabled. `None` without S3 copies.
pub fn s3_target(s: &ETCDSnapshotSchedule, from_secret: Option<&S3Target>) -> Option<S3Target> {
    match from_secret {
        Some(t) => Some(t.clone()),
        None => {
            let inline = s.spec.s3.as_ref().filter(|s3| s3.enabled)?;
            S3Config::from_schedule_inline(inline)
                .ok()
                .map(|cfg| (cfg, None))
        }
    }
}

/// Whether a node with `labels` (`None`: the node does not exist) matches `selector`: every
/// selector label is on the node. An empty selector matches every node, even a missing one.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if selector.is_empty() {
        return true;
    }
    labels.is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The live agents that may take part in a run of the schedule (their node matches the node
/// selector; `nodes` holds the labels of the nodes that exist), sorted by node name.
pub fn candidates(
    valid: &ValidSchedule,
    agents: Vec<AgentInfo>,
    nodes: &NodeLabels,
) -> Vec<AgentInfo> {
    let mut keep: Vec<AgentInfo> = agents
        .into_iter()
        .filter(|a| selects(&valid.node_selector, nodes.get(&a.node)))
        .collect();
    keep.sort_by(|a, b| a.node.cmp(&b.node));
    keep
}

/// The records of one run.
#[derive(Debug, Clone)]
pub enum Records {
    /// Create these Pending records (names derived from the run's time, so creating them twice
    /// finds them there).
    Create(Vec<ETCDSnapshotFile>),
    /// No live agent with a healthy etcd member matches: nothing is snapshotted, and a Warning
    /// event with this note says so.
    NoAgent {
        /// The event note.
        note: String,
    },
}

/// The records of `run`: with `members: All` one per candidate agent (sorted by node) and
/// storage, with `members: One` those of one healthy member, rotating from run to run. Each
/// carries the storage, node, schedule, run and cluster-id labels and the finalizer;
/// `metadata` is the data of the extra-metadata ConfigMap.
pub fn records(
    s: &ETCDSnapshotSchedule,
    valid: &ValidSchedule,
    s3: Option<&S3Target>,
    agents: &[AgentInfo],
    metadata: &BTreeMap<String, String>,
    run: &Run,
) -> Records {
    let chosen: Vec<&AgentInfo> = match valid.members {
        Members::All => agents.iter().collect(),
        Members::One => {
            let healthy: Vec<&AgentInfo> = agents.iter().filter(|a| a.etcd_healthy).collect();
            let n = healthy.len() as i64;
            if n == 0 {
                Vec::new()
            } else {
                // Rotate through the healthy members from tick to tick.
                let i = usize::try_from(run.unix.rem_euclid(n)).unwrap_or(0);
                healthy.get(i).copied().into_iter().collect()
            }
        }
    };
    if chosen.is_empty() {
        let note = if run.is_on_demand() {
            "no live agent with a healthy etcd member matches this schedule; the on-demand request stays pending and is retried"
        } else {
            "no live agent with a healthy etcd member matches this schedule; nothing was snapshotted"
        };
        return Records::NoAgent { note: note.into() };
    }
    let compression = if valid.zstd_level.is_some() {
        Compression::Zstd
    } else {
        Compression::None
    };
    let schedule = s.name_any();
    let mut out = Vec::new();
    for agent in chosen {
        let name = with_encryption_suffix(
            snapshot_name(&valid.prefix, &agent.node, run.unix, compression),
            valid.encryption.is_some(),
        );
        let mut copies = Vec::new();
        if valid.local.is_some() {
            let dir = agent.snapshot_dir.trim_end_matches('/');
            copies.push((Storage::Local, format!("file://{dir}/{name}"), None, None));
        }
        if let Some((cfg, secret)) = s3 {
            copies.push((
                Storage::S3,
                cfg.location(&name),
                Some(cfg.to_location()),
                secret.clone(),
            ));
        }
        for (storage, location, s3_location, secret) in copies {
            let mut esf = ETCDSnapshotFile::new(
                &esf_name(storage, &name, &agent.node, &location),
                ETCDSnapshotFileSpec {
                    snapshot_name: name.clone(),
                    node_name: agent.node.clone(),
                    location,
                    s3: s3_location,
                    metadata: (!metadata.is_empty()).then(|| metadata.clone()),
                    compression,
                    compression_level: valid.zstd_level,
                    schedule_name: Some(schedule.clone()),
                    s3_config_secret_name: secret,
                    encryption: s.spec.encryption.clone(),
                },
            );
            let storage_label = match storage {
                Storage::Local => label_value(&agent.node),
                Storage::S3 => consts::STORAGE_S3.to_string(),
            };
            let mut labels = BTreeMap::from([
                (consts::LABEL_STORAGE.to_string(), storage_label),
                (consts::LABEL_NODE.to_string(), label_value(&agent.node)),
                (consts::LABEL_SCHEDULE.to_string(), label_value(&schedule)),
                (run.label.0.to_string(), run.label.1.clone()),
            ]);
            if let Some(id) = &agent.cluster_id {
                labels.insert(consts::LABEL_CLUSTER_ID.to_string(), label_value(id));
            }
            esf.metadata.labels = Some(labels);
            esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
            out.push(esf);
        }
    }
    Records::Create(out)
}
