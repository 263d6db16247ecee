//! The S3 store: snapshots are objects `<folder>/<name>`; beside them `<folder>/.metadata/<name>`
//! holds the extra metadata as JSON (as k3s). Uploads are multipart, fed as the bytes arrive,
//! with a bounded number of parts in memory; the sha256 of the stored bytes is recorded in the
//! object's user metadata once known.
//!
//! Decisions:
//! - The bucket is checked with ListObjectsV2 (max-keys 1, under the folder), not HeadBucket:
//!   Cloudflare R2 answers 400 to HeadBucket (k3s #13166), and listing is the permission we need.
//! - The sha256 is only known after the last byte, so [`S3Upload::finish`] rewrites the object's
//!   metadata with an in-place CopyObject (`MetadataDirective=REPLACE`). CopyObject is limited to
//!   5 GiB; larger objects (or a refused copy) get the sha256 as an object tag instead, which
//!   [`S3Store::head`] and [`S3Store::list`] read as a fallback.
//! - Request checksums are sent only where S3 requires them: many S3-compatible stores refuse the
//!   CRC trailers newer SDKs add by default. Integrity is end to end: the sha256 of the stored
//!   bytes, checked on download.
//! - `skip-ssl-verify` cannot be expressed in the SDK's TLS settings, so it uses our own small
//!   connector (hyper-util + hyper-rustls, aws-lc-rs) whose certificate verifier accepts any
//!   certificate; handshake signatures are still checked. Only used for HTTPS endpoints.
//! - Small operations get the configured timeout for the whole operation (retries included);
//!   UploadPart and the download stream get it per attempt or per read, so large snapshots never
//!   time out as a whole (k3s #4205, #5833, #9985).
//! - Credentials never appear in an error: S3 answers about credentials become
//!   [`S3Error::AccessDenied`] without the server's message, and every other reason text is
//!   scrubbed of the configured keys.

use crate::consts::{METADATA_DIR, SUFFIX_ZIP, SUFFIX_ZSTD, s3_metadata};
use crate::naming::{NameError, validate_snapshot_name};
use crate::storage::config::{S3Config, S3ConfigError};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective, Tag, Tagging};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

/// Size of an upload part (S3's minimum, except for the last part: the least memory per part).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: i32 = 10_000;
/// The first this many parts are [`PART_SIZE`]: 1,700 × 5 MiB = 8.9 GB holds a snapshot of
/// etcd's largest quota (8 GiB) uncompressed, so every real snapshot has small flat parts.
pub const SMALL_PARTS: i32 = 1_700;
/// Parts after the first [`SMALL_PARTS`] start at this size...
pub const LARGE_PART_SIZE: usize = 64 * 1024 * 1024;
/// ...and double after every this many parts, so 10,000 parts hold more than S3's 5 TiB object
/// limit.
pub const PARTS_PER_SIZE_STEP: i32 = 1_000;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// Parts uploading at once; with the part being filled, at most three parts are in memory.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
/// HeadObject requests in flight while listing.
pub const HEAD_CONCURRENCY: usize = 8;
/// Largest object CopyObject accepts; above it the sha256 is recorded as an object tag.
pub const COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
/// Longest wait for a TCP (and TLS) connection, capped by the configured timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request (the first try and two retries).
pub const ATTEMPTS: u32 = 3;

/// Name of the probe object of [`S3Store::preflight`], under `<folder>/.metadata/`.
pub const PREFLIGHT_PROBE: &str = ".etcd-snapshot-preflight";

/// A step of [`S3Store::preflight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightStep {
    /// ListObjectsV2 on the folder.
    List,
    /// PutObject of the probe.
    Write,
    /// GetObject of the probe.
    Read,
    /// DeleteObject of the probe.
    Delete,
}

impl PreflightStep {
    /// The S3 action.
    pub fn action(self) -> &'static str {
        match self {
            PreflightStep::List => "ListObjects",
            PreflightStep::Write => "PutObject",
            PreflightStep::Read => "GetObject",
            PreflightStep::Delete => "DeleteObject",
        }
    }

    /// What the operator cannot do without it.
    pub fn consequence(self) -> &'static str {
        match self {
            PreflightStep::List => "S3 sync and S3 retention cannot see the stored snapshots",
            PreflightStep::Write => "snapshots cannot be uploaded",
            PreflightStep::Read => "snapshots cannot be downloaded for verify or restore",
            PreflightStep::Delete => "retention cannot prune",
        }
    }
}

/// S3 errors. One line each; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The settings cannot be used to build a client.
    #[error(transparent)]
    Config(#[from] S3ConfigError),
    /// The snapshot name is not a safe key component.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The bucket does not exist.
    #[error(
        "S3 bucket {bucket:?} does not exist: create it, or check the bucket name (--s3-bucket, \
         etcd-s3-bucket in a Secret)"
    )]
    NoSuchBucket {
        /// Bucket.
        bucket: String,
    },
    /// The object does not exist.
    #[error("S3 object {key:?} does not exist")]
    NoSuchKey {
        /// Object key.
        key: String,
    },
    /// S3 refused the credentials or the request's permissions.
    #[error("{}", access_denied_text(op, code))]
    AccessDenied {
        /// Operation.
        op: &'static str,
        /// S3's error code (e.g. `SignatureDoesNotMatch`), or the HTTP status.
        code: String,
    },
    /// The endpoint's certificate is not trusted.
    #[error(
        "the TLS certificate of S3 endpoint {endpoint} is not trusted ({reason}); give its CA \
         with --s3-endpoint-ca (Secret key etcd-s3-endpoint-ca), or set skip-ssl-verify"
    )]
    Tls {
        /// `host[:port]`.
        endpoint: String,
        /// What the verifier said.
        reason: String,
    },
    /// An operation took longer than the configured timeout.
    #[error("S3 {op} timed out after {}", fmt_duration(*after))]
    Timeout {
        /// Operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// No connection to the endpoint (`reason` says why and what to check).
    #[error("cannot reach S3 endpoint {endpoint}: {reason}")]
    Unreachable {
        /// `host[:port]`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Any other failed request.
    #[error("S3 {op} {key:?}: {reason}")]
    Request {
        /// Operation.
        op: &'static str,
        /// Object key (or the bucket for bucket-level operations).
        key: String,
        /// S3's code and message, or the client's error.
        reason: String,
    },
    /// A `.metadata/<name>` object that is not a JSON object of strings.
    #[error("S3 metadata object {key:?} is not a JSON object of strings: {reason}")]
    BadMetadata {
        /// Object key.
        key: String,
        /// Parser message.
        reason: String,
    },
    /// Writing the downloaded file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Local path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl S3Error {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            S3Error::Config(_) => "S3Config",
            S3Error::Name(_) => "BadName",
            S3Error::NoSuchBucket { .. } => "S3NoSuchBucket",
            S3Error::NoSuchKey { .. } => "S3NoSuchKey",
            S3Error::AccessDenied { .. } => "S3AccessDenied",
            S3Error::Tls { .. } => "S3TLS",
            S3Error::Timeout { .. } => "S3Timeout",
            S3Error::Unreachable { .. } => "S3Unreachable",
            S3Error::Request { .. } => "S3Request",
            S3Error::BadMetadata { .. } => "S3BadMetadata",
            S3Error::Io { .. } => "S3LocalIO",
        }
    }

    /// Whether trying again later may succeed without a change of settings.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            S3Error::Timeout { .. } | S3Error::Unreachable { .. } | S3Error::Request { .. }
        )
    }
}

/// Wrong credentials and a missing permission are told apart: S3 answers `AccessDenied` (or a
/// bare 403) when the credentials are valid but may not do `op`.
fn access_denied_text(op: &str, code: &str) -> String {
    if code == "AccessDenied" || code == "HTTP 403" {
        format!(
            "S3 refused {op} ({code}): the credentials are not allowed to do it; grant the \
             permission to their user or policy"
        )
    } else {
        format!(
            "S3 refused the credentials (check the access key and secret key): {op} answered {code}"
        )
    }
}

/// The cause of a failed connection to S3, and what to check.
fn unreachable_hint(cause: &crate::net_error::Cause) -> String {
    use crate::net_error::Cause;
    match cause {
        Cause::Refused => "connection refused: is the S3 server running there? (check the \
                           endpoint: --s3-endpoint, etcd-s3-endpoint in a Secret)"
            .into(),
        Cause::TimedOut => "the connection timed out: check the endpoint and any firewall or \
                            proxy in between"
            .into(),
        Cause::Dns => "the host name does not resolve: check the endpoint (--s3-endpoint, \
                       etcd-s3-endpoint in a Secret)"
            .into(),
        Cause::NotTls | Cause::HandshakeClosed => "it does not speak TLS: if it serves plain \
                                                   HTTP, set --s3-insecure (etcd-s3-insecure: \
                                                   \"true\" in a Secret)"
            .into(),
        Cause::Untrusted(why) => format!("its TLS certificate is not trusted ({why})"),
        Cause::TlsRefused(alert) => format!("it refused the TLS connection ({alert})"),
        Cause::Closed => "the server closed the connection".into(),
        Cause::Other(text) => text.clone(),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A snapshot object found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Entry {
    /// Snapshot name (the key without the folder).
    pub name: String,
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// S3's last-modified time.
    pub last_modified: Option<SystemTime>,
    /// User metadata, keys lowercase; the sha256 tag is merged in under
    /// [`s3_metadata::SHA256`] when the metadata lacks it.
    pub metadata: BTreeMap<String, String>,
}

impl S3Entry {
    /// The recorded sha256 of the stored bytes, if any.
    pub fn sha256(&self) -> Option<&str> {
        self.metadata.get(s3_metadata::SHA256).map(String::as_str)
    }
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// sha256 (hex) of the bytes written.
    pub sha256: String,
}

/// Content type of a snapshot object, from its suffix.
pub fn content_type(name: &str) -> &'static str {
    if name.ends_with(SUFFIX_ZSTD) {
        "application/zstd"
    } else if name.ends_with(SUFFIX_ZIP) {
        "application/zip"
    } else {
        "application/octet-stream"
    }
}

/// Size of part number `part` (1-based): [`PART_SIZE`] for the first [`SMALL_PARTS`], then
/// [`LARGE_PART_SIZE`] doubled every [`PARTS_PER_SIZE_STEP`], at most [`MAX_PART_SIZE`].
pub fn part_size(part: i32) -> usize {
    if part <= SMALL_PARTS {
        return PART_SIZE;
    }
    let step = ((part - SMALL_PARTS - 1) / PARTS_PER_SIZE_STEP).min(16) as u32;
    (LARGE_PART_SIZE << step).min(MAX_PART_SIZE)
}

/// `key` percent-encoded for `x-amz-copy-source` (`/` kept).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn to_system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The configured secrets, removed from any text that goes into an error.
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn of(cfg: &S3Config) -> Secrets {
        let all = [&cfg.access_key, &cfg.secret_key, &cfg.session_token];
        Secrets(
            all.into_iter()
                .flatten()
                .filter(|s| s.len() >= 4)
                .cloned()
                .collect(),
        )
    }

    fn scrub(&self, text: String) -> String {
        self.0
            .iter()
            .fold(text, |t, s| t.replace(s.as_str(), "<redacted>"))
    }
}

struct Inner {
    client: Client,
    cfg: S3Config,
    secrets: Secrets,
}

/// A connected S3 bucket folder. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Build the client and check that the bucket exists and can be listed.
    pub async fn connect(cfg: &S3Config) -> Result<S3Store, S3Error> {
        let secrets = Secrets::of(cfg);
        let client = client::build(cfg).await.map_err(|e| e.scrubbed(&secrets))?;
        let store = S3Store {
            inner: Arc::new(Inner {
                client,
                cfg: cfg.clone(),
                secrets,
            }),
        };
        store
            .client()
            .list_objects_v2()
            .bucket(&store.inner.cfg.bucket)
            .max_keys(1)
            .set_prefix(store.folder_prefix())
            .send()
            .await
            .map_err(|e| store.classify("ListObjectsV2", &store.inner.cfg.bucket, e))?;
        Ok(store)
    }

    /// The settings this store was built from.
    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }

    fn bucket(&self) -> &str {
        &self.inner.cfg.bucket
    }

    /// `folder/`, or `None` at the bucket's root.
    fn folder_prefix(&self) -> Option<String> {
        let folder = &self.inner.cfg.folder;
        (!folder.is_empty()).then(|| format!("{folder}/"))
    }

    fn key_of(&self, name: &str) -> Result<String, S3Error> {
        validate_snapshot_name(name)?;
        Ok(self.inner.cfg.object_key(name))
    }

    fn metadata_key_of(&self, name: &str) -> Result<String, S3Error> {
        validate_snapshot_name(name)?;
        Ok(self.inner.cfg.object_key(&format!("{METADATA_DIR}/{name}")))
    }

    /// Timeouts of operations whose time grows with the data (one part, a copy, a download):
    /// the configured timeout per attempt, none for the whole operation.
    fn per_attempt(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default()
            .timeout_config(client::per_attempt_timeouts(self.inner.cfg.timeout))
    }

    /// Start a multipart upload of snapshot `name` with these user metadata.
    pub async fn begin_upload(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<S3Upload, S3Error> {
        let key = self.key_of(name)?;
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let content_type = content_type(name);
        let out = self
            .client()
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(&key)
            .content_type(content_type)
            .set_metadata(Some(metadata.clone()))
            .send()
            .await
            .map_err(|e| self.classify("CreateMultipartUpload", &key, e))?;
        let upload_id = out.upload_id.ok_or_else(|| S3Error::Request {
            op: "CreateMultipartUpload",
            key: key.clone(),
            reason: "S3 returned no upload ID".into(),
        })?;
        tracing::debug!(%key, "S3 multipart upload started");
        Ok(S3Upload {
            store: self.clone(),
            key,
            upload_id,
            metadata,
            content_type,
            buffer: BytesMut::new(),
            next_part: 1,
            in_flight: JoinSet::new(),
            parts: Vec::new(),
            written: 0,
            open: true,
        })
    }

    /// Snapshot objects directly under the folder, sorted by name: not in sub-folders such as
    /// `.metadata/`, not empty, and with a name that passes [`validate_snapshot_name`].
    pub async fn list(&self) -> Result<Vec<S3Entry>, S3Error> {
        let prefix = self.folder_prefix();
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client()
                .list_objects_v2()
                .bucket(self.bucket())
                .set_prefix(prefix.clone())
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify("ListObjectsV2", self.bucket(), e))?;
            for object in out.contents() {
                let Some(key) = object.key() else { continue };
                let name = key
                    .strip_prefix(prefix.as_deref().unwrap_or(""))
                    .unwrap_or(key);
                if object.size().unwrap_or(0) <= 0 || validate_snapshot_name(name).is_err() {
                    continue;
                }
                found.push((name.to_string(), key.to_string()));
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        let mut entries: Vec<S3Entry> = futures::stream::iter(found)
            .map(|(name, key)| async move { self.head_key(name, key).await })
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_filter_map(|e| async move { Ok(e.filter(|e| e.size > 0)) })
            .try_collect()
            .await?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The object of snapshot `name`, if it exists.
    pub async fn head(&self, name: &str) -> Result<Option<S3Entry>, S3Error> {
        let key = self.key_of(name)?;
        self.head_key(name.to_string(), key).await
    }

    async fn head_key(&self, name: String, key: String) -> Result<Option<S3Entry>, S3Error> {
        let out = match self
            .client()
            .head_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.classify("HeadObject", &key, e)),
        };
        let mut metadata: BTreeMap<String, String> = out
            .metadata()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let ours = metadata.contains_key(s3_metadata::CLUSTER_ID)
            || metadata.contains_key(s3_metadata::NODE_NAME);
        if ours
            && !metadata.contains_key(s3_metadata::SHA256)
            && let Some(sha) = self.sha256_tag(&key).await
        {
            metadata.insert(s3_metadata::SHA256.to_string(), sha);
        }
        Ok(Some(S3Entry {
            name,
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(out.last_modified()),
            key,
            metadata,
        }))
    }

    /// The sha256 tag of an object, if it has one (any failure reads as none: tagging may not
    /// be permitted or supported).
    async fn sha256_tag(&self, key: &str) -> Option<String> {
        let out = self
            .client()
            .get_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .ok()?;
        out.tag_set()
            .iter()
            .find(|t| t.key() == s3_metadata::SHA256)
            .map(|t| t.value().to_string())
    }

    /// Delete snapshot `name` and its `.metadata/` object. `false` if the snapshot did not exist.
    pub async fn delete(&self, name: &str) -> Result<bool, S3Error> {
        let key = self.key_of(name)?;
        let meta_key = self.metadata_key_of(name)?;
        let existed = self
            .head_key(name.to_string(), key.clone())
            .await?
            .is_some();
        if existed {
            self.delete_key(&key).await?;
        }
        self.delete_key(&meta_key).await?;
        Ok(existed)
    }

    async fn delete_key(&self, key: &str) -> Result<(), S3Error> {
        match self
            .client()
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.classify("DeleteObject", key, e)),
        }
    }

    /// Download snapshot `name` to `dest` (created, mode 0600; it must not exist), hashing while
    /// writing. `dest` is removed on failure.
    pub async fn download(&self, name: &str, dest: &Path) -> Result<Downloaded, S3Error> {
        self.download_to(name, dest, true).await
    }

    /// As [`S3Store::download`], without the final fsync: for a scratch file that is read once
    /// and removed (a restore's download), where the fsync would only cost time.
    pub async fn download_scratch(&self, name: &str, dest: &Path) -> Result<Downloaded, S3Error> {
        self.download_to(name, dest, false).await
    }

    /// Stream snapshot `name` into `tx` chunk by chunk as it arrives (no file, no hashing: the
    /// receiver does both). Returns the size. Stops early when the receiver is gone; a body
    /// shorter than S3 announced is an error.
    pub async fn download_stream(
        &self,
        name: &str,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<u64, S3Error> {
        let key = self.key_of(name)?;
        let out = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .customize()
            .config_override(self.per_attempt())
            .send()
            .await
            .map_err(|e| self.classify("GetObject", &key, e))?;
        let expected = out.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let mut body = out.body;
        let mut size = 0u64;
        while let Some(chunk) = self.next_chunk(&mut body, &key).await? {
            size += chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                return Ok(size);
            }
        }
        if let Some(expected) = expected
            && expected != size
        {
            return Err(S3Error::Request {
                op: "GetObject",
                key,
                reason: format!("received {size} bytes, S3 announced {expected}"),
            });
        }
        Ok(size)
    }

    async fn download_to(
        &self,
        name: &str,
        dest: &Path,
        sync: bool,
    ) -> Result<Downloaded, S3Error> {
        let key = self.key_of(name)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|source| S3Error::Io {
                op: "creating",
                path: dest.display().to_string(),
                source,
            })?;
        let result = self
            .download_into(&key, tokio::fs::File::from_std(file), dest, sync)
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn download_into(
        &self,
        key: &str,
        mut file: tokio::fs::File,
        dest: &Path,
        sync: bool,
    ) -> Result<Downloaded, S3Error> {
        let io = |op: &'static str| {
            move |source| S3Error::Io {
                op,
                path: dest.display().to_string(),
                source,
            }
        };
        let out = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .customize()
            .config_override(self.per_attempt())
            .send()
            .await
            .map_err(|e| self.classify("GetObject", key, e))?;
        let expected = out.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = self.next_chunk(&mut body, key).await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io("writing"))?;
        }
        file.flush().await.map_err(io("writing"))?;
        if sync {
            file.sync_all().await.map_err(io("syncing"))?;
        }
        if let Some(expected) = expected
            && expected != size
        {
            return Err(S3Error::Request {
                op: "GetObject",
                key: key.to_string(),
                reason: format!("received {size} bytes, S3 announced {expected}"),
            });
        }
        Ok(Downloaded {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The next chunk of a response body, waiting at most the configured timeout.
    async fn next_chunk(&self, body: &mut ByteStream, key: &str) -> Result<Option<Bytes>, S3Error> {
        let after = self.inner.cfg.timeout;
        match tokio::time::timeout(after, body.try_next()).await {
            Err(_) => Err(S3Error::Timeout {
                op: "GetObject",
                after,
            }),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => {
                let secrets = &self.inner.secrets;
                tracing::debug!(error = %secrets.scrub(format!("{e:?}")), "S3 download failed");
                Err(S3Error::Request {
                    op: "GetObject",
                    key: key.to_string(),
                    reason: secrets.scrub(error_chain_text(&e)),
                })
            }
        }
    }

    /// Store the extra metadata of `name` as JSON at `<folder>/.metadata/<name>` (nothing when
    /// empty).
    pub async fn put_extra_metadata(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), S3Error> {
        let key = self.metadata_key_of(name)?;
        if metadata.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_vec(metadata).unwrap_or_default();
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(json))
            .send()
            .await
            .map_err(|e| self.classify("PutObject", &key, e))?;
        Ok(())
    }

    /// The extra metadata of `name`, if stored.
    pub async fn get_extra_metadata(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, S3Error> {
        let key = self.metadata_key_of(name)?;
        let out = match self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.classify("GetObject", &key, e)),
        };
        let mut body = out.body;
        let mut data = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut body, &key).await? {
            data.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| S3Error::BadMetadata {
                key,
                reason: e.to_string(),
            })
    }

    /// Check that these settings can do what the operator needs, in order: list the folder
    /// (`ListObjectsV2`), write (`PutObject`), read (`GetObject`) and delete (`DeleteObject`) a
    /// small probe object `<folder>/.metadata/.etcd-snapshot-preflight` (never listed as a
    /// snapshot). The first step that fails is returned with its error.
    pub async fn preflight(&self) -> Result<(), (PreflightStep, S3Error)> {
        let key = self
            .inner
            .cfg
            .object_key(&format!("{METADATA_DIR}/{PREFLIGHT_PROBE}"));
        self.client()
            .list_objects_v2()
            .bucket(self.bucket())
            .set_prefix(self.folder_prefix())
            .delimiter("/")
            .max_keys(1)
            .send()
            .await
            .map_err(|e| {
                (
                    PreflightStep::List,
                    self.classify("ListObjectsV2", self.bucket(), e),
                )
            })?;
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .body(ByteStream::from_static(
                b"etcd-snapshot-operator storage preflight\n",
            ))
            .send()
            .await
            .map_err(|e| (PreflightStep::Write, self.classify("PutObject", &key, e)))?;
        let got = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
            .map_err(|e| (PreflightStep::Read, self.classify("GetObject", &key, e)));
        if let Ok(out) = got {
            let mut body = out.body;
            while self
                .next_chunk(&mut body, &key)
                .await
                .map_err(|e| (PreflightStep::Read, e))?
                .is_some()
            {}
        } else if let Err(e) = got {
            // Leave no probe behind when reading is refused.
            let _ = self.delete_key(&key).await;
            return Err(e);
        }
        self.delete_key(&key)
            .await
            .map_err(|e| (PreflightStep::Delete, e))
    }

    /// Abort multipart uploads of snapshots directly under the folder that were started more
    /// than `older_than` ago (left by a crash). Returns how many were aborted.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize, S3Error> {
        self.abort_stale_uploads_where(older_than, |_| true).await
    }

    /// As [`Self::abort_stale_uploads`], only for snapshot names `select` accepts (e.g. the
    /// names of one node, so that an agent never aborts another node's upload in flight).
    pub async fn abort_stale_uploads_where(
        &self,
        older_than: Duration,
        select: impl Fn(&str) -> bool,
    ) -> Result<usize, S3Error> {
        let prefix = self.folder_prefix();
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (mut key_marker, mut id_marker) = (None, None);
        let mut aborted = 0;
        loop {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(self.bucket())
                .set_prefix(prefix.clone())
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.classify("ListMultipartUploads", self.bucket(), e))?;
            for upload in out.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let name = key
                    .strip_prefix(prefix.as_deref().unwrap_or(""))
                    .unwrap_or(key);
                let started = to_system_time(upload.initiated());
                if name.contains('/') || !select(name) || started.is_none_or(|t| t >= cutoff) {
                    continue;
                }
                self.client()
                    .abort_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.classify("AbortMultipartUpload", key, e))?;
                tracing::info!(%key, "aborted a stale S3 multipart upload");
                aborted += 1;
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(aborted)
    }

    /// Record `sha256` for the finished object `key`: in-place copy with replaced metadata,
    /// or an object tag when the object is too large to copy or the copy is refused.
    async fn record_sha256(
        &self,
        key: &str,
        metadata: &HashMap<String, String>,
        content_type: &str,
        size: u64,
        sha256: &str,
    ) -> Result<(), S3Error> {
        let copied = if size <= COPY_LIMIT {
            let mut metadata = metadata.clone();
            metadata.insert(s3_metadata::SHA256.to_string(), sha256.to_string());
            self.client()
                .copy_object()
                .bucket(self.bucket())
                .key(key)
                .copy_source(format!("{}/{}", self.bucket(), encode_key(key)))
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata))
                .content_type(content_type)
                .customize()
                .config_override(self.per_attempt())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.classify("CopyObject", key, e))
        } else {
            Err(S3Error::Request {
                op: "CopyObject",
                key: key.to_string(),
                reason: format!("{size} bytes is over CopyObject's 5 GiB limit"),
            })
        };
        let Err(copy_error) = copied else {
            return Ok(());
        };
        if size <= COPY_LIMIT {
            tracing::warn!(%key, error = %copy_error, "recording the sha256 as a tag instead");
        }
        let tag = Tag::builder()
            .key(s3_metadata::SHA256)
            .value(sha256)
            .build()
            .map_err(|e| S3Error::Request {
                op: "PutObjectTagging",
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        let tagging = Tagging::builder()
            .tag_set(tag)
            .build()
            .map_err(|e| S3Error::Request {
                op: "PutObjectTagging",
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        self.client()
            .put_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::warn!(%key, error = %copy_error, "in-place copy failed too");
                self.classify("PutObjectTagging", key, e)
            })
    }

    /// Sort an SDK error into an [`S3Error`].
    fn classify<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let cfg = &self.inner.cfg;
        let secrets = &self.inner.secrets;
        match &err {
            SdkError::TimeoutError(_) => S3Error::Timeout {
                op,
                after: cfg.timeout,
            },
            SdkError::DispatchFailure(failure) => {
                if let Some(reason) = untrusted_certificate(&err) {
                    S3Error::Tls {
                        endpoint: cfg.endpoint.clone(),
                        reason,
                    }
                } else if failure.is_timeout() {
                    S3Error::Timeout {
                        op,
                        after: cfg.timeout,
                    }
                } else {
                    let cause = match failure.as_connector_error() {
                        Some(connector) => crate::net_error::Cause::of(connector),
                        None => crate::net_error::Cause::of(&err),
                    };
                    tracing::debug!(op, error = %secrets.scrub(format!("{err:?}")), "S3 request failed");
                    S3Error::Unreachable {
                        endpoint: cfg.endpoint.clone(),
                        reason: secrets.scrub(unreachable_hint(&cause)),
                    }
                }
            }
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = err.code().unwrap_or_default();
                match code {
                    "NoSuchBucket" => S3Error::NoSuchBucket {
                        bucket: cfg.bucket.clone(),
                    },
                    "NoSuchKey" | "NotFound" => S3Error::NoSuchKey {
                        key: key.to_string(),
                    },
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "InvalidSecurity" => S3Error::AccessDenied {
                        op,
                        code: code.to_string(),
                    },
                    "" if status == 403 => S3Error::AccessDenied {
                        op,
                        code: "HTTP 403".into(),
                    },
                    _ => {
                        let message = err.message().unwrap_or_default();
                        let code = if code.is_empty() {
                            "no error code"
                        } else {
                            code
                        };
                        S3Error::Request {
                            op,
                            key: key.to_string(),
                            reason: secrets.scrub(format!("HTTP {status} {code}: {message}")),
                        }
                    }
                }
            }
            _ => {
                tracing::debug!(op, error = %secrets.scrub(format!("{err:?}")), "S3 request failed");
                S3Error::Request {
                    op,
                    key: key.to_string(),
                    reason: secrets.scrub(error_chain_text(&err)),
                }
            }
        }
    }
}

impl S3Error {
    fn scrubbed(self, secrets: &Secrets) -> S3Error {
        match self {
            S3Error::Request { op, key, reason } => S3Error::Request {
                op,
                key,
                reason: secrets.scrub(reason),
            },
            S3Error::Unreachable { endpoint, reason } => S3Error::Unreachable {
                endpoint,
                reason: secrets.scrub(reason),
            },
            other => other,
        }
    }
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() == 404 && err.code() != Some("NoSuchBucket")
        }
        _ => false,
    }
}

/// What went wrong, on one line: the network cause with what to check when there is one, else
/// the chain's messages without repeats and without the `Debug` dumps some libraries put in
/// their messages. The whole chain goes to the debug log.
fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let cause = crate::net_error::Cause::of(err);
    if !matches!(cause, crate::net_error::Cause::Other(_)) {
        return unreachable_hint(&cause);
    }
    let mut parts: Vec<String> = Vec::new();
    for e in crate::net_error::chain(err) {
        let text = crate::net_error::one_line(&e.to_string());
        if text.is_empty() || parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// What rustls said, when the failure is an untrusted server certificate.
fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    crate::net_error::chain(err).find_map(|e| match e.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(c)) => Some(format!("{c:?}")),
        _ => None,
    })
}

/// A multipart upload in progress. Dropped without [`S3Upload::finish`] or [`S3Upload::abort`],
/// it aborts itself in the background (when a tokio runtime is running).
pub struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
    metadata: HashMap<String, String>,
    content_type: &'static str,
    buffer: BytesMut,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, S3Error>>,
    parts: Vec<CompletedPart>,
    written: u64,
    open: bool,
}

impl fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Upload")
            .field("key", &self.key)
            .field("written", &self.written)
            .field("parts", &(self.next_part - 1))
            .finish_non_exhaustive()
    }
}

impl S3Upload {
    /// Append bytes; full parts are uploaded in the background, at most
    /// [`MAX_PARTS_IN_FLIGHT`] at once (this waits when both are busy).
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), S3Error> {
        self.check_open("UploadPart")?;
        self.written += data.len() as u64;
        while !data.is_empty() {
            let size = part_size(self.next_part);
            if self.buffer.is_empty() && data.len() >= size {
                let part = data.split_to(size);
                self.send_part(part).await?;
                continue;
            }
            if self.buffer.is_empty() {
                // One allocation of the whole part, not a doubling series of copies.
                self.buffer.reserve(size);
            }
            let take = (size - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data.split_to(take));
            if self.buffer.len() == size {
                let part = self.buffer.split().freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn check_open(&self, op: &'static str) -> Result<(), S3Error> {
        if self.open {
            Ok(())
        } else {
            Err(S3Error::Request {
                op,
                key: self.key.clone(),
                reason: "the upload was already finished or aborted".into(),
            })
        }
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), S3Error> {
        while self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let number = self.next_part;
        if number > MAX_PARTS {
            return Err(S3Error::Request {
                op: "UploadPart",
                key: self.key.clone(),
                reason: format!("more than {MAX_PARTS} parts"),
            });
        }
        self.next_part += 1;
        let (store, key, id) = (self.store.clone(), self.key.clone(), self.upload_id.clone());
        self.in_flight.spawn(async move {
            let out = store
                .client()
                .upload_part()
                .bucket(store.bucket())
                .key(&key)
                .upload_id(id)
                .part_number(number)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body))
                .customize()
                .config_override(store.per_attempt())
                .send()
                .await
                .map_err(|e| store.classify("UploadPart", &key, e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build())
        });
        Ok(())
    }

    /// Wait for one part in flight.
    async fn join_one(&mut self) -> Result<(), S3Error> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(part))) => {
                self.parts.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(S3Error::Request {
                op: "UploadPart",
                key: self.key.clone(),
                reason: format!("upload task failed: {e}"),
            }),
        }
    }

    /// Upload the last part, complete the upload, and record `sha256` (of all bytes written) in
    /// the object's metadata. On failure the upload is aborted; if only recording the sha256
    /// failed, the completed object is deleted, so a failed upload never looks finished.
    pub async fn finish(mut self, sha256: &str) -> Result<(), S3Error> {
        self.check_open("CompleteMultipartUpload")?;
        if let Err(e) = self.complete().await {
            self.abort_now().await;
            return Err(e);
        }
        self.open = false;
        let store = self.store.clone();
        let recorded = store
            .record_sha256(
                &self.key,
                &self.metadata,
                self.content_type,
                self.written,
                sha256,
            )
            .await;
        if let Err(e) = &recorded {
            tracing::warn!(key = %self.key, error = %e, "deleting the object: its sha256 could not be recorded");
            if let Err(e) = store.delete_key(&self.key).await {
                tracing::warn!(key = %self.key, error = %e, "could not delete the object");
            }
        }
        recorded
    }

    async fn complete(&mut self) -> Result<(), S3Error> {
        if !self.buffer.is_empty() || self.next_part == 1 {
            let part = self.buffer.split().freeze();
            self.send_part(part).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        self.store
            .client()
            .complete_multipart_upload()
            .bucket(self.store.bucket())
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(self.store.per_attempt())
            .send()
            .await
            .map_err(|e| self.store.classify("CompleteMultipartUpload", &self.key, e))?;
        tracing::debug!(key = %self.key, parts = count, bytes = self.written, "S3 upload complete");
        Ok(())
    }

    /// Abort the upload (best effort: failures are logged).
    pub async fn abort(mut self) {
        if self.open {
            self.abort_now().await;
        }
    }

    async fn abort_now(&mut self) {
        self.open = false;
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        abort_upload(&self.store, &self.key, &self.upload_id).await;
    }
}

async fn abort_upload(store: &S3Store, key: &str, upload_id: &str) {
    let result = store
        .client()
        .abort_multipart_upload()
        .bucket(store.bucket())
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match result {
        Ok(_) => tracing::debug!(%key, "S3 multipart upload aborted"),
        Err(e) => {
            let e = store.classify("AbortMultipartUpload", key, e);
            tracing::warn!(%key, error = %e, "could not abort the S3 multipart upload");
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.in_flight.abort_all();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, id) = (self.store.clone(), self.key.clone(), self.upload_id.clone());
            runtime.spawn(async move { abort_upload(&store, &key, &id).await });
        }
    }
}

/// Building the SDK client: HTTP connector (CA, proxy, skip-verify), timeouts, credentials.
mod client {
    use super::{ATTEMPTS, CONNECT_TIMEOUT, S3Error};
    use crate::consts::DEFAULT_S3_ENDPOINT;
    use crate::storage::config::{Proxy, S3Config, S3ConfigError};
    use aws_sdk_s3::Client;
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    use aws_smithy_http_client::Connector;
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use std::fmt;
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    fn connect_timeout(timeout: Duration) -> Duration {
        timeout.min(CONNECT_TIMEOUT)
    }

    /// The configured timeout for the whole operation, retries included.
    pub(super) fn operation_timeouts(timeout: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(connect_timeout(timeout))
            .operation_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .build()
    }

    /// The configured timeout for each attempt.
    pub(super) fn per_attempt_timeouts(timeout: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(connect_timeout(timeout))
            .operation_attempt_timeout(timeout)
            .disable_operation_timeout()
            .build()
    }

    pub(super) async fn build(cfg: &S3Config) -> Result<Client, S3Error> {
        let http = http_client(cfg)?;
        let region = Region::new(cfg.region.clone());
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .force_path_style(cfg.use_path_style())
            .http_client(http)
            .timeout_config(operation_timeouts(cfg.timeout))
            .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        // The default AWS endpoint is left to the SDK, which picks the region's endpoint.
        if cfg.insecure || cfg.endpoint != DEFAULT_S3_ENDPOINT {
            builder = builder.endpoint_url(cfg.endpoint_url());
        }
        builder = match (&cfg.access_key, &cfg.secret_key) {
            (Some(access), Some(secret)) => builder.credentials_provider(Credentials::new(
                access,
                secret,
                cfg.session_token.clone(),
                None,
                "etcd-snapshot",
            )),
            _ => builder.credentials_provider(
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(region)
                    .build()
                    .await,
            ),
        };
        Ok(Client::from_conf(builder.build()))
    }

    fn invalid(field: &'static str, value: &str, expected: &str) -> S3Error {
        S3Error::Config(S3ConfigError::Invalid {
            field,
            value: value.to_string(),
            expected: expected.to_string(),
        })
    }

    /// The proxy URL with any user info hidden, for messages.
    fn shown(url: &str) -> String {
        match url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        }
    }

    fn proxy_config(proxy: &Proxy) -> Result<ProxyConfig, S3Error> {
        match proxy {
            Proxy::Environment => Ok(ProxyConfig::from_env()),
            Proxy::None => Ok(ProxyConfig::disabled()),
            Proxy::Url(url) => ProxyConfig::all(url.as_str()).map_err(|_| {
                invalid(
                    "S3 proxy",
                    &shown(url),
                    "is not supported: use an http:// or https:// proxy URL",
                )
            }),
        }
    }

    /// Check the CA bundle as the SDK will read it (it panics on a bad one).
    fn check_ca(pem: &str) -> Result<(), S3Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |reason| {
            S3Error::Config(S3ConfigError::BadCertificate {
                field: "S3 endpoint CA",
                reason,
            })
        };
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("a certificate block is not valid PEM"))?;
        if certs.is_empty() {
            return Err(S3Error::Config(S3ConfigError::NoCertificate {
                field: "S3 endpoint CA",
            }));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|_| bad("a certificate cannot be used as a trust anchor"))?;
        }
        Ok(())
    }

    pub(super) fn http_client(cfg: &S3Config) -> Result<SharedHttpClient, S3Error> {
        if cfg.skip_ssl_verify && !cfg.insecure {
            return super::no_verify::http_client(cfg);
        }
        let mut trust = TrustStore::default();
        if let Some(pem) = &cfg.endpoint_ca {
            check_ca(pem)?;
            trust = trust.with_pem_certificate(pem.as_bytes());
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| invalid("S3 endpoint CA", "", &e.to_string()))?;
        let proxy = proxy_config(&cfg.proxy)?;
        Ok(SharedHttpClient::new(CachingClient::new(
            move |settings, components| {
                let mut builder = Connector::builder()
                    .connector_settings(settings.clone())
                    .proxy_config(proxy.clone());
                builder.set_sleep_impl(components.sleep_impl());
                SharedHttpConnector::new(
                    builder
                        .tls_provider(tls::Provider::Rustls(
                            tls::rustls_provider::CryptoMode::AwsLc,
                        ))
                        .tls_context(tls_context.clone())
                        .build(),
                )
            },
        )))
    }

    type MakeConnector =
        dyn Fn(&HttpConnectorSettings, &RuntimeComponents) -> SharedHttpConnector + Send + Sync;

    /// Connect and read timeouts: what tells the connectors apart.
    type TimeoutKey = (Option<Duration>, Option<Duration>);

    /// One connector (one connection pool) per distinct connect/read timeout.
    struct CachingClient {
        make: Box<MakeConnector>,
        cache: Mutex<Vec<(TimeoutKey, SharedHttpConnector)>>,
    }

    impl CachingClient {
        fn new(
            make: impl Fn(&HttpConnectorSettings, &RuntimeComponents) -> SharedHttpConnector
            + Send
            + Sync
            + 'static,
        ) -> CachingClient {
            CachingClient {
                make: Box::new(make),
                cache: Mutex::new(Vec::new()),
            }
        }
    }

    impl fmt::Debug for CachingClient {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("CachingClient").finish_non_exhaustive()
        }
    }

    impl HttpClient for CachingClient {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            let key = (settings.connect_timeout(), settings.read_timeout());
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, connector)) = cache.iter().find(|(k, _)| *k == key) {
                return connector.clone();
            }
            let connector = (self.make)(settings, components);
            cache.push((key, connector.clone()));
            connector
        }
    }
}

/// The `skip-ssl-verify` connector: hyper-util's client over hyper-rustls with a verifier that
/// accepts any server certificate. Only for HTTPS endpoints; an HTTP proxy is reached with
/// CONNECT.
mod no_verify {
    use super::{CONNECT_TIMEOUT, S3Error};
    use crate::storage::config::{Proxy, S3Config, S3ConfigError};
    use aws_smithy_runtime_api::client::http::{
        HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_types::body::SdkBody;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::proxy::Tunnel;
    use hyper_util::client::legacy::connect::{Connect, HttpConnector as TcpConnector};
    use hyper_util::client::proxy::matcher::Matcher;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    /// Accepts any certificate; handshake signatures are still verified with the provider.
    #[derive(Debug)]
    struct AcceptAnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn config_error(expected: &str) -> S3Error {
        S3Error::Config(S3ConfigError::Invalid {
            field: "S3 proxy",
            value: String::new(),
            expected: expected.to_string(),
        })
    }

    pub(super) fn http_client(cfg: &S3Config) -> Result<SharedHttpClient, S3Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&format!("TLS setup failed: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(cfg.timeout.min(CONNECT_TIMEOUT)));
        let endpoint: http::Uri = cfg
            .endpoint_url()
            .parse()
            .map_err(|_| config_error("the endpoint is not a valid URL"))?;
        let matcher = match &cfg.proxy {
            Proxy::None => None,
            Proxy::Environment => Some(Matcher::from_env()),
            Proxy::Url(url) => Some(Matcher::builder().all(url.as_str()).build()),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1();
        let connector = match matcher.and_then(|m| m.intercept(&endpoint)) {
            None => adapter(https.wrap_connector(tcp)),
            Some(intercept) => {
                if intercept.uri().scheme_str() != Some("http") {
                    return Err(config_error(
                        "with skip-ssl-verify, only an http:// proxy is supported",
                    ));
                }
                let mut tunnel = Tunnel::new(intercept.uri().clone(), tcp);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                adapter(https.wrap_connector(tunnel))
            }
        };
        Ok(http_client_fn(move |_, _| connector.clone()))
    }

    fn adapter<C: Connect + Clone + Send + Sync + 'static>(connector: C) -> SharedHttpConnector {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        SharedHttpConnector::new(Adapter { client })
    }

    struct Adapter<C> {
        client: Client<C, SdkBody>,
    }

    impl<C> fmt::Debug for Adapter<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("NoVerifyConnector")
        }
    }

    impl<C: Connect + Clone + Send + Sync + 'static> HttpConnector for Adapter<C> {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let request = match request.try_into_http1x() {
                Ok(r) => r,
                Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
            };
            let client = self.client.clone();
            HttpConnectorFuture::new(async move {
                let response = client.request(request).await.map_err(|e| {
                    if e.is_connect() {
                        ConnectorError::io(e.into())
                    } else {
                        ConnectorError::other(e.into(), None)
                    }
                })?;
                HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BucketLookup;
    use crate::storage::config::Proxy;

    #[test]
    fn content_type_follows_the_suffix() {
        assert_eq!(content_type("a-n-1.zst"), "application/zstd");
        assert_eq!(content_type("a-n-1.zip"), "application/zip");
        assert_eq!(content_type("a-n-1"), "application/octet-stream");
    }

    #[test]
    fn part_size_grows_so_ten_thousand_parts_hold_five_tib() {
        assert_eq!(part_size(1), PART_SIZE);
        assert_eq!(part_size(SMALL_PARTS), PART_SIZE);
        assert_eq!(part_size(SMALL_PARTS + 1), LARGE_PART_SIZE);
        assert_eq!(
            part_size(SMALL_PARTS + PARTS_PER_SIZE_STEP + 1),
            2 * LARGE_PART_SIZE
        );
        const { assert!(PART_SIZE >= 5 * 1024 * 1024, "S3's minimum part size") };
        assert!((1..=MAX_PARTS).all(|p| part_size(p) <= MAX_PART_SIZE));
        let total: u64 = (1..=MAX_PARTS).map(|p| part_size(p) as u64).sum();
        assert!(total > 5 * 1024 * 1024 * 1024 * 1024, "{total}");
        // A snapshot of etcd's largest quota (8 GiB), even uncompressed, keeps the small parts.
        const { assert!(SMALL_PARTS as u64 * PART_SIZE as u64 >= 8 * 1024 * 1024 * 1024) };
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_key("f/a-n-1.zst"), "f/a-n-1.zst");
        assert_eq!(encode_key("f/a b+c%"), "f/a%20b%2Bc%25");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    fn config() -> S3Config {
        S3Config {
            endpoint: "127.0.0.1:9".into(),
            endpoint_ca: None,
            skip_ssl_verify: false,
            access_key: Some("AKIDEXAMPLE".into()),
            secret_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            session_token: Some("TOKENTOKEN".into()),
            bucket: "b".into(),
            bucket_lookup: BucketLookup::Path,
            region: "us-east-1".into(),
            folder: "f".into(),
            insecure: true,
            timeout: Duration::from_secs(3),
            proxy: Proxy::None,
        }
    }

    #[test]
    fn secrets_are_scrubbed() {
        let s = Secrets::of(&config());
        assert_eq!(
            s.scrub("key wJalrXUtnFEMI/K7MDENG and TOKENTOKEN from AKIDEXAMPLE".into()),
            "key <redacted> and <redacted> from <redacted>"
        );
    }

    #[test]
    fn messages_are_one_line_and_name_the_fix() {
        let tls = S3Error::Tls {
            endpoint: "s3:443".into(),
            reason: "UnknownIssuer".into(),
        }
        .to_string();
        assert!(tls.contains("--s3-endpoint-ca") && tls.contains("etcd-s3-endpoint-ca"));
        assert!(tls.contains("skip-ssl-verify") && !tls.contains('\n'));
        let denied = S3Error::AccessDenied {
            op: "ListObjectsV2",
            code: "SignatureDoesNotMatch".into(),
        };
        assert!(denied.to_string().starts_with("S3 refused the credentials"));
        // Valid credentials without the permission are told apart from wrong credentials.
        let forbidden = S3Error::AccessDenied {
            op: "DeleteObject",
            code: "AccessDenied".into(),
        };
        assert_eq!(
            forbidden.to_string(),
            "S3 refused DeleteObject (AccessDenied): the credentials are not allowed to do it; \
             grant the permission to their user or policy"
        );
        let timeout = S3Error::Timeout {
            op: "HeadObject",
            after: Duration::from_secs(300),
        };
        assert_eq!(timeout.to_string(), "S3 HeadObject timed out after 300s");
    }

    #[test]
    fn a_bad_proxy_scheme_is_refused_without_its_password() {
        let cfg = S3Config {
            proxy: Proxy::Url("socks5://user:hunter22@proxy:1080".into()),
            ..config()
        };
        let err = client::http_client(&cfg).expect_err("socks5 is not supported");
        let text = err.to_string();
        assert!(
            !text.contains("hunter22") && text.contains("proxy:1080"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_ca_is_an_error_not_a_panic() {
        let cfg = S3Config {
            endpoint_ca: Some(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ),
            insecure: false,
            ..config()
        };
        assert!(matches!(client::http_client(&cfg), Err(S3Error::Config(_))));
    }
}
