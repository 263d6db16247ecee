//! Status conditions of both custom resources: set one (keeping its transition time while its
//! status holds), remove one.

use super::time::to_time;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Set a condition in `conditions`, keeping its transition time when the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, generation, now);
}

/// As [`set_condition`], with the status as written (`True`, `False` or `Unknown`).
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => to_time(now),
    };
    conditions.retain(|c| c.type_ != type_);
    // Some API servers turn an empty message into null, which the schema refuses.
    let message = if message.is_empty() { reason } else { message };
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Remove the condition of `type_`, if there is one.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}
