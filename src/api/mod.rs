//! The custom resources of group `etcdsnapshot.io/v1`, both cluster-scoped.

mod common;
mod file;
mod schedule;

pub use common::{
    BucketLookup, Compression, EncryptionSpec, EncryptionStatus, Retention, S3Location,
    SecretKeyRef,
};
pub use file::{
    ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotFileStatus, Phase, SnapshotError,
};
pub use schedule::{
    CompressionKind, CompressionSpec, ETCDSnapshotSchedule, ETCDSnapshotScheduleSpec,
    ETCDSnapshotScheduleStatus, LocalStorage, Members, RetentionScope, S3Storage, SecretRef,
    VerifySpec,
};

use kube::CustomResourceExt;

/// The CRDs as one multi-document YAML stream, exactly what `etcd-snapshot crd` prints and
/// `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [ETCDSnapshotFile::crd(), ETCDSnapshotSchedule::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
