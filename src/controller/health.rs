//! A schedule's conditions, decided from plain data (no I/O).
//!
//! They follow kstatus (sigs.k8s.io/cli-utils `pkg/kstatus/status`), which Helm 4's `--wait`
//! and Flux's and Argo CD's health checks use. kstatus reads, in this order: a deletion timestamp
//! (Terminating); `status.observedGeneration` different from `metadata.generation` (InProgress);
//! `Reconciling=True` (InProgress); `Stalled=True` (Failed); then `Ready` (True: Current,
//! False or Unknown: InProgress); no condition at all: Current. So:
//!
//! - a valid schedule is `Ready=True` at once (Current), whether or not a run has happened;
//! - an invalid one (or one whose Secret is missing or unusable) is `Stalled=True` with the
//!   reason and message, and `Ready=False` (Failed: Helm stops waiting and reports it);
//! - a new generation that a transient error kept from being reconciled is `Reconciling=True`
//!   (InProgress), as is any generation not yet observed;
//! - `Stalled` and `Reconciling` are abnormal-true: absent when all is well.
//!
//! How the runs went is information, in `LastRunSucceeded` (not a kstatus condition), in
//! `status.lastSuccessfulTime` and the counts, and in a Warning event when a run fails.

use crate::api::Phase;
use crate::api::conditions::{remove_condition, set_condition_status};
use crate::consts::conditions as c;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// What a reconcile concluded about a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The spec and what it references are usable.
    Valid {
        /// `spec.suspend`.
        suspended: bool,
    },
    /// The spec or what it references is unusable; only a change can help.
    Stalled {
        /// PascalCase reason (e.g. `InvalidSpec`, `SecretMissing`).
        reason: &'a str,
        /// What is wrong, for a person.
        message: &'a str,
    },
    /// A transient error kept the reconcile of a new generation from finishing; it is retried.
    Retrying {
        /// The error.
        message: &'a str,
    },
}

/// Message of `Ready=True` for an active schedule.
pub const MESSAGE_SCHEDULED: &str =
    "the schedule is valid: runs are created at each tick and on request";
/// Message of `Ready=True` for a suspended schedule.
pub const MESSAGE_SUSPENDED: &str =
    "the schedule is valid and suspended: only on-demand requests run";

/// Set `Ready`, `Stalled` and `Reconciling` for `verdict`.
pub fn apply_verdict(
    conditions: &mut Vec<Condition>,
    verdict: Verdict<'_>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    // Written by earlier versions; `Stalled` took its place.
    remove_condition(conditions, c::LEGACY_INVALID);
    let mut set = |type_: &str, status: &str, reason: &str, message: &str| {
        set_condition_status(conditions, type_, status, reason, message, generation, now);
    };
    match verdict {
        Verdict::Valid { suspended } => {
            let (reason, message) = if suspended {
                (c::REASON_SUSPENDED, MESSAGE_SUSPENDED)
            } else {
                (c::REASON_SCHEDULED, MESSAGE_SCHEDULED)
            };
            set(c::READY, "True", reason, message);
            remove_condition(conditions, c::STALLED);
            remove_condition(conditions, c::RECONCILING);
        }
        Verdict::Stalled { reason, message } => {
            set(c::STALLED, "True", reason, message);
            set(c::READY, "False", reason, message);
            remove_condition(conditions, c::RECONCILING);
        }
        Verdict::Retrying { message } => {
            set(c::RECONCILING, "True", c::REASON_RETRYING, message);
            set(c::READY, "False", c::REASON_RETRYING, message);
            remove_condition(conditions, c::STALLED);
        }
    }
}

/// One copy of a run, as retention and status see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCopy {
    /// Unix second of the run (from the snapshot name).
    pub run: i64,
    /// Record name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// `status.error.message`, when Failed.
    pub error: Option<String>,
}

/// The newest run whose copies have all finished (Ready or Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Unix second of the run.
    pub run: i64,
    /// Copies of the run.
    pub copies: usize,
    /// Failed copies: (record name, error message).
    pub failed: Vec<(String, String)>,
}

/// The newest finished run among `copies` (a run with a copy still Pending or Running is not
/// finished and is skipped).
pub fn last_finished_run(copies: &[RunCopy]) -> Option<RunOutcome> {
    let mut runs = std::collections::BTreeMap::<i64, Vec<&RunCopy>>::new();
    for copy in copies {
        runs.entry(copy.run).or_default().push(copy);
    }
    runs.into_iter()
        .rev()
        .find(|(_, copies)| {
            copies
                .iter()
                .all(|c| matches!(c.phase, Phase::Ready | Phase::Failed))
        })
        .map(|(run, copies)| {
            let mut failed: Vec<(String, String)> = copies
                .iter()
                .filter(|c| c.phase == Phase::Failed)
                .map(|c| (c.name.clone(), c.error.clone().unwrap_or_default()))
                .collect();
            failed.sort();
            RunOutcome {
                run,
                copies: copies.len(),
                failed,
            }
        })
}

/// The run's time for people.
fn run_time(run: i64) -> String {
    DateTime::from_timestamp(run, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| run.to_string())
}

/// One line about a failed run: how many copies failed, and the first one's error.
pub fn failure_message(outcome: &RunOutcome) -> Option<String> {
    let (name, error) = outcome.failed.first()?;
    let error = if error.is_empty() {
        "no error recorded"
    } else {
        error
    };
    Some(format!(
        "the run of {}: {} of {} copies failed ({name}: {error})",
        run_time(outcome.run),
        outcome.failed.len(),
        outcome.copies
    ))
}

/// Set `LastRunSucceeded` from the newest finished run.
pub fn apply_last_run(
    conditions: &mut Vec<Condition>,
    outcome: Option<&RunOutcome>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let (status, reason, message) = match outcome {
        None => (
            "Unknown",
            c::REASON_NO_RUN_YET,
            "no run of this schedule has finished yet".to_string(),
        ),
        Some(o) => match failure_message(o) {
            Some(message) => ("False", c::REASON_RUN_FAILED, message),
            None => (
                "True",
                c::REASON_RUN_SUCCEEDED,
                format!(
                    "the run of {} stored every copy ({})",
                    run_time(o.run),
                    o.copies
                ),
            ),
        },
    };
    set_condition_status(
        conditions,
        c::LAST_RUN_SUCCEEDED,
        status,
        reason,
        &message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kstatus's verdict for a custom resource (a port of `checkGenericProperties`,
    /// `checkGeneration` and `checkReadyCondition` in sigs.k8s.io/cli-utils
    /// `pkg/kstatus/status`), to check what Helm, Flux and Argo CD will conclude.
    fn kstatus(
        deleting: bool,
        generation: Option<i64>,
        observed: Option<i64>,
        conditions: &[Condition],
    ) -> &'static str {
        if deleting {
            return "Terminating";
        }
        if let (Some(g), Some(o)) = (generation, observed)
            && g != o
        {
            return "InProgress";
        }
        for cond in conditions {
            if cond.type_ == "Reconciling" && cond.status == "True" {
                return "InProgress";
            }
            if cond.type_ == "Stalled" && cond.status == "True" {
                return "Failed";
            }
        }
        match conditions.iter().find(|c| c.type_ == "Ready") {
            Some(cond) if cond.status == "True" => "Current",
            Some(_) => "InProgress",
            None => "Current",
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
        conditions.iter().find(|c| c.type_ == type_)
    }

    fn copy(run: i64, name: &str, phase: Phase, error: Option<&str>) -> RunCopy {
        RunCopy {
            run,
            name: name.into(),
            phase,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn a_new_valid_schedule_is_current_before_any_run() {
        let mut conditions = Vec::new();
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: false },
            Some(1),
            now(),
        );
        apply_last_run(&mut conditions, None, Some(1), now());
        assert_eq!(kstatus(false, Some(1), Some(1), &conditions), "Current");
        let ready = find(&conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Scheduled")
        );
        assert_eq!(ready.observed_generation, Some(1));
        let last = find(&conditions, "LastRunSucceeded").unwrap();
        assert_eq!(
            (last.status.as_str(), last.reason.as_str()),
            ("Unknown", "NoRunYet")
        );
        assert!(find(&conditions, "Stalled").is_none());
        assert!(find(&conditions, "Reconciling").is_none());
        // Suspended is valid too.
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: true },
            Some(1),
            now(),
        );
        assert_eq!(kstatus(false, Some(1), Some(1), &conditions), "Current");
        assert_eq!(find(&conditions, "Ready").unwrap().reason, "Suspended");
    }

    #[test]
    fn a_failed_run_is_information_and_never_makes_the_schedule_unhealthy() {
        let mut conditions = Vec::new();
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: false },
            Some(3),
            now(),
        );
        let copies = [
            copy(100, "local-a", Phase::Ready, None),
            copy(100, "s3-a", Phase::Failed, Some("S3 bucket missing")),
        ];
        let outcome = last_finished_run(&copies).unwrap();
        apply_last_run(&mut conditions, Some(&outcome), Some(3), now());
        // BackupsHealthy False is information too.
        set_condition_status(
            &mut conditions,
            c::BACKUPS_HEALTHY,
            "False",
            c::REASON_LAST_RUN_FAILED,
            "the run failed",
            Some(3),
            now(),
        );
        assert_eq!(kstatus(false, Some(3), Some(3), &conditions), "Current");
        let last = find(&conditions, "LastRunSucceeded").unwrap();
        assert_eq!(last.status, "False");
        assert_eq!(
            last.message,
            "the run of 1970-01-01T00:01:40Z: 1 of 2 copies failed (s3-a: S3 bucket missing)"
        );
    }

    #[test]
    fn an_invalid_schedule_is_stalled_and_a_fixed_one_becomes_current() {
        let mut conditions = Vec::new();
        apply_verdict(
            &mut conditions,
            Verdict::Stalled {
                reason: "InvalidSpec",
                message: "schedule \"nope\": not a cron expression",
            },
            Some(1),
            now(),
        );
        assert_eq!(kstatus(false, Some(1), Some(1), &conditions), "Failed");
        let stalled = find(&conditions, "Stalled").unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(find(&conditions, "Ready").unwrap().status, "False");

        // The fix is a new generation: InProgress until the controller observes it.
        assert_eq!(kstatus(false, Some(2), Some(1), &conditions), "InProgress");
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: false },
            Some(2),
            now(),
        );
        assert_eq!(kstatus(false, Some(2), Some(2), &conditions), "Current");
        assert!(find(&conditions, "Stalled").is_none());
    }

    #[test]
    fn a_transient_error_on_a_new_generation_is_in_progress_not_failed() {
        let mut conditions = Vec::new();
        apply_verdict(
            &mut conditions,
            Verdict::Stalled {
                reason: crate::consts::errors::SECRET_MISSING,
                message: "S3 config Secret etcd-snapshot/s3 not found",
            },
            Some(1),
            now(),
        );
        apply_verdict(
            &mut conditions,
            Verdict::Retrying {
                message: "reading Secret etcd-snapshot/s3: 503",
            },
            Some(2),
            now(),
        );
        assert_eq!(kstatus(false, Some(2), Some(2), &conditions), "InProgress");
        assert!(find(&conditions, "Stalled").is_none());
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: false },
            Some(2),
            now(),
        );
        assert_eq!(kstatus(false, Some(2), Some(2), &conditions), "Current");
        assert!(find(&conditions, "Reconciling").is_none());
    }

    #[test]
    fn the_condition_of_earlier_versions_is_removed() {
        let mut conditions = Vec::new();
        set_condition_status(
            &mut conditions,
            "Invalid",
            "False",
            "Valid",
            "ok",
            Some(1),
            now(),
        );
        apply_verdict(
            &mut conditions,
            Verdict::Valid { suspended: false },
            Some(1),
            now(),
        );
        assert!(find(&conditions, "Invalid").is_none());
    }

    #[test]
    fn the_last_finished_run_skips_runs_in_flight() {
        assert_eq!(last_finished_run(&[]), None);
        let copies = [
            copy(100, "a", Phase::Ready, None),
            copy(100, "b", Phase::Ready, None),
            copy(200, "c", Phase::Failed, Some("boom")),
            copy(300, "d", Phase::Ready, None),
            copy(300, "e", Phase::Running, None),
        ];
        let outcome = last_finished_run(&copies).unwrap();
        assert_eq!(outcome.run, 200);
        assert_eq!(outcome.failed, vec![("c".to_string(), "boom".to_string())]);
        let ok = last_finished_run(&copies[..2]).unwrap();
        assert_eq!((ok.run, ok.copies, ok.failed.len()), (100, 2, 0));
        assert_eq!(failure_message(&ok), None);
    }

    #[test]
    fn an_unchanged_verdict_keeps_the_transition_time() {
        let mut conditions = Vec::new();
        let verdict = Verdict::Valid { suspended: false };
        apply_verdict(&mut conditions, verdict, Some(1), now());
        let later = now() + chrono::Duration::hours(1);
        apply_verdict(&mut conditions, verdict, Some(1), later);
        let ready = find(&conditions, "Ready").unwrap();
        assert_eq!(ready.last_transition_time.0.as_second(), 1_800_000_000);
    }
}
