//! Which etcd version wrote a snapshot's data, which version a restore tool is, and whether the
//! tool may restore it: the version rule (never restore data of a newer etcd minor than the
//! tool's) and the bump rule (a revision bump needs `--bump-revision`/`--mark-compacted`, which
//! etcdutl has since 3.5.10). The rules are pure functions; reading the snapshot and asking the
//! tool are at the edges.
//!
//! What etcd writes into its `meta` bucket (*measured* on 3.4.23, 3.5.1 and 3.5.30; 3.6 from its
//! source, `server/storage/schema`): 3.4 writes `consistent_index` only; 3.5 adds `term` and
//! `confState`; 3.6 adds `storageVersion` (`"3.6.0"`), the key its own `etcdutl snapshot status`
//! reads to report a snapshot's version. etcdutl 3.5's `snapshot status` reports no version.

use super::bolt::{BoltError, BoltFile};
use std::fmt;
use std::path::Path;

/// etcd's bucket of bookkeeping keys.
const META_BUCKET: &[u8] = b"meta";
/// Written by etcd 3.6 and newer: the storage version, e.g. `3.6.0`.
const KEY_STORAGE_VERSION: &[u8] = b"storageVersion";
/// Written by etcd 3.5 and newer: the raft term of the last applied entry.
const KEY_TERM: &[u8] = b"term";
/// Written by etcd 3.5 and newer: the raft membership configuration.
const KEY_CONF_STATE: &[u8] = b"confState";

/// The first etcd release whose etcdutl has `snapshot restore --bump-revision --mark-compacted`
/// (etcd#16165, the 3.5 backport of etcd#16029).
pub const BUMP_SINCE: Release = Release {
    major: 3,
    minor: 5,
    patch: 10,
};

/// An etcd release, as a tool reports it (`etcdutl version: 3.5.30`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl Release {
    /// Parse `3.5.30` (a leading `v` and a suffix such as `-rc.0` or `+git` are accepted).
    pub fn parse(s: &str) -> Option<Release> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Release {
            major,
            minor,
            patch,
        })
    }

    /// Its minor version, e.g. 3.5.
    pub fn minor(self) -> Minor {
        Minor {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// An etcd minor version (3.4, 3.5, 3.6): what data compatibility follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl Minor {
    /// etcd 3.4: the last release whose `etcdctl` restores (it has no etcdutl).
    pub const V3_4: Minor = Minor { major: 3, minor: 4 };
    /// etcd 3.5: etcdutl appears; `etcdctl snapshot restore` is deprecated.
    pub const V3_5: Minor = Minor { major: 3, minor: 5 };
    /// etcd 3.6: `etcdctl snapshot restore` and `status` are gone.
    pub const V3_6: Minor = Minor { major: 3, minor: 6 };
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The etcd release recorded beside a snapshot (the member that served it), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRelease {
    /// The release.
    pub release: Release,
    /// Where it was recorded: "the S3 object metadata", "the ETCDSnapshotFile".
    pub from: String,
}

impl RecordedRelease {
    /// `raw` as recorded in `from`, when it is a version.
    pub fn parse(raw: &str, from: &str) -> Option<RecordedRelease> {
        Release::parse(raw).map(|release| RecordedRelease {
            release,
            from: from.to_string(),
        })
    }
}

/// The etcd minor version whose data a snapshot (or data dir) holds, and how that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVersion {
    /// The version.
    pub minor: Minor,
    /// How it is known, for messages: "storageVersion 3.6.0 in its meta bucket".
    pub evidence: String,
}

impl DataVersion {
    /// From the `meta` bucket's keys: `storageVersion` (3.6+), else `term`/`confState` (3.5),
    /// else 3.4 (or older).
    pub fn from_meta(
        storage_version: Option<&[u8]>,
        has_term: bool,
        has_conf_state: bool,
    ) -> Result<DataVersion, String> {
        if let Some(raw) = storage_version {
            let text = String::from_utf8_lossy(raw);
            let release = Release::parse(&text).ok_or_else(|| {
                format!(
                    "its meta bucket's storageVersion {:?} is not a version",
                    shorten(&text)
                )
            })?;
            return Ok(DataVersion {
                minor: release.minor(),
                evidence: format!("storageVersion {} in its meta bucket", shorten(&text)),
            });
        }
        if has_term || has_conf_state {
            return Ok(DataVersion {
                minor: Minor::V3_5,
                evidence: "its meta bucket has the term and confState keys of etcd 3.5".into(),
            });
        }
        Ok(DataVersion {
            minor: Minor::V3_4,
            evidence: "its meta bucket has neither storageVersion nor term".into(),
        })
    }

    /// The newer of the data's own version and a version recorded beside it (the etcd that
    /// served the snapshot, from S3 metadata or the ETCDSnapshotFile); on a tie the data's
    /// evidence is kept.
    pub fn with_recorded(self, recorded: Option<&RecordedRelease>) -> DataVersion {
        match recorded {
            Some(r) if r.release.minor() > self.minor => DataVersion {
                minor: r.release.minor(),
                evidence: format!("etcd {} recorded in {}", r.release, r.from),
            },
            _ => self,
        }
    }
}

impl fmt::Display for DataVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {} data ({})", self.minor, self.evidence)
    }
}

/// Read which etcd version wrote the database file `db` (a plain snapshot, or a data dir's
/// `member/snap/db`), from its `meta` bucket.
pub fn read_data_version(db: &Path) -> Result<DataVersion, BoltError> {
    let file = BoltFile::open(db)?;
    let storage_version = file.get(META_BUCKET, KEY_STORAGE_VERSION)?;
    let term = file.get(META_BUCKET, KEY_TERM)?;
    let conf_state = file.get(META_BUCKET, KEY_CONF_STATE)?;
    DataVersion::from_meta(
        storage_version.as_deref(),
        term.is_some(),
        conf_state.is_some(),
    )
    .map_err(BoltError::Format)
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_as_tools_print_them() {
        let r = |a, b, c| Release {
            major: a,
            minor: b,
            patch: c,
        };
        assert_eq!(Release::parse("3.5.30"), Some(r(3, 5, 30)));
        assert_eq!(Release::parse(" v3.6.0-rc.1\n"), Some(r(3, 6, 0)));
        assert_eq!(Release::parse("3.4"), Some(r(3, 4, 0)));
        assert_eq!(Release::parse("3.5.x"), None);
        assert_eq!(Release::parse("3.5.1.2"), None);
        assert_eq!(Release::parse(""), None);
        assert!(r(3, 5, 9) < BUMP_SINCE && BUMP_SINCE <= r(3, 5, 10) && r(3, 6, 0) > BUMP_SINCE);
        assert_eq!(r(3, 5, 30).minor().to_string(), "3.5");
    }

    #[test]
    fn the_meta_bucket_tells_the_version() {
        let v = DataVersion::from_meta(Some(b"3.6.0"), true, true).expect("3.6");
        assert_eq!(v.minor, Minor::V3_6);
        assert!(
            v.evidence.contains("storageVersion 3.6.0"),
            "{}",
            v.evidence
        );
        let v = DataVersion::from_meta(None, true, true).expect("3.5");
        assert_eq!(v.minor, Minor::V3_5);
        let v = DataVersion::from_meta(None, false, true).expect("3.5 without term");
        assert_eq!(v.minor, Minor::V3_5);
        let v = DataVersion::from_meta(None, false, false).expect("3.4");
        assert_eq!(v.minor, Minor::V3_4);
        assert!(DataVersion::from_meta(Some(b"garbage"), true, true).is_err());
    }

    #[test]
    fn a_newer_recorded_version_wins() {
        let data = DataVersion::from_meta(None, true, true).expect("3.5");
        let same = data
            .clone()
            .with_recorded(RecordedRelease::parse("3.5.30", "S3").as_ref());
        assert_eq!(same, data);
        let newer = data
            .clone()
            .with_recorded(RecordedRelease::parse("3.6.1", "the S3 object metadata").as_ref());
        assert_eq!(newer.minor, Minor::V3_6);
        assert_eq!(
            newer.to_string(),
            "etcd 3.6 data (etcd 3.6.1 recorded in the S3 object metadata)"
        );
        assert_eq!(data.clone().with_recorded(None), data);
    }

    #[test]
    fn the_version_is_read_from_a_bbolt_file() {
        use super::super::bolt::tests::etcd_like;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        etcd_like(&[
            (0, b"confState", b"{}".to_vec()),
            (0, b"consistent_index", vec![0; 8]),
            (0, b"storageVersion", b"3.6.0".to_vec()),
            (0, b"term", vec![0; 8]),
        ])
        .write(&path);
        assert_eq!(read_data_version(&path).expect("read").minor, Minor::V3_6);
        etcd_like(&[(0, b"consistent_index", vec![0; 8])]).write(&path);
        assert_eq!(read_data_version(&path).expect("read").minor, Minor::V3_4);
    }
}
