//! Fuzzing (issue 7) with proptest over everything that parses outside input without I/O: the S3
//! config from a Secret's data map and from a schedule's inline fields, Go durations, retention
//! durations, cron and time zones, schedule specs, snapshot names, ESF object names, label
//! values, and the local location checks. Each property says: never panics, and whatever is
//! accepted satisfies the invariants the rest of the code relies on (names are single safe file
//! names, ESF names are DNS-1123, a local location is always inside the directory, no credential
//! in any `Debug`, `Display` or error text).
//!
//! Bounded: 1000 cases per property by default (a few seconds in all); `PROPTEST_CASES=N` raises
//! or lowers it (e.g. a longer nightly run). Failures are not persisted to files.

use etcd_snapshot::api::{ETCDSnapshotScheduleSpec, S3Storage, Storage};
use etcd_snapshot::consts::secret_keys as k;
use etcd_snapshot::controller::validate::validate;
use etcd_snapshot::duration::parse_go;
use etcd_snapshot::naming::{
    esf_name, is_dns1123_subdomain, is_label_value, label_value, parse_snapshot_name,
    validate_snapshot_name,
};
use etcd_snapshot::restore::Source;
use etcd_snapshot::schedule::Schedule;
use etcd_snapshot::storage::config::S3Config;
use etcd_snapshot::storage::local::LocalDir;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that hit the parsers' special characters often, or anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:/._@ \\-\\[\\]%?#\\\\\u{0}-\u{1f}]{0,40}",
        "(https?://|s3://|socks5://|)[a-z0-9.\\-]{0,20}(:[0-9]{0,6})?(/[a-z.]{0,8})?",
        "[0-9]{0,4}(\\.[0-9]{0,3})?(ns|us|µs|ms|s|m|h|d|w|x|)[0-9]{0,3}(s|m|h|)",
        any::<String>(),
    ]
}

/// A credential value that cannot appear by chance.
fn credential(tag: &'static str) -> impl Strategy<Value = String> {
    "[A-Za-z0-9/+]{4,20}".prop_map(move |s| format!("CRED{tag}{s}END"))
}

fn secret_keys() -> Vec<&'static str> {
    vec![
        k::ENDPOINT,
        k::ENDPOINT_CA,
        k::SKIP_SSL_VERIFY,
        k::BUCKET,
        k::BUCKET_LOOKUP_TYPE,
        k::FOLDER,
        k::REGION,
        k::INSECURE,
        k::TIMEOUT,
        k::PROXY,
        "unknown-key",
    ]
}

/// Invariants of every accepted config.
fn check_config(cfg: &S3Config) -> Result<(), TestCaseError> {
    prop_assert!(!cfg.endpoint.is_empty());
    prop_assert!(!cfg.endpoint.contains("://"), "{}", cfg.endpoint);
    prop_assert!(
        !cfg.endpoint.contains(['/', '@', '?', '#']),
        "{}",
        cfg.endpoint
    );
    prop_assert!((3..=63).contains(&cfg.bucket.len()), "{}", cfg.bucket);
    prop_assert!(
        cfg.bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "{}",
        cfg.bucket
    );
    prop_assert!(!cfg.timeout.is_zero());
    prop_assert!(!cfg.folder.starts_with('/') && !cfg.folder.ends_with('/'));
    prop_assert!(
        !cfg.folder
            .split('/')
            .any(|s| s == ".." || (s.is_empty() && !cfg.folder.is_empty()))
    );
    // The object key of a valid snapshot name stays under the folder.
    let key = cfg.object_key("etcd-snapshot-node-1");
    prop_assert!(key.ends_with("/etcd-snapshot-node-1") || key == "etcd-snapshot-node-1");
    prop_assert!(key.starts_with(&cfg.folder));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any Secret data map: no panic; an accepted config is well-formed; neither its `Debug`
    /// nor any error shows the access key, secret key or session token.
    #[test]
    fn s3_config_from_any_secret_data(
        values in proptest::collection::vec((0usize..11, text()), 0..8),
        raw in proptest::collection::vec(any::<u8>(), 0..16),
        with_keys in 0u8..4,
        access in credential("A"),
        secret in credential("S"),
        token in credential("T"),
    ) {
        let keys = secret_keys();
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        data.insert(k::BUCKET.into(), b"bucket-1".to_vec());
        for (i, v) in values {
            data.insert(keys[i].to_string(), v.into_bytes());
        }
        // Sometimes a value that is not UTF-8.
        if !raw.is_empty() {
            data.insert(keys[raw[0] as usize % keys.len()].to_string(), raw.clone());
        }
        if with_keys & 1 == 1 {
            data.insert(k::ACCESS_KEY.into(), access.clone().into_bytes());
        }
        if with_keys & 2 == 2 {
            data.insert(k::SECRET_KEY.into(), secret.clone().into_bytes());
            data.insert(k::SESSION_TOKEN.into(), token.clone().into_bytes());
        }
        // A proxy with credentials in its user info, valid or not.
        if with_keys == 3 && raw.len() % 3 == 0 {
            let port = raw.first().map_or(0, |b| *b as u32 * 300);
            let proxy = format!("http://user:{token}@proxy.local:{port}");
            data.insert(k::PROXY.into(), proxy.into_bytes());
        }
        let ca = BTreeMap::from([("ca.crt".to_string(), "garbage".to_string())]);
        let cm = (raw.len() % 2 == 0).then_some(&ca);
        let shown = match S3Config::from_secret(&data, cm) {
            Ok(cfg) => {
                check_config(&cfg)?;
                prop_assert_eq!(cfg.access_key.is_some(), cfg.secret_key.is_some());
                format!("{cfg:?} {:?}", cfg.proxy)
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.contains('\n'), "{}", text);
                format!("{text} {e:?}")
            }
        };
        for cred in [&access, &secret, &token] {
            prop_assert!(!shown.contains(cred.as_str()), "{} shown in {}", cred, shown);
        }
    }

    /// Any inline schedule fields: no panic; an accepted config is well-formed.
    #[test]
    fn s3_config_from_any_inline_fields(
        endpoint in proptest::option::of(text()),
        bucket in proptest::option::of(prop_oneof!["[a-z0-9.\\-]{2,64}", text()]),
        folder in proptest::option::of(text()),
        timeout in proptest::option::of(text()),
        proxy in proptest::option::of(text()),
        ca in proptest::option::of(text()),
        insecure in proptest::option::of(any::<bool>()),
    ) {
        let spec = S3Storage {
            enabled: true,
            endpoint,
            endpoint_ca: ca,
            bucket,
            folder,
            timeout,
            proxy,
            insecure,
            ..S3Storage::default()
        };
        if let Ok(cfg) = S3Config::from_schedule_inline(&spec) {
            check_config(&cfg)?;
            prop_assert!(cfg.access_key.is_none());
        }
    }

    /// Go durations: no panic, and `Ns`/`Nm`/`Nh` mean what they say.
    #[test]
    fn go_durations(s in text(), n in 0u64..1_000_000) {
        let _ = parse_go(&s);
        prop_assert_eq!(parse_go(&format!("{n}s")).map(|d| d.as_secs()), Some(n));
        prop_assert_eq!(parse_go(&format!("{n}m")).map(|d| d.as_secs()), Some(n * 60));
        prop_assert_eq!(parse_go(&format!("{n}h")).map(|d| d.as_secs()), Some(n * 3600));
        prop_assert_eq!(parse_go(&format!("-{n}s")), None);
    }

    /// Retention durations, cron expressions and time zones: no panic.
    #[test]
    fn retention_and_cron_parsers(s in text(), tz in text()) {
        let _ = etcd_snapshot::retention::parse_duration(&s);
        let _ = Schedule::parse(&s, &tz);
        let _ = Schedule::parse(&s, "UTC");
    }

    /// Whole schedule specs from arbitrary strings: no panic; an accepted spec's prefix always
    /// gives safe snapshot names and valid ESF names.
    #[test]
    fn schedule_specs(
        cron in prop_oneof!["[0-9*/,\\- ]{0,20}", text()],
        tz in prop_oneof![Just("UTC".to_string()), Just("Europe/Berlin".to_string()), text()],
        prefix in prop_oneof!["[a-zA-Z0-9._\\-]{0,70}", text()],
        max_age in proptest::option::of(text()),
        count in proptest::option::of(0u32..10),
        secret_ns in proptest::option::of(prop_oneof![Just("etcd-snapshot".to_string()), text()]),
        node in "[a-z0-9][a-z0-9.\\-]{0,60}[a-z0-9]",
    ) {
        let mut yaml = serde_json::json!({
            "schedule": cron,
            "timeZone": tz,
            "namePrefix": prefix,
            "local": {"retention": {"maxAge": max_age, "count": count}},
        });
        if let Some(ns) = secret_ns {
            yaml["s3"] = serde_json::json!({
                "enabled": true,
                "configSecretRef": {"name": "s", "namespace": ns},
            });
        }
        let Ok(spec) = serde_json::from_value::<ETCDSnapshotScheduleSpec>(yaml) else {
            return Ok(());
        };
        match validate(&spec, "etcd-snapshot") {
            Ok(v) => {
                let name = format!("{}-{node}-1730308816.zst", v.prefix);
                prop_assert!(validate_snapshot_name(&name).is_ok(), "{}", name);
                let esf = esf_name(Storage::Local, &name, &node, "file:///x");
                prop_assert!(is_dns1123_subdomain(&esf), "{}", esf);
            }
            Err(message) => prop_assert!(!message.contains('\n'), "{}", message),
        }
    }

    /// Snapshot names: an accepted name is one safe file name inside the directory, and its
    /// location is exactly the directory plus the name.
    #[test]
    fn snapshot_names_stay_in_the_directory(name in text()) {
        let dir = LocalDir::new(Path::new("/var/lib/etcd-snapshots"));
        match validate_snapshot_name(&name) {
            Ok(()) => {
                prop_assert!(!name.is_empty() && name.len() <= 255);
                prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains(".."));
                prop_assert!(!name.starts_with('.'));
                prop_assert!(!name.chars().any(char::is_control));
                let path = dir.path_of(&name).expect("path of a valid name");
                prop_assert_eq!(path.parent(), Some(dir.path()));
                prop_assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(name.as_str()));
                prop_assert_eq!(dir.location(&name), format!("file://{}", path.display()));
            }
            Err(e) => {
                prop_assert!(dir.path_of(&name).is_err());
                prop_assert!(!e.to_string().contains('\n') || name.contains('\n'));
            }
        }
        let _ = parse_snapshot_name(&name);
    }

    /// The agent's test for "this record's location is mine": whenever it holds, the file is
    /// directly inside the directory. (`location` is any string a hand-made record may carry.)
    #[test]
    fn a_location_the_agent_accepts_is_inside_its_directory(
        name in text(),
        location in prop_oneof![
            text(),
            text().prop_map(|s| format!("file:///var/lib/etcd-snapshots/{s}")),
            text().prop_map(|s| format!("file:///var/lib/etcd-snapshots/../{s}")),
        ],
    ) {
        let dir = LocalDir::new(Path::new("/var/lib/etcd-snapshots"));
        let accepted = dir.path_of(&name).is_ok() && dir.location(&name) == location;
        if accepted {
            let path = Path::new(location.strip_prefix("file://").expect("file:// location"));
            prop_assert_eq!(path.parent(), Some(dir.path()));
            prop_assert!(path.components().all(|c| matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )));
        }
    }

    /// Command-line snapshot arguments: names are validated, paths are paths.
    #[test]
    fn restore_sources(spec in text()) {
        let dir = LocalDir::new(Path::new("/var/lib/etcd-snapshots"));
        match Source::resolve(&spec, &dir, None) {
            Ok(Source::Local { name, .. }) => prop_assert!(validate_snapshot_name(&name).is_ok()),
            Ok(Source::Path(p)) => prop_assert!(Source::is_explicit_path(&p.to_string_lossy())),
            Ok(Source::S3 { .. }) => prop_assert!(false, "no store was given"),
            Err(_) => prop_assert!(validate_snapshot_name(&spec).is_err()),
        }
    }

    /// ESF object names and label values are always valid, whatever the snapshot and node names.
    #[test]
    fn object_names_and_labels_are_always_valid(
        name in text(),
        node in text(),
        location in text(),
        s3 in any::<bool>(),
    ) {
        let storage = if s3 { Storage::S3 } else { Storage::Local };
        let esf = esf_name(storage, &name, &node, &location);
        prop_assert!(is_dns1123_subdomain(&esf), "{:?}", esf);
        prop_assert!(is_label_value(&label_value(&node)), "{:?}", node);
        prop_assert!(is_label_value(&label_value(&name)));
    }
}
