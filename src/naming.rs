//! Snapshot names, ETCDSnapshotFile object names, and the checks that keep names safe to use as
//! file names and object keys. Pure functions, no I/O.

use crate::api::{Compression, Storage};
use sha2::{Digest, Sha256};

/// Why a snapshot name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("snapshot name is empty")]
    Empty,
    /// Longer than a file name may be.
    #[error("snapshot name {0:?} is longer than 255 bytes")]
    TooLong(String),
    /// Contains a path separator, `..`, or a control character.
    #[error("snapshot name {0:?} must not contain '/', '\\', '..' or control characters")]
    Unsafe(String),
    /// Starts with a dot (hidden files, `.metadata`).
    #[error("snapshot name {0:?} must not start with '.'")]
    Hidden(String),
    /// Built from a prefix or node name that breaks the `<prefix>-<node>-<unix>` shape.
    #[error("snapshot name {0:?} does not end in -<unix seconds>[.zst][.enc]")]
    Shape(String),
}

/// The longest snapshot name accepted (a file name on common file systems).
pub const MAX_SNAPSHOT_NAME: usize = 255;

/// Check that `name` can be used as a single file name and S3 key component: no path
/// separators, no `..`, no control characters, not hidden, not empty.
pub fn validate_snapshot_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SNAPSHOT_NAME {
        return Err(NameError::TooLong(name.to_string()));
    }
    if name.contains('/') || name.contains('\\') || name.contains("..") {
        return Err(NameError::Unsafe(name.to_string()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Unsafe(name.to_string()));
    }
    if name.starts_with('.') {
        return Err(NameError::Hidden(name.to_string()));
    }
    Ok(())
}

/// A snapshot name that was checked once, where it was built or read from outside (a user's
/// argument, a record's spec, a directory or S3 listing): safe as one file name and one S3 key
/// component (see [`validate_snapshot_name`]). Code that holds one does not check it again.
/// Whether it also has the `<prefix>-<node>-<unix>[.zst|.zip][.enc]` shape of the names this
/// operator and k3s make is [`SnapshotName::parts`]: names of other origins (a file copied by
/// hand) are valid too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// Check `name` (see [`validate_snapshot_name`]).
    pub fn new(name: impl Into<String>) -> Result<SnapshotName, NameError> {
        let name = name.into();
        validate_snapshot_name(&name)?;
        Ok(SnapshotName(name))
    }

    /// `<prefix>-<node>-<unix seconds>`, plus `.zst` when compressed and `.enc` when
    /// encrypted; refused when the prefix or the node make it unsafe or break its shape (the
    /// time must read back from the name).
    pub fn build(
        prefix: &str,
        node: &str,
        unix_seconds: i64,
        compression: Compression,
        encrypted: bool,
    ) -> Result<SnapshotName, NameError> {
        let name = SnapshotName::new(with_encryption_suffix(
            snapshot_name(prefix, node, unix_seconds, compression),
            encrypted,
        ))?;
        match name.parts() {
            Some(p) if p.unix_seconds == unix_seconds && p.stem == format!("{prefix}-{node}") => {
                Ok(name)
            }
            _ => Err(NameError::Shape(name.0)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its parts, when it has the `<prefix>-<node>-<unix>[.zst|.zip][.enc]` shape.
    pub fn parts(&self) -> Option<ParsedName<'_>> {
        parse_snapshot_name(&self.0)
    }
}

impl std::ops::Deref for SnapshotName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SnapshotName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SnapshotName> for String {
    fn from(name: SnapshotName) -> String {
        name.0
    }
}

impl PartialEq<str> for SnapshotName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// `<prefix>-<node>-<unix seconds>` plus the compression suffix (`.zst`).
pub fn snapshot_name(
    prefix: &str,
    node: &str,
    unix_seconds: i64,
    compression: Compression,
) -> String {
    format!("{prefix}-{node}-{unix_seconds}{}", compression.suffix())
}

/// Whether a snapshot name is that of an encrypted snapshot (ends in `.enc`).
pub fn is_encrypted_name(name: &str) -> bool {
    name.ends_with(crate::consts::SUFFIX_ENC)
}

/// `name` with the `.enc` suffix of encrypted snapshots added when `encrypted`.
pub fn with_encryption_suffix(name: String, encrypted: bool) -> String {
    if encrypted {
        name + crate::consts::SUFFIX_ENC
    } else {
        name
    }
}

/// The parts of a snapshot name, as far as they can be told from the name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName<'a> {
    /// Everything before the timestamp (`<prefix>-<node>`), without the trailing `-`.
    pub stem: &'a str,
    /// Unix seconds after the last `-`.
    pub unix_seconds: i64,
    /// Compression implied by the suffix.
    pub compression: Compression,
    /// Whether the name ends in `.enc` (an encrypted snapshot).
    pub encrypted: bool,
}

/// Split `<stem>-<unix seconds>[.zst|.zip][.enc]`. `None` when there is no timestamp after the
/// last `-`.
pub fn parse_snapshot_name(name: &str) -> Option<ParsedName<'_>> {
    let encrypted = is_encrypted_name(name);
    let name = name.strip_suffix(crate::consts::SUFFIX_ENC).unwrap_or(name);
    let compression = Compression::from_name(name);
    let base = &name[..name.len() - compression.suffix().len()];
    let (stem, ts) = base.rsplit_once('-')?;
    if stem.is_empty() || ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unix_seconds = ts.parse().ok()?;
    Some(ParsedName {
        stem,
        unix_seconds,
        compression,
        encrypted,
    })
}

/// Whether `s` is a valid DNS-1123 subdomain (the rule for object names): at most 253
/// characters, lowercase alphanumerics, `-` and `.`, each dot-separated label starting and ending
/// with an alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && label
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_alphanumeric)
            && label
                .as_bytes()
                .last()
                .is_some_and(u8::is_ascii_alphanumeric)
    })
}

/// First 6 hex characters of sha256(node + location): tells apart copies of the same snapshot
/// name on different nodes or in different places.
pub fn location_hash(node: &str, location: &str) -> String {
    let digest = Sha256::new()
        .chain_update(node.as_bytes())
        .chain_update(location.as_bytes())
        .finalize();
    hex::encode(&digest[..3])
}

/// The ETCDSnapshotFile object name of a copy:
/// `<storage>-<snapshot name lowercased>-<location hash>`. When that is not a valid DNS-1123
/// name (characters, or length), the snapshot name part is rewritten to valid characters and
/// shortened; the location hash keeps it unique.
pub fn esf_name(storage: Storage, snapshot_name: &str, node: &str, location: &str) -> String {
    let hash = location_hash(node, location);
    let preferred = format!(
        "{}-{}-{hash}",
        storage.as_str(),
        snapshot_name.to_lowercase()
    );
    if is_dns1123_subdomain(&preferred) {
        return preferred;
    }
    // Fallback: keep [a-z0-9-], turn anything else (including '.') into '-', squeeze repeats,
    // trim, and cut so that the whole name fits in 253 characters.
    let mut middle = String::with_capacity(snapshot_name.len());
    for c in snapshot_name.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && middle.ends_with('-')) {
            middle.push(c);
        }
    }
    let budget = 253 - storage.as_str().len() - hash.len() - 2;
    let middle: String = middle.trim_matches('-').chars().take(budget).collect();
    let middle = middle.trim_end_matches('-');
    if middle.is_empty() {
        format!("{}-{hash}", storage.as_str())
    } else {
        format!("{}-{middle}-{hash}", storage.as_str())
    }
}

/// Whether `s` is a valid label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with an alphanumeric (or empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric))
}

/// A label value standing for `s`: `s` itself when valid, else a stable `h-<hash>` form (node
/// names may be up to 253 characters; label values only 63).
pub fn label_value(s: &str) -> String {
    if is_label_value(s) {
        s.to_string()
    } else {
        let digest = Sha256::digest(s.as_bytes());
        format!("h-{}", hex::encode(&digest[..16]))
    }
}

/// The `etcdsnapshot.io/request` label value of the run started by a `requested-at` value.
pub fn request_label(requested_at: &str) -> String {
    hex::encode(&Sha256::digest(requested_at.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn snapshot_name_has_prefix_node_and_seconds() {
        assert_eq!(
            snapshot_name("on-demand", "k3s-server-1", 1730308816, Compression::None),
            "on-demand-k3s-server-1-1730308816"
        );
        assert_eq!(
            snapshot_name("etcd-snapshot", "n1", 5, Compression::Zstd),
            "etcd-snapshot-n1-5.zst"
        );
    }

    #[test]
    fn esf_name_matches_reference_form() {
        let loc =
            "file:///var/lib/rancher/k3s/server/db/snapshots/on-demand-k3s-server-1-1730308816";
        let name = esf_name(
            Storage::Local,
            "on-demand-k3s-server-1-1730308816",
            "k3s-server-1",
            loc,
        );
        let hash = location_hash("k3s-server-1", loc);
        assert_eq!(
            name,
            format!("local-on-demand-k3s-server-1-1730308816-{hash}")
        );
        assert_eq!(hash.len(), 6);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn esf_name_lowercases_and_keeps_dots() {
        let name = esf_name(Storage::S3, "On-Demand-N1-7.zst", "N1", "s3://b/x");
        assert!(name.starts_with("s3-on-demand-n1-7.zst-"), "{name}");
        assert!(is_dns1123_subdomain(&name));
    }

    #[test]
    fn esf_name_falls_back_when_invalid() {
        let name = esf_name(Storage::Local, "snap_with_UNDERSCORE__x", "n", "file:///a");
        assert!(is_dns1123_subdomain(&name), "{name}");
        assert!(name.starts_with("local-snap-with-underscore-x-"), "{name}");
        let long = "a".repeat(300);
        let name = esf_name(Storage::Local, &long, "n", "file:///a");
        assert!(is_dns1123_subdomain(&name) && name.len() <= 253, "{name}");
        let name = esf_name(Storage::S3, "___", "n", "s3://b/___");
        assert!(is_dns1123_subdomain(&name), "{name}");
    }

    #[test]
    fn different_locations_give_different_names() {
        let a = esf_name(Storage::Local, "x-n1-1", "n1", "file:///a/x-n1-1");
        let b = esf_name(Storage::Local, "x-n1-1", "n2", "file:///a/x-n1-1");
        assert_ne!(a, b);
    }

    #[test]
    fn parse_splits_stem_time_and_compression() {
        let p = parse_snapshot_name("etcd-snapshot-node-a-1700000000.zst").expect("parses");
        assert_eq!(p.stem, "etcd-snapshot-node-a");
        assert_eq!(p.unix_seconds, 1_700_000_000);
        assert_eq!(p.compression, Compression::Zstd);
        let p = parse_snapshot_name("on-demand-n-12.zip").expect("parses");
        assert_eq!(p.compression, Compression::Zip);
        let p = parse_snapshot_name("on-demand-n-12.zst.enc").expect("parses");
        assert_eq!((p.stem, p.unix_seconds), ("on-demand-n", 12));
        assert_eq!(p.compression, Compression::Zstd);
        assert!(p.encrypted);
        let p = parse_snapshot_name("on-demand-n-12.enc").expect("parses");
        assert_eq!((p.compression, p.encrypted), (Compression::None, true));
        assert!(
            !parse_snapshot_name("on-demand-n-12")
                .expect("parses")
                .encrypted
        );
        assert!(parse_snapshot_name("no-timestamp-here").is_none());
        assert!(parse_snapshot_name("-12").is_none());
        assert!(parse_snapshot_name("12").is_none());
    }

    #[test]
    fn unsafe_snapshot_names_are_refused() {
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "../etc/shadow",
            "x\\y",
            ".metadata",
            "a\nb",
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_snapshot_name(&"a".repeat(256)).is_err());
        assert!(validate_snapshot_name("on-demand-node-1-1700000000.zst").is_ok());
    }

    #[test]
    fn a_snapshot_name_is_checked_once_where_it_is_made() {
        let name = SnapshotName::build("on-demand", "n1", 1_700_000_000, Compression::Zstd, true)
            .expect("valid");
        assert_eq!(name.as_str(), "on-demand-n1-1700000000.zst.enc");
        let parts = name.parts().expect("shape");
        assert_eq!(
            (parts.stem, parts.unix_seconds),
            ("on-demand-n1", 1_700_000_000)
        );
        assert!(parts.encrypted);
        // Unsafe parts are refused with one clear line.
        let err =
            SnapshotName::build("x", "../n", 1, Compression::None, false).expect_err("unsafe");
        assert_eq!(
            err.to_string(),
            r#"snapshot name "x-../n-1" must not contain '/', '\', '..' or control characters"#
        );
        assert!(matches!(
            SnapshotName::build(".x", "n", 1, Compression::None, false),
            Err(NameError::Hidden(_))
        ));
        // A name of another origin is valid, without the shape.
        let copied = SnapshotName::new("backup.db").expect("valid");
        assert!(copied.parts().is_none());
        assert_eq!(&*copied, "backup.db");
        for bad in ["", "a/b", "..", ".metadata", "a\nb"] {
            assert!(SnapshotName::new(bad).is_err(), "{bad:?}");
        }
        assert!(SnapshotName::new("a".repeat(256)).is_err());
    }

    #[test]
    fn dns1123_rules() {
        assert!(is_dns1123_subdomain("a.b-c"));
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", ".a"] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn label_values_fall_back_to_hash() {
        assert_eq!(label_value("node-1"), "node-1");
        let long = "n".repeat(100);
        let v = label_value(&long);
        assert!(is_label_value(&v) && v.starts_with("h-"), "{v}");
        assert_eq!(v, label_value(&long));
    }

    proptest! {
        #[test]
        fn esf_name_is_always_a_valid_object_name(snap in "\\PC{0,300}", node in "\\PC{0,40}", loc in "\\PC{0,80}") {
            let name = esf_name(Storage::Local, &snap, &node, &loc);
            prop_assert!(is_dns1123_subdomain(&name), "{}", name);
        }

        #[test]
        fn label_value_is_always_valid(s in "\\PC{0,100}") {
            prop_assert!(is_label_value(&label_value(&s)));
        }

        #[test]
        fn built_names_are_safe_and_read_back(prefix in "[a-z][a-z0-9-]{0,20}", node in "[a-z0-9][a-z0-9.-]{0,30}", ts in 0i64..4_000_000_000, z in any::<bool>(), enc in any::<bool>()) {
            let c = if z { Compression::Zstd } else { Compression::None };
            // Node names with ".." are refused; every other one builds a name that reads back.
            match SnapshotName::build(&prefix, &node, ts, c, enc) {
                Ok(name) => {
                    prop_assert!(validate_snapshot_name(&name).is_ok());
                    prop_assert_eq!(name.parts().map(|p| p.unix_seconds), Some(ts));
                }
                Err(e) => prop_assert!(node.contains(".."), "{}", e),
            }
        }

        #[test]
        fn parse_round_trips_generated_names(prefix in "[a-z][a-z0-9-]{0,20}", node in "[a-z0-9][a-z0-9.-]{0,30}", ts in 0i64..4_000_000_000, z in any::<bool>(), enc in any::<bool>()) {
            let c = if z { Compression::Zstd } else { Compression::None };
            let name = with_encryption_suffix(snapshot_name(&prefix, &node, ts, c), enc);
            let parsed = parse_snapshot_name(&name).expect("generated names parse");
            prop_assert_eq!(parsed.unix_seconds, ts);
            prop_assert_eq!(parsed.compression, c);
            prop_assert_eq!(parsed.encrypted, enc);
            prop_assert_eq!(parsed.stem, format!("{prefix}-{node}"));
        }
    }
}
