//! Storage preflight: before a schedule's S3 copies depend on it, the controller checks that its
//! S3 settings can list the folder and write, read and delete a probe object there, and says in
//! the `StorageReady` condition which action is refused and what that breaks. It checks when the
//! settings (the Secret included) change and every `--s3-preflight-interval`; a failure is one
//! Warning event per distinct message, not one per reconcile.

use crate::api::conditions::{remove_condition, set_condition_status};
use crate::consts::conditions as c;
use crate::storage::config::S3Config;
use crate::storage::s3::{PreflightStep, S3Error, S3Store};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a preflight may take (it runs inside a reconcile: S3 down must not hold ticks back).
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of one preflight, as the condition shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `True` or `False`.
    pub ok: bool,
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

/// The settings each schedule was last checked with, when, and the outcome.
#[derive(Debug, Default)]
pub struct Checked {
    last: Mutex<HashMap<String, (S3Config, Instant, Outcome)>>,
}

impl Checked {
    /// The last outcome for `schedule`, if it was checked with exactly `cfg` less than `every`
    /// ago.
    pub fn fresh(&self, schedule: &str, cfg: &S3Config, every: Duration) -> Option<Outcome> {
        let last = self.last.lock().ok()?;
        let (seen, at, outcome) = last.get(schedule)?;
        (seen == cfg && at.elapsed() < every).then(|| outcome.clone())
    }

    /// Remember an outcome.
    pub fn record(&self, schedule: &str, cfg: &S3Config, outcome: &Outcome) {
        if let Ok(mut last) = self.last.lock() {
            last.insert(
                schedule.to_string(),
                (cfg.clone(), Instant::now(), outcome.clone()),
            );
        }
    }
}

/// The condition for a preflight result (pure).
pub fn outcome(cfg: &S3Config, result: Result<(), (PreflightStep, String, bool)>) -> Outcome {
    let place = if cfg.folder.is_empty() {
        format!("bucket {}", cfg.bucket)
    } else {
        format!("bucket {}, folder {}", cfg.bucket, cfg.folder)
    };
    match result {
        Ok(()) => Outcome {
            ok: true,
            reason: c::REASON_STORAGE_CHECKED,
            message: format!("{place}: listing, writing, reading and deleting work"),
        },
        Err((step, error, true)) => Outcome {
            ok: false,
            reason: c::REASON_PERMISSION_DENIED,
            message: format!(
                "{} refused: {} ({place}; {error})",
                step.action(),
                step.consequence()
            ),
        },
        Err((step, error, false)) => Outcome {
            ok: false,
            reason: c::REASON_CHECK_FAILED,
            message: format!(
                "{} failed: {} ({place}; {error})",
                step.action(),
                step.consequence()
            ),
        },
    }
}

/// Whether S3 refused the action itself (valid credentials, missing permission).
fn refused(e: &S3Error) -> bool {
    matches!(e, S3Error::AccessDenied { code, .. } if code == "AccessDenied" || code == "HTTP 403")
}

/// Run the preflight against `cfg` (I/O), bounded by [`PREFLIGHT_TIMEOUT`].
pub async fn check(cfg: &S3Config) -> Outcome {
    let run = async {
        let store = S3Store::connect(cfg)
            .await
            .map_err(|e| (PreflightStep::List, e))?;
        store.preflight().await
    };
    let result = match tokio::time::timeout(PREFLIGHT_TIMEOUT, run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err((step, e))) => Err((step, e.to_string(), refused(&e))),
        Err(_) => Err((
            PreflightStep::List,
            format!("no answer within {}s", PREFLIGHT_TIMEOUT.as_secs()),
            false,
        )),
    };
    outcome(cfg, result)
}

/// Write `StorageReady` (or remove it when the schedule has no S3 storage). Returns the message
/// of a failure that the conditions did not already show (to be published once as a Warning).
pub fn apply(
    conditions: &mut Vec<Condition>,
    outcome: Option<&Outcome>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Option<String> {
    let Some(o) = outcome else {
        remove_condition(conditions, c::STORAGE_READY);
        return None;
    };
    let shown = conditions
        .iter()
        .find(|x| x.type_ == c::STORAGE_READY && x.status == "False")
        .map(|x| x.message.clone());
    let status = if o.ok { "True" } else { "False" };
    set_condition_status(
        conditions,
        c::STORAGE_READY,
        status,
        o.reason,
        &o.message,
        generation,
        now,
    );
    (!o.ok && shown.as_deref() != Some(o.message.as_str())).then(|| o.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3Config {
        let mut cfg = S3Config::from_schedule_inline(&crate::api::S3Storage {
            enabled: true,
            bucket: Some("backups".into()),
            folder: Some("prod".into()),
            ..Default::default()
        })
        .unwrap();
        cfg.folder = "prod".into();
        cfg
    }

    #[test]
    fn a_refused_action_is_named_with_what_it_breaks() {
        let o = outcome(
            &cfg(),
            Err((
                PreflightStep::Delete,
                "S3 refused DeleteObject (AccessDenied)".into(),
                true,
            )),
        );
        assert_eq!((o.ok, o.reason), (false, "PermissionDenied"));
        assert_eq!(
            o.message,
            "DeleteObject refused: retention cannot prune (bucket backups, folder prod; S3 refused DeleteObject (AccessDenied))"
        );
        let o = outcome(
            &cfg(),
            Err((PreflightStep::List, "cannot reach S3".into(), false)),
        );
        assert_eq!(o.reason, "CheckFailed");
        assert!(
            o.message.starts_with("ListObjects failed: S3 sync"),
            "{}",
            o.message
        );
        assert!(outcome(&cfg(), Ok(())).ok);
    }

    #[test]
    fn a_failure_is_announced_once_until_it_changes() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut conditions = Vec::new();
        let bad = outcome(&cfg(), Err((PreflightStep::List, "refused".into(), true)));
        assert!(apply(&mut conditions, Some(&bad), Some(1), now).is_some());
        assert!(apply(&mut conditions, Some(&bad), Some(1), now).is_none());
        let other = outcome(&cfg(), Err((PreflightStep::Write, "refused".into(), true)));
        assert!(apply(&mut conditions, Some(&other), Some(1), now).is_some());
        assert!(
            apply(
                &mut conditions,
                Some(&outcome(&cfg(), Ok(()))),
                Some(1),
                now
            )
            .is_none()
        );
        assert_eq!(conditions[0].status, "True");
        // After a success, the same failure is news again.
        assert!(apply(&mut conditions, Some(&bad), Some(1), now).is_some());
        apply(&mut conditions, None, Some(1), now);
        assert!(conditions.is_empty());
    }

    #[test]
    fn a_check_is_fresh_only_for_the_same_settings_within_the_interval() {
        let checked = Checked::default();
        let o = outcome(&cfg(), Ok(()));
        checked.record("s", &cfg(), &o);
        let hour = Duration::from_secs(3600);
        assert_eq!(checked.fresh("s", &cfg(), hour), Some(o));
        let mut rotated = cfg();
        rotated.secret_key = Some("new".into());
        assert_eq!(checked.fresh("s", &rotated, hour), None);
        assert_eq!(checked.fresh("s", &cfg(), Duration::ZERO), None);
        assert_eq!(checked.fresh("other", &cfg(), hour), None);
    }
}
