//! One view of every stored copy, local or S3, and its ETCDSnapshotFile form (used by `ls -o`,
//! `prune`, and the operator's sync).

use super::local::LocalEntry;
use super::s3::S3Entry;
use crate::api::{
    Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotFileStatus, EncryptionStatus,
    Phase, S3Location, Storage,
};
use crate::consts::{self, s3_metadata};
use crate::naming::{esf_name, is_encrypted_name, label_value, parse_snapshot_name};
use crate::snapshot::crypt::ALGORITHM_NAME;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A stored copy of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCopy {
    /// Local or S3.
    pub storage: Storage,
    /// Snapshot (file) name.
    pub name: String,
    /// `file://…` or `s3://…`.
    pub location: String,
    /// Node that holds (local) or uploaded (S3) the copy; `s3` when unknown.
    pub node_name: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// Unix seconds: the timestamp in the name, else the file/object time.
    pub created_unix: i64,
    /// Compression implied by the name.
    pub compression: Compression,
    /// Recorded sha256 of the stored bytes, when known.
    pub sha256: Option<String>,
    /// etcd cluster ID recorded with the copy (S3 metadata), when known.
    pub cluster_id: Option<String>,
    /// etcd revision recorded with the copy, when known.
    pub revision: Option<i64>,
    /// S3 settings of an S3 copy.
    pub s3: Option<S3Location>,
    /// How the stored bytes are encrypted (an `.enc` name), with the key id when recorded.
    pub encryption: Option<EncryptionStatus>,
}

impl StoredCopy {
    /// A Ready record as a stored copy, for retention (`None` unless Ready).
    pub fn from_record(esf: &ETCDSnapshotFile) -> Option<StoredCopy> {
        let status = esf.status.as_ref()?;
        if status.phase != Some(Phase::Ready) {
            return None;
        }
        Some(StoredCopy {
            storage: esf.storage(),
            name: esf.spec.snapshot_name.clone(),
            location: esf.spec.location.clone(),
            node_name: esf.spec.node_name.clone(),
            size: status
                .size
                .as_ref()
                .and_then(|q| q.0.parse().ok())
                .unwrap_or(0),
            created_unix: status
                .creation_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or_default(),
            compression: esf.spec.compression,
            sha256: status.sha256.clone(),
            cluster_id: status
                .etcd_cluster_id
                .clone()
                .or_else(|| esf.labels().get(consts::LABEL_CLUSTER_ID).cloned()),
            revision: status.etcd_revision,
            s3: esf.spec.s3.clone(),
            encryption: status.encryption.clone(),
        })
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The encryption an `.enc` name implies, with the key id when it is known.
fn encryption_of(name: &str, key_id: Option<String>) -> Option<EncryptionStatus> {
    is_encrypted_name(name).then(|| EncryptionStatus {
        algorithm: ALGORITHM_NAME.to_string(),
        key_id: key_id.unwrap_or_default(),
    })
}

fn created_from(name: &str, fallback: Option<SystemTime>) -> i64 {
    parse_snapshot_name(name)
        .map(|p| p.unix_seconds)
        .unwrap_or_else(|| fallback.map(unix).unwrap_or(0))
}

impl StoredCopy {
    /// A file in the local snapshot directory of `node`. For an encrypted (`.enc`) file the key
    /// id is read from its header.
    pub fn from_local(entry: &LocalEntry, node: &str, sha256: Option<String>) -> StoredCopy {
        StoredCopy {
            storage: Storage::Local,
            name: entry.name.clone(),
            location: format!("file://{}", entry.path.display()),
            node_name: node.to_string(),
            size: entry.size,
            created_unix: created_from(&entry.name, Some(entry.modified)),
            compression: Compression::from_name(&entry.name),
            sha256,
            cluster_id: None,
            revision: None,
            s3: None,
            encryption: encryption_of(
                &entry.name,
                crate::snapshot::crypt::file_key_id(&entry.path).map(|id| id.to_hex()),
            ),
        }
    }

    /// An object in S3 (our metadata keys, or k3s's for its uploads).
    pub fn from_s3(entry: &S3Entry, location: String, s3: S3Location) -> StoredCopy {
        let meta = |k: &str| entry.metadata.get(k).filter(|v| !v.is_empty()).cloned();
        StoredCopy {
            storage: Storage::S3,
            name: entry.name.clone(),
            location,
            node_name: meta(s3_metadata::NODE_NAME)
                .or_else(|| meta(s3_metadata::K3S_NODE_NAME))
                .unwrap_or_else(|| consts::STORAGE_S3.to_string()),
            size: entry.size,
            created_unix: created_from(&entry.name, entry.last_modified),
            compression: Compression::from_name(&entry.name),
            sha256: meta(s3_metadata::SHA256),
            cluster_id: meta(s3_metadata::CLUSTER_ID),
            revision: meta(s3_metadata::REVISION).and_then(|r| r.parse().ok()),
            s3: Some(s3),
            encryption: encryption_of(&entry.name, meta(s3_metadata::ENCRYPTION_KEY_ID)),
        }
    }

    /// The ETCDSnapshotFile describing this copy (Ready: it exists).
    pub fn to_esf(&self) -> ETCDSnapshotFile {
        let name = esf_name(self.storage, &self.name, &self.node_name, &self.location);
        let mut esf = ETCDSnapshotFile::new(
            &name,
            ETCDSnapshotFileSpec {
                snapshot_name: self.name.clone(),
                node_name: self.node_name.clone(),
                location: self.location.clone(),
                s3: self.s3.clone(),
                metadata: None,
                compression: self.compression,
                compression_level: None,
                schedule_name: None,
                s3_config_secret_name: None,
                encryption: None,
            },
        );
        let storage_label = match self.storage {
            Storage::Local => label_value(&self.node_name),
            Storage::S3 => consts::STORAGE_S3.to_string(),
        };
        let mut labels = BTreeMap::from([
            (consts::LABEL_STORAGE.to_string(), storage_label),
            (consts::LABEL_NODE.to_string(), label_value(&self.node_name)),
        ]);
        if let Some(id) = &self.cluster_id {
            labels.insert(consts::LABEL_CLUSTER_ID.to_string(), label_value(id));
        }
        esf.metadata.labels = Some(labels);
        esf.status = Some(ETCDSnapshotFileStatus {
            phase: Some(Phase::Ready),
            ready_to_use: Some(true),
            size: Some(Quantity(self.size.to_string())),
            creation_time: jiff::Timestamp::from_second(self.created_unix)
                .ok()
                .map(Time),
            sha256: self.sha256.clone(),
            etcd_revision: self.revision,
            etcd_cluster_id: self.cluster_id.clone(),
            encryption: self.encryption.clone(),
            ..Default::default()
        });
        esf
    }

    /// Creation time as RFC 3339 (UTC, seconds), as the reference's `ls` prints it.
    pub fn created_rfc3339(&self) -> String {
        jiff::Timestamp::from_second(self.created_unix)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }
}

/// Sort copies as the reference's `ls`: by creation time, then name, then storage.
pub fn sort_copies(copies: &mut [StoredCopy]) {
    copies.sort_by(|a, b| {
        (a.created_unix, &a.name, a.storage.as_str()).cmp(&(
            b.created_unix,
            &b.name,
            b.storage.as_str(),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn local_copy_takes_its_time_from_the_name() {
        let entry = LocalEntry {
            name: "on-demand-n1-1730308816".into(),
            path: PathBuf::from("/snaps/on-demand-n1-1730308816"),
            size: 42,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        };
        let c = StoredCopy::from_local(&entry, "n1", None);
        assert_eq!(c.created_unix, 1_730_308_816);
        assert_eq!(c.created_rfc3339(), "2024-10-30T17:20:16Z");
        assert_eq!(c.location, "file:///snaps/on-demand-n1-1730308816");
        let esf = c.to_esf();
        assert!(
            esf.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("local-on-demand-n1-1730308816-"))
        );
        let status = esf.status.expect("status");
        assert_eq!(status.size, Some(Quantity("42".into())));
        assert_eq!(status.phase, Some(Phase::Ready));
    }

    #[test]
    fn s3_copy_reads_node_from_our_or_k3s_metadata() {
        let mut entry = S3Entry {
            name: "etcd-snapshot-a-10.zip".into(),
            key: "f/etcd-snapshot-a-10.zip".into(),
            size: 7,
            last_modified: None,
            metadata: BTreeMap::from([(s3_metadata::K3S_NODE_NAME.to_string(), "a".to_string())]),
        };
        let loc = S3Location::default();
        let c = StoredCopy::from_s3(
            &entry,
            "s3://b/f/etcd-snapshot-a-10.zip".into(),
            loc.clone(),
        );
        assert_eq!(c.node_name, "a");
        assert_eq!(c.compression, Compression::Zip);
        entry.metadata.clear();
        let c = StoredCopy::from_s3(&entry, "s3://b/f/x".into(), loc);
        assert_eq!(c.node_name, "s3");
        assert_eq!(c.created_unix, 10);
    }

    #[test]
    fn encrypted_copies_are_snapshots_with_their_compression_and_key_id() {
        let entry = S3Entry {
            name: "etcd-snapshot-a-10.zst.enc".into(),
            key: "f/etcd-snapshot-a-10.zst.enc".into(),
            size: 7,
            last_modified: None,
            metadata: BTreeMap::from([(
                s3_metadata::ENCRYPTION_KEY_ID.to_string(),
                "0123456789abcdef".to_string(),
            )]),
        };
        let c = StoredCopy::from_s3(&entry, "s3://b/f/x".into(), S3Location::default());
        assert_eq!((c.compression, c.created_unix), (Compression::Zstd, 10));
        let status = c.to_esf().status.expect("status");
        let enc = status.encryption.expect("encryption recorded");
        assert_eq!(enc.algorithm, "aes-256-gcm");
        assert_eq!(enc.key_id, "0123456789abcdef");

        let dir = tempfile::tempdir().expect("tempdir");
        let key = crate::snapshot::crypt::EncryptionKey::generate().expect("key");
        let path = dir.path().join("on-demand-n1-5.enc");
        let mut w = crate::snapshot::crypt::EncryptWriter::new(Vec::new(), &key).expect("writer");
        std::io::Write::write_all(&mut w, b"data").expect("write");
        std::fs::write(&path, w.finish().expect("finish")).expect("file");
        let entry = LocalEntry {
            name: "on-demand-n1-5.enc".into(),
            path,
            size: 4,
            modified: SystemTime::UNIX_EPOCH,
        };
        let c = StoredCopy::from_local(&entry, "n1", None);
        assert_eq!((c.compression, c.created_unix), (Compression::None, 5));
        let enc = c.encryption.expect("encrypted");
        assert_eq!(enc.key_id, key.id().to_hex());
    }
}
