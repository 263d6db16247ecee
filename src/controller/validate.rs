//! Validation of an ETCDSnapshotSchedule spec, without I/O: what CEL rules would do, reported in
//! status and events instead (the test API server knows no CEL).

use crate::api::{
    CompressionKind, ETCDSnapshotScheduleSpec, Members, RetentionScope, SecretKeyRef,
};
use crate::consts::DEFAULT_RETENTION;
use crate::naming::{is_label_value, validate_snapshot_name};
use crate::retention::Policy;
use crate::schedule::Schedule;
use crate::storage::config::{S3Config, clashing_inline_fields};
use std::collections::BTreeMap;

/// Where a valid schedule's S3 settings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Source {
    /// The config Secret of this name, in the operator namespace.
    Secret(String),
    /// The inline, non-secret fields of the spec.
    Inline,
}

/// A schedule spec that passed every check.
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    /// Parsed cron expression and time zone.
    pub schedule: Schedule,
    /// Snapshot name prefix.
    pub prefix: String,
    /// zstd level when compressing.
    pub zstd_level: Option<i32>,
    /// Which members snapshot.
    pub members: Members,
    /// Node labels an agent's node must have.
    pub node_selector: BTreeMap<String, String>,
    /// Local retention, when local copies are on.
    pub local: Option<Policy>,
    /// S3 source and retention, when S3 copies are on.
    pub s3: Option<(S3Source, Policy, RetentionScope)>,
    /// Catch-up window for missed ticks.
    pub starting_deadline: Option<chrono::Duration>,
    /// The Secret key holding the encryption key, when snapshots are encrypted.
    pub encryption: Option<SecretKeyRef>,
}

/// Check a spec; `namespace` is the operator's own (the only one S3 config Secrets are read
/// from). The error is one line saying exactly what is wrong, for the Invalid condition and the
/// Warning event.
pub fn validate(spec: &ETCDSnapshotScheduleSpec, namespace: &str) -> Result<ValidSchedule, String> {
    let schedule = Schedule::parse(&spec.schedule, &spec.time_zone).map_err(|e| e.to_string())?;
    if spec.name_prefix.is_empty() || !is_label_value(&spec.name_prefix) {
        return Err(format!(
            "namePrefix {:?} must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            spec.name_prefix
        ));
    }
    // The longest name this prefix can produce must still be a safe file name.
    let probe = format!(
        "{}-{}-{}.zst.enc",
        spec.name_prefix,
        "n".repeat(63),
        i64::MAX
    );
    validate_snapshot_name(&probe).map_err(|e| format!("namePrefix: {e}"))?;
    let zstd_level = match spec.compression.kind {
        CompressionKind::None => None,
        CompressionKind::Zstd => {
            let level = spec.compression.level.unwrap_or(1);
            if !(1..=19).contains(&level) {
                return Err(format!(
                    "compression.level {level} must be between 1 and 19"
                ));
            }
            Some(level)
        }
    };
    let starting_deadline = match spec.starting_deadline_seconds {
        Some(s) if s < 0 => {
            return Err(format!("startingDeadlineSeconds {s} must not be negative"));
        }
        Some(s) => Some(chrono::Duration::seconds(s)),
        None => None,
    };
    let local_spec = spec.local.retention.clone().unwrap_or_default();
    let local_policy = Policy::from_spec(&local_spec, DEFAULT_RETENTION)
        .map_err(|e| format!("local.retention: {e}"))?;
    let local_count = local_policy.count.unwrap_or(DEFAULT_RETENTION);
    let s3 = match &spec.s3 {
        Some(s3) if s3.enabled => {
            let source = match &s3.config_secret_ref {
                Some(r) => {
                    if r.name.is_empty() {
                        return Err("s3.configSecretRef.name is empty".into());
                    }
                    if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != namespace) {
                        return Err(format!(
                            "s3.configSecretRef.namespace {ns:?} is refused: S3 config Secrets are read only from the operator's namespace {namespace:?}"
                        ));
                    }
                    let clash = clashing_inline_fields(s3);
                    if !clash.is_empty() {
                        return Err(format!(
                            "s3.configSecretRef is set together with inline s3 fields ({}): use the Secret or the inline fields, not both",
                            clash.join(", ")
                        ));
                    }
                    S3Source::Secret(r.name.clone())
                }
                None => {
                    if s3.bucket.as_deref().unwrap_or_default().is_empty() {
                        return Err(
                            "s3 is enabled but has neither configSecretRef nor bucket".into()
                        );
                    }
                    // The inline fields must make a valid config now, not fail at every run.
                    S3Config::from_schedule_inline(s3).map_err(|e| e.to_string())?;
                    S3Source::Inline
                }
            };
            let retention = s3.retention.clone().unwrap_or_default();
            // S3 retention defaults to the local count, not a fixed 5.
            let policy = Policy::from_spec(&retention, local_count)
                .map_err(|e| format!("s3.retention: {e}"))?;
            Some((source, policy, s3.retention_scope))
        }
        _ => None,
    };
    let encryption = match &spec.encryption {
        Some(e) => {
            let r = &e.key_secret_ref;
            if r.name.is_empty() || r.key.is_empty() {
                return Err(
                    "encryption.keySecretRef needs a Secret name and a key in its data".into(),
                );
            }
            Some(r.clone())
        }
        None => None,
    };
    if !spec.local.enabled && s3.is_none() {
        return Err(
            "nowhere to store snapshots: local.enabled is false and s3 is not enabled".into(),
        );
    }
    Ok(ValidSchedule {
        schedule,
        prefix: spec.name_prefix.clone(),
        zstd_level,
        members: spec.members,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        local: spec.local.enabled.then_some(local_policy),
        s3,
        starting_deadline,
        encryption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_in(spec: &ETCDSnapshotScheduleSpec) -> Result<ValidSchedule, String> {
        validate(spec, "etcd-snapshot")
    }

    fn spec(yaml: &str) -> ETCDSnapshotScheduleSpec {
        serde_yaml::from_str(yaml).expect("spec YAML")
    }

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let v = validate_in(&spec("{}")).expect("valid");
        assert_eq!(v.schedule.expression(), "0 */12 * * *");
        assert_eq!(v.prefix, "etcd-snapshot");
        assert_eq!(v.members, Members::One);
        assert_eq!(v.local.and_then(|p| p.count), Some(5));
        assert!(v.s3.is_none());
    }

    #[test]
    fn s3_retention_defaults_to_the_local_count() {
        let v = validate_in(&spec(
            "local: {retention: {count: 9}}\ns3: {enabled: true, configSecretRef: {name: s}}",
        ))
        .expect("valid");
        let (source, policy, scope) = v.s3.expect("s3");
        assert_eq!(source, S3Source::Secret("s".into()));
        assert_eq!(policy.count, Some(9));
        assert_eq!(scope, RetentionScope::Node);
    }

    #[test]
    fn a_secret_ref_naming_the_operator_namespace_is_accepted() {
        let v = validate_in(&spec(
            "s3: {enabled: true, configSecretRef: {name: s, namespace: etcd-snapshot}}",
        ))
        .expect("valid");
        assert!(v.s3.is_some());
    }

    #[test]
    fn invalid_specs_say_what_is_wrong() {
        for (yaml, needle) in [
            ("schedule: '* * *'", "5 fields"),
            ("schedule: '0 0 0 * * *'", "5 fields"),
            ("schedule: 'x y z a b'", ""),
            ("timeZone: Mars/Olympus", "Mars/Olympus"),
            ("namePrefix: 'a/b'", "namePrefix"),
            ("namePrefix: '..'", "namePrefix"),
            ("local: {retention: {count: 0}}", "local.retention"),
            ("local: {retention: {maxAge: soon}}", "soon"),
            ("startingDeadlineSeconds: -5", "negative"),
            (
                "s3: {enabled: true, configSecretRef: {name: s}, bucket: b, endpoint: e}",
                "endpoint, bucket",
            ),
            ("s3: {enabled: true}", "neither configSecretRef nor bucket"),
            ("local: {enabled: false}", "nowhere to store"),
            ("compression: {type: zstd, level: 30}", "between 1 and 19"),
            (
                "s3: {enabled: true, configSecretRef: {name: s, namespace: kube-system}}",
                "\"kube-system\" is refused",
            ),
            (
                "s3: {enabled: true, bucket: b1b, endpoint: 'https://s3.example.com/path'}",
                "s3.endpoint",
            ),
            (
                "s3: {enabled: true, bucket: b1b, timeout: 'five minutes'}",
                "five minutes",
            ),
            (
                "s3: {enabled: true, bucket: b1b, proxy: 'proxy.example:3128'}",
                "proxy.example:3128",
            ),
            (
                "s3: {enabled: true, bucket: b1b, endpointCA: 'not a PEM'}",
                "s3.endpointCA",
            ),
            ("s3: {enabled: true, bucket: 'Bad_Bucket'}", "Bad_Bucket"),
            (
                "encryption: {keySecretRef: {name: ''}}",
                "encryption.keySecretRef",
            ),
            (
                "encryption: {keySecretRef: {name: k, key: ''}}",
                "encryption.keySecretRef",
            ),
        ] {
            let err = validate_in(&spec(yaml)).expect_err(yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
