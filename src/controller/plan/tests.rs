//! The schedule reconcile's decisions, from YAML fixtures of a schedule and its records as a user
//! and the API server have them. Each test names the integration test it is a twin of.

use super::*;
use crate::api::time::to_time;
use crate::api::{
    Compression, ETCDSnapshotSchedule, ETCDSnapshotScheduleStatus, RetentionScope, Storage,
};
use crate::consts::{self, conditions};
use crate::controller::preflight;
use crate::controller::validate::{ValidSchedule, validate};
use crate::naming::{esf_name, request_label};
use crate::operator::AgentInfo;
use crate::prune::Scope;
use crate::retention::Decision;
use crate::storage::catalog::StoredCopy;
use crate::storage::config::S3Config;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;

const NS: &str = "etcd-snapshot";
/// 2025-12-02T00:00:00Z, a tick of `0 * * * *`.
const TICK: i64 = 1_764_633_600;
const HOUR: i64 = 3600;
const CLUSTER: &str = "cdf818194e3a8c32";

/// An hourly schedule with local and S3 copies (through a config Secret), as applied by a user
/// and last written by the controller at the previous tick.
const SCHEDULE: &str = r#"
apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotSchedule
metadata:
  name: nightly
  generation: 2
  creationTimestamp: "2025-12-01T20:00:00Z"
spec:
  schedule: "0 * * * *"
  members: All
  local:
    retention: {count: 2}
  s3:
    enabled: true
    configSecretRef: {name: etcd-s3-config}
    retention: {count: 3}
status:
  observedGeneration: 2
  lastScheduleTime: "2025-12-01T23:00:00Z"
"#;

/// A record of `schedule` as the controller creates it and the agent finishes it.
fn record(storage: Storage, node: &str, unix: i64, phase: &str) -> ETCDSnapshotFile {
    let name = format!("etcd-snapshot-{node}-{unix}");
    let (prefix, storage_label, location) = match storage {
        Storage::Local => (
            "local",
            node.to_string(),
            format!("file:///var/lib/etcd-snapshots/{name}"),
        ),
        Storage::S3 => ("s3", "s3".into(), format!("s3://backups/cluster-a/{name}")),
    };
    let yaml = format!(
        r#"
apiVersion: etcdsnapshot.io/v1
kind: ETCDSnapshotFile
metadata:
  name: {prefix}-{name}-0a1b2c
  labels:
    etcdsnapshot.io/node: {node}
    etcdsnapshot.io/storage: {storage_label}
    etcdsnapshot.io/schedule: nightly
    etcdsnapshot.io/tick: "{unix}"
    etcdsnapshot.io/cluster-id: {CLUSTER}
  finalizers: [etcdsnapshot.io/snapshot-file]
spec:
  snapshotName: {name}
  nodeName: {node}
  location: {location}
  scheduleName: nightly
  compression: none
status:
  phase: {phase}
  readyToUse: {ready}
  size: "4096"
  creationTime: "{created}"
  etcdClusterID: {CLUSTER}
"#,
        ready = phase == "Ready",
        created = at(unix).to_rfc3339(),
    );
    serde_yaml::from_str(&yaml).expect("record fixture parses")
}

fn schedule(yaml: &str) -> ETCDSnapshotSchedule {
    serde_yaml::from_str(yaml).expect("schedule fixture parses")
}

/// [`SCHEDULE`] with its spec edited.
fn edited(edit: impl FnOnce(&mut ETCDSnapshotSchedule)) -> ETCDSnapshotSchedule {
    let mut s = schedule(SCHEDULE);
    edit(&mut s);
    s
}

fn valid(s: &ETCDSnapshotSchedule) -> ValidSchedule {
    validate(&s.spec, NS).expect("valid schedule")
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).expect("valid time")
}

fn agent(node: &str, healthy: bool) -> AgentInfo {
    AgentInfo {
        node: node.into(),
        snapshot_dir: "/var/lib/etcd-snapshots/".into(),
        etcd_healthy: healthy,
        cluster_id: Some(CLUSTER.into()),
        renewed: None,
        lease_seconds: 15,
    }
}

/// The S3 settings of the schedule's config Secret.
fn s3_target() -> S3Target {
    let inline: crate::api::S3Storage = serde_yaml::from_str(
        "{enabled: true, endpoint: 's3.example.internal:8333', bucket: backups, folder: cluster-a}",
    )
    .expect("S3 settings parse");
    let cfg = S3Config::from_schedule_inline(&inline).expect("S3 settings resolve");
    (cfg, Some("etcd-s3-config".into()))
}

fn tick_run(unix: i64) -> Run {
    Run {
        unix,
        label: (consts::LABEL_TICK, unix.to_string()),
    }
}

fn created(r: Records) -> Vec<ETCDSnapshotFile> {
    match r {
        Records::Create(files) => files,
        other => panic!("no records: {other:?}"),
    }
}

fn json(files: &[ETCDSnapshotFile]) -> serde_json::Value {
    serde_json::to_value(files).expect("records serialize")
}

fn condition<'a>(status: &'a ETCDSnapshotScheduleStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", status.conditions))
}

/// Twin of `operator::scheduled_tick_creates_pending_files_that_become_ready_and_match_stored_bytes`.
#[test]
fn a_due_tick_creates_a_local_and_an_s3_record_with_their_labels_and_finalizer() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let due = runs(&s, &v, &[], None, None, at(TICK + 1));
    assert_eq!(due.runs, [tick_run(TICK)]);
    assert_eq!(due.missed, None);
    assert_eq!(due.next, Some(at(TICK + HOUR)));
    assert_eq!(due.status.last_schedule_time, Some(to_time(at(TICK))));
    assert_eq!(
        due.status.runs_since_verify, None,
        "no spec.verify, no count"
    );

    let metadata = BTreeMap::from([("cluster".to_string(), "prod-eu".to_string())]);
    let target = s3_target();
    let plan_records = || {
        created(records(
            &s,
            &v,
            Some(&target),
            &[agent("node0", true)],
            &metadata,
            &due.runs[0],
        ))
    };
    let files = plan_records();
    assert_eq!(files.len(), 2, "one local and one S3 copy");
    let name = "etcd-snapshot-node0-1764633600";
    for (f, storage, location) in [
        (
            &files[0],
            Storage::Local,
            format!("file:///var/lib/etcd-snapshots/{name}"),
        ),
        (
            &files[1],
            Storage::S3,
            format!("s3://backups/cluster-a/{name}"),
        ),
    ] {
        assert_eq!(
            f.name_any(),
            esf_name(storage, name, "node0", &location),
            "named from the run"
        );
        assert!(
            f.name_any()
                .starts_with(&format!("{}-{name}-", storage.as_str()))
        );
        assert_eq!(f.spec.snapshot_name, name);
        assert_eq!(f.spec.node_name, "node0");
        assert_eq!(f.spec.location, location);
        assert_eq!(f.spec.schedule_name.as_deref(), Some("nightly"));
        assert_eq!(f.spec.compression, Compression::None);
        assert_eq!(f.spec.metadata.as_ref(), Some(&metadata));
        assert!(f.status.is_none(), "created Pending");
        assert_eq!(f.finalizers(), [consts::FINALIZER]);
        let storage_label = match storage {
            Storage::Local => "node0",
            Storage::S3 => consts::STORAGE_S3,
        };
        let labels: Vec<(&str, &str)> = f
            .labels()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut want = vec![
            (consts::LABEL_CLUSTER_ID, CLUSTER),
            (consts::LABEL_NODE, "node0"),
            (consts::LABEL_SCHEDULE, "nightly"),
            (consts::LABEL_STORAGE, storage_label),
            (consts::LABEL_TICK, "1764633600"),
        ];
        want.sort();
        assert_eq!(labels, want);
    }
    assert_eq!(files[0].spec.s3, None);
    assert_eq!(files[0].spec.s3_config_secret_name, None);
    assert_eq!(
        files[1].spec.s3_config_secret_name.as_deref(),
        Some("etcd-s3-config"),
        "the S3 record names its Secret, never its keys"
    );
    let s3 = files[1].spec.s3.as_ref().expect("S3 location");
    assert_eq!(s3.bucket, "backups");

    // The same tick planned again (a restart, a standby taking over) gives the same records.
    assert_eq!(json(&plan_records()), json(&files));
}

/// Twin of `operator::standby_takes_over_within_lease_time_and_runs_each_tick_once`: a tick
/// already recorded is not run again; one missed by more than the deadline is announced.
#[test]
fn a_tick_runs_once_and_a_missed_or_suspended_one_creates_nothing() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let done = runs(&s, &v, &[], None, None, at(TICK + 1));
    let after = edited(|s| s.status = Some(done.status.clone()));
    let again = runs(&after, &v, &[], None, None, at(TICK + 2));
    assert!(again.runs.is_empty(), "{:?}", again.runs);
    assert_eq!(again.next, Some(at(TICK + HOUR)));

    // Half an hour late (no starting deadline): missed, announced, recorded.
    let late = runs(&s, &v, &[], None, None, at(TICK + 1800));
    assert!(late.runs.is_empty());
    assert_eq!(
        late.missed.as_deref(),
        Some(
            "missed the tick of 2025-12-02T00:00:00+00:00 (more than the starting deadline late); waiting for the next"
        )
    );
    assert_eq!(late.status.last_schedule_time, Some(to_time(at(TICK))));

    // Suspended: the tick is recorded, nothing is created or announced.
    let suspended = edited(|s| s.spec.suspend = true);
    let v = valid(&suspended);
    for now in [TICK + 1, TICK + 1800] {
        let due = runs(&suspended, &v, &[], None, None, at(now));
        assert!(due.runs.is_empty());
        assert_eq!(due.missed, None);
        assert_eq!(due.status.last_schedule_time, Some(to_time(at(TICK))));
    }
}

/// Twin of `operator::three_agents_snapshot_every_member_with_all_and_a_single_member_with_one`.
#[test]
fn members_all_takes_every_agent_and_one_rotates_over_the_healthy_ones() {
    let agents = [
        agent("node0", true),
        agent("node1", false),
        agent("node2", true),
    ];
    let local_only = |members: &str| {
        let s = edited(|s| {
            s.spec.s3 = None;
            s.spec.members = serde_yaml::from_str(members).expect("members");
        });
        let v = valid(&s);
        (s, v)
    };
    let nodes = |files: Vec<ETCDSnapshotFile>| -> Vec<String> {
        files.into_iter().map(|f| f.spec.node_name).collect()
    };

    let (s, v) = local_only("All");
    let all = created(records(
        &s,
        &v,
        None,
        &agents,
        &BTreeMap::new(),
        &tick_run(TICK),
    ));
    assert_eq!(nodes(all), ["node0", "node1", "node2"]);

    let (s, v) = local_only("One");
    let picked: Vec<Vec<String>> = (0..4)
        .map(|i| {
            nodes(created(records(
                &s,
                &v,
                None,
                &agents,
                &BTreeMap::new(),
                &tick_run(TICK + i),
            )))
        })
        .collect();
    assert_eq!(
        picked,
        [["node0"], ["node2"], ["node0"], ["node2"]],
        "one healthy member per run, taking turns"
    );

    let down = [agent("node0", false)];
    match records(&s, &v, None, &down, &BTreeMap::new(), &tick_run(TICK)) {
        Records::NoAgent { note } => assert_eq!(
            note,
            "no live agent with a healthy etcd member matches this schedule; nothing was snapshotted"
        ),
        Records::Create(files) => panic!("records without a healthy member: {files:?}"),
    }
    let (s, v) = local_only("All");
    assert!(matches!(
        records(&s, &v, None, &[], &BTreeMap::new(), &tick_run(TICK)),
        Records::NoAgent { .. }
    ));
}

/// No integration twin (new coverage): only agents on existing nodes with every selector label
/// take part; without a selector every agent does.
#[test]
fn the_node_selector_keeps_agents_on_matching_nodes_only() {
    let s = edited(|s| {
        s.spec.node_selector = Some(BTreeMap::from([(
            "node-role.kubernetes.io/etcd".into(),
            "true".into(),
        )]));
    });
    let v = valid(&s);
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let nodes: NodeLabels = BTreeMap::from([
        (
            "node2".into(),
            labels(&[("node-role.kubernetes.io/etcd", "true")]),
        ),
        (
            "node0".into(),
            labels(&[("node-role.kubernetes.io/etcd", "false")]),
        ),
        (
            "node1".into(),
            labels(&[("node-role.kubernetes.io/etcd", "true"), ("zone", "a")]),
        ),
    ]);
    let agents = vec![
        agent("node2", true),
        agent("node0", true),
        agent("node1", true),
        agent("gone", true),
    ];
    let picked: Vec<String> = candidates(&v, agents.clone(), &nodes)
        .into_iter()
        .map(|a| a.node)
        .collect();
    assert_eq!(picked, ["node1", "node2"], "matching, existing, sorted");

    let open = valid(&schedule(SCHEDULE));
    let picked: Vec<String> = candidates(&open, agents, &NodeLabels::new())
        .into_iter()
        .map(|a| a.node)
        .collect();
    assert_eq!(picked, ["gone", "node0", "node1", "node2"]);
}

/// Twin of `operator::requested_at_annotation_runs_the_schedule_once_per_new_value` (and of
/// `operator::trigger_wait_requests_a_run_and_prints_its_ready_files`, which sets the value).
#[test]
fn a_new_requested_at_value_runs_once_with_the_schedule_prefix() {
    let value = "2025-12-02T00:10:00.123Z";
    let s = edited(|s| {
        s.spec.name_prefix = "manual".into();
        s.spec.verify = serde_yaml::from_str("{everyRuns: 5}").expect("verify");
        s.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(to_time(at(TICK)));
        s.annotations_mut()
            .insert(consts::ANNOTATION_REQUESTED_AT.into(), value.into());
    });
    let v = valid(&s);
    let now = at(TICK + 600);
    let due = runs(&s, &v, &[], Some(1), None, now);
    let run = Run {
        unix: TICK + 600,
        label: (consts::LABEL_REQUEST, request_label(value)),
    };
    assert_eq!(due.runs, std::slice::from_ref(&run));
    assert_eq!(due.status.last_requested_at.as_deref(), Some(value));
    assert_eq!(due.status.runs_since_verify, Some(2), "the run is counted");
    let files = created(records(
        &s,
        &v,
        None,
        &[agent("node0", true)],
        &BTreeMap::new(),
        &run,
    ));
    assert_eq!(files[0].spec.snapshot_name, "manual-node0-1764634200");
    assert_eq!(
        files[0].labels().get(consts::LABEL_REQUEST),
        Some(&request_label(value))
    );

    // Handled already: no second run.
    let handled = edited(|x| {
        *x = s.clone();
        x.status
            .get_or_insert_with(Default::default)
            .last_requested_at = Some(value.into());
    });
    assert!(runs(&handled, &v, &[], None, None, now).runs.is_empty());
    // Its records are there but the status write was lost: recorded, not run again.
    let again = runs(&s, &v, &files, Some(2), None, now);
    assert!(again.runs.is_empty());
    assert_eq!(again.status.last_requested_at.as_deref(), Some(value));
    assert_eq!(again.status.runs_since_verify, Some(2), "not counted twice");
}

/// Twin of the end of `operator::requested_at_annotation_runs_the_schedule_once_per_new_value`
/// and of the restore drill's trigger right after the restore: a request no live agent can take
/// stays pending (retried), an unserved tick stays consumed, and neither counts towards verify.
#[test]
fn a_request_no_agent_can_take_stays_pending_and_an_unserved_tick_is_consumed() {
    let value = "2025-12-02T00:10:00.123Z";
    let s = edited(|s| {
        s.spec.verify = serde_yaml::from_str("{everyRuns: 5}").expect("verify");
        let st = s.status.get_or_insert_with(Default::default);
        st.last_schedule_time = Some(to_time(at(TICK - HOUR)));
        st.last_requested_at = Some("an older request".into());
        s.annotations_mut()
            .insert(consts::ANNOTATION_REQUESTED_AT.into(), value.into());
    });
    let v = valid(&s);
    let due = runs(&s, &v, &[], Some(1), None, at(TICK + 5));
    assert_eq!(
        due.runs.len(),
        2,
        "the request and the tick: {:?}",
        due.runs
    );
    assert!(due.runs[0].is_on_demand() && !due.runs[1].is_on_demand());
    // No agent: records() says so, with a note that tells the request apart from a tick.
    for run in &due.runs {
        let Records::NoAgent { note } = records(&s, &v, None, &[], &BTreeMap::new(), run) else {
            panic!("records without an agent");
        };
        let pending = note.contains("the on-demand request stays pending and is retried");
        assert_eq!(pending, run.is_on_demand(), "{note}");
    }
    let mut status = due.status.clone();
    assert!(unserved(&s, &mut status, &due.runs), "a request is pending");
    assert_eq!(
        status.last_requested_at.as_deref(),
        Some("an older request"),
        "the request is not marked served, so the next reconcile tries again"
    );
    assert_eq!(
        status.last_schedule_time,
        Some(to_time(at(TICK))),
        "the tick stays consumed"
    );
    assert_eq!(status.runs_since_verify, Some(1), "no unserved run counts");
    // Only the tick unserved: nothing pending.
    let mut status = due.status.clone();
    assert!(!unserved(&s, &mut status, &due.runs[1..]));
    assert_eq!(status.last_requested_at.as_deref(), Some(value));
    assert_eq!(status.runs_since_verify, Some(2));
}

/// A request that arrives in the very second of a due tick gets the next second, so both runs
/// get their records (the tick's are not refused as existing).
#[test]
fn a_request_in_the_second_of_a_due_tick_takes_the_next_second() {
    let s = edited(|s| {
        s.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(to_time(at(TICK - HOUR)));
        s.annotations_mut()
            .insert(consts::ANNOTATION_REQUESTED_AT.into(), "now".into());
    });
    let due = runs(&s, &valid(&s), &[], None, None, at(TICK));
    let seconds: Vec<i64> = due.runs.iter().map(|r| r.unix).collect();
    assert_eq!(seconds, [TICK + 1, TICK], "{:?}", due.runs);
    assert!(due.runs[0].is_on_demand());
}

/// Twin of `operator::requested_at_annotation_runs_the_schedule_once_per_new_value` ("the second
/// run has its own snapshots"): two requests in one second get distinct run seconds.
#[test]
fn on_demand_runs_never_reuse_a_second_another_run_has() {
    let s = edited(|s| {
        s.annotations_mut()
            .insert(consts::ANNOTATION_REQUESTED_AT.into(), "second".into());
        s.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(to_time(at(TICK)));
    });
    let v = valid(&s);
    let now = at(TICK + 10);
    // A record of the first request's run, in this very second.
    let first = record(Storage::Local, "node0", TICK + 10, "Pending");
    let due = runs(&s, &v, std::slice::from_ref(&first), None, None, now);
    assert_eq!(due.runs[0].unix, TICK + 11);
    // The cache does not show the first run yet, but this process remembers it.
    let due = runs(&s, &v, &[], None, Some(TICK + 11), now);
    assert_eq!(due.runs[0].unix, TICK + 12);
    // Nothing in this second yet: now.
    assert_eq!(runs(&s, &v, &[], None, None, now).runs[0].unix, TICK + 10);
}

/// Twin of `operator::retention_keeps_exactly_count_per_scope_in_cluster_on_disk_and_in_s3`.
#[test]
fn retention_prunes_beyond_count_per_node_and_never_a_disabled_storage() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let mut files = Vec::new();
    for i in 0..4 {
        for node in ["node0", "node1"] {
            files.push(record(Storage::Local, node, TICK - i * HOUR, "Ready"));
            files.push(record(Storage::S3, node, TICK - i * HOUR, "Ready"));
        }
    }
    // Being deleted already: not counted, not deleted again.
    let mut deleting = record(Storage::Local, "node0", TICK - 10 * HOUR, "Ready");
    deleting.metadata.deletion_timestamp = Some(to_time(at(TICK)));
    files.push(deleting);
    // Another etcd cluster's copy (a reinstalled cluster sharing the bucket): never a candidate.
    let mut foreign = record(Storage::S3, "node0", TICK - 20 * HOUR, "Ready");
    foreign.status.as_mut().expect("status").etcd_cluster_id = Some("0000000000000001".into());
    foreign
        .labels_mut()
        .insert(consts::LABEL_CLUSTER_ID.into(), "0000000000000001".into());
    files.push(foreign);

    let now = at(TICK + 60);
    assert!(!in_flight(false, &files));
    assert!(in_flight(true, &files), "a run just started");
    let pruned = prune(&s, &v, &files, Some(CLUSTER), now);
    let mut names: Vec<(Storage, String)> = pruned
        .iter()
        .map(|p| (p.storage, p.esf.spec.snapshot_name.clone()))
        .collect();
    names.sort();
    let oldest = |node: &str, i: i64| format!("etcd-snapshot-{node}-{}", TICK - i * HOUR);
    assert_eq!(
        names,
        [
            (Storage::Local, oldest("node0", 3)),
            (Storage::Local, oldest("node0", 2)),
            (Storage::Local, oldest("node1", 3)),
            (Storage::Local, oldest("node1", 2)),
            (Storage::S3, oldest("node0", 3)),
            (Storage::S3, oldest("node1", 3)),
        ],
        "local keeps 2 per node, S3 keeps 3 per node"
    );
    let note = &pruned
        .iter()
        .find(|p| p.storage == Storage::S3)
        .expect("an S3 pruning")
        .note;
    assert!(
        note.starts_with("Snapshot etcd-snapshot-node")
            && note.contains(" pruned from s3 by schedule nightly: "),
        "{note}"
    );

    // Cluster scope: S3 keeps 3 across nodes.
    let cluster = edited(|s| {
        if let Some(s3) = s.spec.s3.as_mut() {
            s3.retention_scope = RetentionScope::Cluster;
        }
    });
    let s3_pruned = prune(&cluster, &valid(&cluster), &files, Some(CLUSTER), now)
        .iter()
        .filter(|p| p.storage == Storage::S3)
        .count();
    assert_eq!(s3_pruned, 8 - 3);

    // Local storage turned off: its copies are left to the user.
    let s3_only = edited(|s| s.spec.local.enabled = false);
    let pruned = prune(&s3_only, &valid(&s3_only), &files, Some(CLUSTER), now);
    assert!(!pruned.is_empty());
    assert!(pruned.iter().all(|p| p.storage == Storage::S3));
    // A record in flight stops retention (the reconcile waits).
    let mut busy = files.clone();
    busy.push(record(Storage::Local, "node0", TICK + 60, "Running"));
    assert!(in_flight(false, &busy));
}

/// Twin of `faults_verify::an_s3_copy_whose_node_has_no_live_agent_is_verified_by_another_agent`
/// (and of `faults_verify::scheduled_verification_marks_good_copies_verified_and_catches_corrupted_ones`).
#[test]
fn every_n_runs_the_newest_ready_copies_are_verified_by_a_live_agent() {
    let s = edited(|s| {
        s.spec.local.enabled = false;
        s.spec.verify = serde_yaml::from_str("{everyRuns: 2}").expect("verify");
    });
    let v = valid(&s);
    // Run 1 Ready on both nodes; run 2 failed on node1 (node0's agent is gone).
    let files = [
        record(Storage::S3, "node0", TICK - HOUR, "Ready"),
        record(Storage::S3, "node1", TICK - HOUR, "Ready"),
        record(Storage::S3, "node1", TICK, "Failed"),
    ];
    let live = ["node1".to_string()];
    let now = at(TICK + 5);
    // Run 2 was the first counted since the last verification.
    let due = runs(&s, &v, &files, Some(1), None, at(TICK + 1));
    assert_eq!(due.status.runs_since_verify, Some(2));
    assert_eq!(verification(&s, Some(1), &files, &live, now), None);
    let asked = verification(&s, Some(2), &files, &live, now).expect("due");
    assert_eq!(asked.requested_at, "2025-12-02T00:00:05.000Z");
    let by: Vec<(String, String)> = asked
        .requests
        .iter()
        .map(|(name, by)| {
            let f = files.iter().find(|f| &f.name_any() == name).expect("named");
            (f.spec.node_name.clone(), by.clone())
        })
        .collect();
    assert_eq!(
        by,
        [
            ("node0".to_string(), "node1".to_string()),
            ("node1".to_string(), "node1".to_string())
        ],
        "node0's S3 copy is verified by the live agent on node1"
    );
    // A local copy only on its own node (its agent verifies it when it is back).
    let local = [record(Storage::Local, "node0", TICK, "Ready")];
    let asked = verification(&s, Some(2), &local, &live, now).expect("due");
    assert_eq!(asked.requests[0].1, "node0");
    // No spec.verify: never.
    assert_eq!(
        verification(&schedule(SCHEDULE), Some(9), &files, &live, now),
        None
    );
}

/// Twin of `bad_input_operator::bad_schedules_and_secrets_are_refused_each_with_one_event_and_a_good_schedule_keeps_working`.
#[test]
fn an_invalid_schedule_is_stalled_with_its_message_and_announced_once() {
    let bad = edited(|s| s.spec.schedule = "not a cron".into());
    let message = validate(&bad.spec, NS).expect_err("refused");
    assert!(message.contains("got 3"), "{message}");
    let now = at(TICK);
    let (status, announce) = invalid_status(&bad, conditions::REASON_INVALID_SPEC, &message, now);
    assert!(announce);
    let stalled = condition(&status, conditions::STALLED);
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", conditions::REASON_INVALID_SPEC)
    );
    assert_eq!(stalled.message, message);
    assert_eq!(status.next_schedule_time, None);
    assert_eq!(status.observed_generation, Some(2));
    // The same problem at the next resync: no second event.
    let written = edited(|s| {
        *s = bad.clone();
        s.status = Some(status.clone());
    });
    let (again, announce) =
        invalid_status(&written, conditions::REASON_INVALID_SPEC, &message, now);
    assert!(!announce);
    assert_eq!(again, status);
    // A different problem is announced.
    assert!(invalid_status(&written, "SecretMissing", "secret x not found", now).1);
    // An unreachable generation is reported as retrying.
    let retrying = retrying_status(&schedule(SCHEDULE), "API down", now);
    let c = condition(&retrying, conditions::RECONCILING);
    assert_eq!(c.status, "True");
    assert!(c.message.contains("generation 2") && c.message.contains("API down"));
}

/// Twin of `operator::requested_at_annotation_runs_the_schedule_once_per_new_value`
/// (lastSuccessfulTime once the run is Ready) and of
/// `operator::controller_without_create_on_snapshot_files_is_refused_and_nothing_is_snapshotted`
/// (none without a complete run).
#[test]
fn last_successful_time_comes_only_from_a_run_whose_copies_are_all_ready() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let live = ["node0".to_string()];
    let now = at(TICK + 120);
    let plan_of = |s: &ETCDSnapshotSchedule, files: &[ETCDSnapshotFile]| {
        let st = s.status.clone().unwrap_or_default();
        status(s, &v, st, files, &live, None, Some(at(TICK + HOUR)), now)
    };
    let empty = plan_of(&s, &[]);
    assert_eq!(empty.status.last_successful_time, None);
    assert_eq!(
        empty.status.next_schedule_time,
        Some(to_time(at(TICK + HOUR)))
    );
    assert_eq!(
        condition(&empty.status, conditions::READY).status,
        "True",
        "a valid schedule is Ready"
    );

    let files = [
        record(Storage::Local, "node0", TICK - HOUR, "Ready"),
        record(Storage::S3, "node0", TICK - HOUR, "Ready"),
        record(Storage::Local, "node0", TICK, "Ready"),
        record(Storage::S3, "node0", TICK, "Running"),
    ];
    let out = plan_of(&s, &files);
    assert_eq!(
        out.status.last_successful_time,
        Some(to_time(at(TICK - HOUR))),
        "the newest run still has a copy running"
    );
    assert_eq!(out.status.ready_snapshots, 3);
    assert_eq!(out.status.failed_snapshots, 0);
    assert_eq!(out.status.observed_generation, Some(2));
    // Never going back.
    let later = edited(|s| {
        s.status
            .get_or_insert_with(Default::default)
            .last_successful_time = Some(to_time(at(TICK)));
    });
    assert_eq!(
        plan_of(&later, &files).status.last_successful_time,
        Some(to_time(at(TICK)))
    );
}

/// Twin of `operations::refused_s3_permissions_and_failed_prunes_are_reported_once_and_recover`:
/// a failed run and a failed storage check are each announced once.
#[test]
fn a_failed_run_and_a_failed_storage_check_are_announced_once() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let live = ["node0".to_string()];
    let now = at(TICK + 120);
    let mut failed = record(Storage::S3, "node0", TICK, "Failed");
    failed.status.as_mut().expect("status").error = Some(crate::api::SnapshotError {
        time: Some(to_time(at(TICK + 30))),
        message: Some("S3 refused the upload: AccessDenied".into()),
    });
    let files = [record(Storage::Local, "node0", TICK, "Ready"), failed];
    let check = preflight::Outcome {
        ok: false,
        reason: "AccessDenied",
        message: "S3 refused PutObject on backups".into(),
    };
    let first = status(
        &s,
        &v,
        s.status.clone().unwrap_or_default(),
        &files,
        &live,
        Some(&check),
        None,
        now,
    );
    let run_failed = first.run_failed.clone().expect("announced");
    assert!(
        run_failed.contains("1 of 2 copies failed") && run_failed.contains("AccessDenied"),
        "{run_failed}"
    );
    assert_eq!(
        first.storage_failed.as_deref(),
        Some("S3 refused PutObject on backups")
    );
    assert_eq!(first.status.failed_snapshots, 1);
    assert_eq!(
        condition(&first.status, conditions::LAST_RUN_SUCCEEDED).status,
        "False"
    );
    assert_eq!(
        condition(&first.status, conditions::STORAGE_READY).status,
        "False"
    );
    // Once written, the next reconcile does not announce them again.
    let written = edited(|x| x.status = Some(first.status.clone()));
    let again = status(
        &written,
        &v,
        first.status.clone(),
        &files,
        &live,
        Some(&check),
        None,
        now,
    );
    assert_eq!((again.run_failed, again.storage_failed), (None, None));
    assert_eq!(again.status, first.status);
}

/// Twin of none (the requeue was untested): a second after the next tick, capped by the resync
/// and, with S3, by the storage check interval.
#[test]
fn the_next_reconcile_is_a_second_after_the_next_tick_within_the_caps() {
    let now = at(TICK + 1);
    let resync = Duration::from_secs(300);
    let next = Some(at(TICK + 61));
    assert_eq!(
        requeue_after(next, now, resync, None),
        Duration::from_secs(61)
    );
    assert_eq!(
        requeue_after(Some(at(TICK + HOUR)), now, resync, None),
        resync
    );
    assert_eq!(
        requeue_after(next, now, resync, Some(Duration::from_secs(10))),
        Duration::from_secs(11)
    );
    assert_eq!(
        requeue_after(None, now, Duration::from_secs(7200), None),
        Duration::from_secs(3600)
    );
    // A tick already passed: right away (one second).
    assert_eq!(
        requeue_after(Some(at(TICK)), now, resync, None),
        Duration::from_secs(1)
    );
}

#[test]
fn the_cluster_id_is_the_one_most_agents_report() {
    let mut agents = vec![
        agent("node0", true),
        agent("node1", true),
        agent("node2", true),
    ];
    agents[2].cluster_id = Some("other".into());
    assert_eq!(cluster_id(&agents).as_deref(), Some(CLUSTER));
    assert_eq!(cluster_id(&[]), None);
}

/// Retention's decisions carry the rule that dropped a copy, which the event shows.
#[test]
fn a_pruning_note_names_snapshot_storage_schedule_and_rule() {
    let s = schedule(SCHEDULE);
    let v = valid(&s);
    let files: Vec<ETCDSnapshotFile> = (0..3)
        .map(|i| record(Storage::Local, "node0", TICK - i * HOUR, "Ready"))
        .collect();
    let pruned = prune(&s, &v, &files, Some(CLUSTER), at(TICK + 60));
    assert_eq!(pruned.len(), 1);
    let copies: Vec<_> = files.iter().filter_map(StoredCopy::from_record).collect();
    let plan = crate::prune::plan(
        &copies,
        "etcd-snapshot",
        &v.local.clone().expect("local"),
        &Default::default(),
        Scope::Node,
        Some(CLUSTER),
        at(TICK + 60),
    );
    let (_, decision): &(_, Decision<String>) = plan.deletions().next().expect("one deletion");
    assert_eq!(
        pruned[0].note,
        format!(
            "Snapshot etcd-snapshot-node0-{} pruned from local by schedule nightly: {}",
            TICK - 2 * HOUR,
            decision.reason
        )
    );
}

/// The decision half of `operator::rotated_secret_is_used_by_the_next_run_without_restart` (the
/// settings read from the Secret at this reconcile are the ones used; re-reading the Secret is
/// fetch's): inline settings when there is no Secret, none when S3 is off.
#[test]
fn s3_copies_go_where_the_secret_or_the_inline_settings_say() {
    let from_secret = s3_target();
    let s = schedule(SCHEDULE);
    let target = super::s3_target(&s, Some(&from_secret)).expect("S3 on");
    assert_eq!(target.1.as_deref(), Some("etcd-s3-config"));
    assert_eq!(target.0.location("x"), "s3://backups/cluster-a/x");

    let inline = edited(|s| {
        s.spec.s3 = serde_yaml::from_str(
            "{enabled: true, endpoint: 'minio.local:9000', bucket: inline-bucket}",
        )
        .expect("inline S3");
    });
    let target = super::s3_target(&inline, None).expect("inline S3 on");
    assert_eq!(target.1, None, "no Secret to name");
    assert_eq!(target.0.location("x"), "s3://inline-bucket/x");

    let off = edited(|s| {
        if let Some(s3) = s.spec.s3.as_mut() {
            s3.enabled = false;
        }
    });
    assert!(super::s3_target(&off, None).is_none());
}
