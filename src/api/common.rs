//! Types shared by both custom resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a stored snapshot is compressed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain etcd snapshot (with etcd's trailing sha256).
    #[default]
    None,
    /// zstd, streamed; the file or object name ends in `.zst`.
    Zstd,
    /// k3s's zip (one deflate entry); read and restored, never written. Name ends in `.zip`.
    Zip,
}

impl Compression {
    /// The lowercase name used in the spec, in S3 metadata and in CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Zip => "zip",
        }
    }

    /// The file-name suffix (`""`, `.zst`, `.zip`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => crate::consts::SUFFIX_ZSTD,
            Compression::Zip => crate::consts::SUFFIX_ZIP,
        }
    }

    /// The compression a file or object name implies by its suffix (an encrypted name's
    /// `.enc` is looked through: `x.zst.enc` is zstd).
    pub fn from_name(name: &str) -> Compression {
        let name = name.strip_suffix(crate::consts::SUFFIX_ENC).unwrap_or(name);
        if name.ends_with(crate::consts::SUFFIX_ZSTD) {
            Compression::Zstd
        } else if name.ends_with(crate::consts::SUFFIX_ZIP) {
            Compression::Zip
        } else {
            Compression::None
        }
    }
}

/// How the S3 client addresses the bucket.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BucketLookup {
    /// Virtual-host style for AWS-like endpoints, path style otherwise.
    #[default]
    Auto,
    /// Virtual-host style: `https://BUCKET.endpoint/key`.
    Dns,
    /// Path style: `https://endpoint/BUCKET/key`.
    Path,
}

/// Where an S3 copy lives. Never holds credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// S3 endpoint, `host[:port]` (default `s3.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PEM CA bundle used to verify the endpoint, if not a public CA.
    #[serde(
        default,
        rename = "endpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<String>,
    /// TLS verification of the endpoint is disabled.
    #[serde(
        default,
        rename = "skipSSLVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub skip_ssl_verify: Option<bool>,
    /// Bucket name.
    pub bucket: String,
    /// Bucket addressing: `auto`, `dns` (virtual host) or `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_lookup: Option<BucketLookup>,
    /// Region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Folder (key prefix) the snapshot is stored under, as k3s's `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Plain HTTP instead of HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// A retention policy. Snapshots are ordered newest first; a snapshot is kept if any rule keeps
/// it, except that `maxAge` deletes older snapshots whatever the other rules say. The newest
/// Ready snapshot is never deleted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Number of newest snapshots to keep (default 5; for S3, the local count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Delete snapshots older than this (e.g. `36h`, `7d`, `2w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Also keep the newest snapshot of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_hourly: Option<u32>,
    /// Also keep the newest snapshot of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_daily: Option<u32>,
    /// Also keep the newest snapshot of each of the last N ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<u32>,
    /// Also keep the newest snapshot of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_monthly: Option<u32>,
}

/// Encryption at rest of stored snapshots (AES-256-GCM, streamed; see the README).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// The Secret key holding the 32-byte key (raw, base64 or hex), in the operator's own
    /// namespace. Keep a copy elsewhere: without the key the snapshots cannot be restored.
    pub key_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the operator's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret's data (default `key`).
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "key".to_string()
}

/// How the stored bytes of a copy are encrypted (never the key itself).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionStatus {
    /// `aes-256-gcm`.
    pub algorithm: String,
    /// Id of the key (16 hex digits, a fingerprint of the key; empty when unknown).
    #[serde(default, rename = "keyID", skip_serializing_if = "String::is_empty")]
    pub key_id: String,
}

/// Which storage a copy lives in; the first part of its ETCDSnapshotFile name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Storage {
    /// A file in a node's snapshot directory.
    Local,
    /// An object in S3.
    S3,
}

impl Storage {
    /// `local` or `s3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Local => "local",
            Storage::S3 => "s3",
        }
    }
}
