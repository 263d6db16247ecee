//! `save`: the one-pass pipeline.
//!
//! ```text
//! etcd stream --(reader task: trailer check, 512 KiB batches)--> [chan 4]
//!   --> transform thread (zstd, encryption, sha256 of stored bytes) --> [chan 4 per copy]
//!        --> local writer task (temp file)      } committed only when the stream is complete,
//!        --> S3 multipart upload task           } etcd's hash matches, and that copy succeeded
//! ```
//!
//! Memory is bounded by the channel capacities times the batch size plus the S3 part buffers;
//! it does not grow with the database.

use super::SnapshotError;
use super::crypt::{ALGORITHM_NAME, EncryptWriter, EncryptionKey};
use super::etcd::EtcdConfig;
use super::trailer::{TrailerCheck, TrailerVerifier};
use crate::api::{Compression, Storage};
use crate::consts::s3_metadata;
use crate::naming::{SnapshotName, is_encrypted_name};
use crate::storage::local::{LocalDir, LocalWriter};
use crate::storage::s3::{S3Store, S3Upload};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Size of the batches passed between the stages.
const BATCH: usize = 512 << 10;
/// Batches in flight per channel (peak RSS is about (2 + copies) × DEPTH × BATCH plus the S3
/// part buffers; see `storage::s3`).
const DEPTH: usize = 2;
/// The local copy is flushed to disk every this many bytes while it streams, so the disk works
/// alongside the stream and the final fsync has little left to do.
const LOCAL_SYNC_EVERY: u64 = 16 << 20;
/// How long a cancelled S3 copy waits for S3 to take the AbortMultipartUpload. An upload left
/// behind is aborted by the next agent start (uploads of its own node started before it).
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Progress callback: total raw bytes received from etcd so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What to snapshot and where to put it.
pub struct SaveRequest {
    /// Full snapshot name, including `.zst` when compressed and `.enc` when encrypted.
    pub name: SnapshotName,
    /// Node the snapshot is taken on (recorded in S3 metadata).
    pub node_name: String,
    /// Unix seconds of the snapshot (the timestamp in its name).
    pub created_unix: i64,
    /// `None` or `Zstd`.
    pub compression: Compression,
    /// zstd level.
    pub zstd_level: i32,
    /// Local directory, if a local copy is wanted.
    pub local: Option<LocalDir>,
    /// S3 store, if an S3 copy is wanted.
    pub s3: Option<S3Store>,
    /// Extra metadata stored beside the snapshot.
    pub extra_metadata: BTreeMap<String, String>,
    /// Called as raw bytes arrive.
    pub progress: Option<Progress>,
    /// Encrypt the stored bytes with this key (the name must then end in `.enc`).
    pub encryption: Option<EncryptionKey>,
    /// Cancelled: stop reading, remove the temp file, abort the multipart upload, keep nothing
    /// ([`SnapshotError::Cancelled`]). A copy already being committed (the final fsync and
    /// rename, CompleteMultipartUpload) is finished.
    pub cancel: CancellationToken,
}

/// What was saved.
#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    /// Snapshot name.
    pub name: String,
    /// Node name.
    pub node_name: String,
    /// Unix seconds of the snapshot.
    pub created_unix: i64,
    /// Size of the stored bytes.
    pub size: u64,
    /// Size of the raw etcd snapshot.
    pub raw_size: u64,
    /// sha256 (hex) of the stored bytes.
    pub sha256: String,
    /// Revision reported by the member when the snapshot started.
    pub etcd_revision: i64,
    /// Cluster ID (hex).
    pub cluster_id: String,
    /// Member name.
    pub member_name: String,
    /// etcd version.
    pub etcd_version: String,
    /// Compression of the stored bytes.
    pub compression: Compression,
    /// Id of the key the stored bytes are encrypted with, when they are.
    pub encryption_key_id: Option<String>,
    /// Wall time of the whole save.
    pub duration: Duration,
}

/// The outcome of one copy.
#[derive(Debug)]
pub struct CopyReport {
    /// Local or S3.
    pub storage: Storage,
    /// `file://…` or `s3://…`.
    pub location: String,
    /// Whether this copy was stored.
    pub result: Result<(), SnapshotError>,
}

/// The outcome of a save whose stream was complete and correct. Individual copies may still have
/// failed (a full disk, S3 down); see [`SaveReport::copies`].
#[derive(Debug)]
pub struct SaveReport {
    /// What was streamed.
    pub record: SnapshotRecord,
    /// One entry per requested copy.
    pub copies: Vec<CopyReport>,
}

impl SaveReport {
    /// The first failed copy, if any.
    pub fn first_error(&self) -> Option<&SnapshotError> {
        self.copies.iter().find_map(|c| c.result.as_ref().err())
    }
}

/// A copy being written.
enum Writer {
    Local(LocalWriter),
    S3(S3Upload),
}

impl Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), SnapshotError> {
        match self {
            Writer::Local(w) => Ok(w.write(&data).await?),
            Writer::S3(u) => Ok(u.write(data).await?),
        }
    }

    /// Push the local copy's written bytes to disk (nothing for S3).
    async fn sync(&mut self) -> Result<(), SnapshotError> {
        match self {
            Writer::Local(w) => Ok(w.sync().await?),
            Writer::S3(_) => Ok(()),
        }
    }

    async fn abort(self) {
        match self {
            Writer::Local(w) => drop(w),
            Writer::S3(u) => {
                if tokio::time::timeout(ABORT_TIMEOUT, u.abort())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "S3 did not take the AbortMultipartUpload in time; the next agent start aborts the upload"
                    );
                }
            }
        }
    }
}

struct Copy {
    storage: Storage,
    location: String,
    opened: Result<Writer, SnapshotError>,
}

/// Take one snapshot from etcd and store it in every requested place.
///
/// Returns `Err` when nothing could be stored because the snapshot itself failed (etcd
/// unreachable, stream broken, hash mismatch). Returns `Ok` with per-copy results otherwise.
pub async fn save(etcd: &EtcdConfig, req: SaveRequest) -> Result<SaveReport, SnapshotError> {
    if req.local.is_none() && req.s3.is_none() {
        return Err(SnapshotError::NoDestination);
    }
    if req.encryption.is_some() != is_encrypted_name(&req.name) {
        return Err(SnapshotError::Internal(format!(
            "snapshot name {:?} must end in .enc exactly when it is encrypted",
            req.name
        )));
    }
    let key_id = req.encryption.as_ref().map(|k| k.id().to_hex());
    let started = Instant::now();
    let cancel = req.cancel.clone();
    let mut conn = cancel
        .run_until_cancelled(etcd.connect())
        .await
        .ok_or(SnapshotError::Cancelled)??;
    let info = cancel
        .run_until_cancelled(conn.member_info())
        .await
        .ok_or(SnapshotError::Cancelled)??;

    let mut s3_meta = BTreeMap::from([
        (s3_metadata::CLUSTER_ID.to_string(), info.cluster_id.clone()),
        (s3_metadata::NODE_NAME.to_string(), req.node_name.clone()),
        (s3_metadata::REVISION.to_string(), info.revision.to_string()),
        (s3_metadata::ETCD_VERSION.to_string(), info.version.clone()),
        (
            s3_metadata::COMPRESSION.to_string(),
            req.compression.as_str().to_string(),
        ),
    ]);
    if let Some(id) = &key_id {
        s3_meta.insert(s3_metadata::ENCRYPTION.into(), ALGORITHM_NAME.into());
        s3_meta.insert(s3_metadata::ENCRYPTION_KEY_ID.into(), id.clone());
    }
    s3_meta.retain(|_, v| !v.is_empty());

    let mut copies = Vec::new();
    if let Some(dir) = &req.local {
        copies.push(Copy {
            storage: Storage::Local,
            location: dir.location(&req.name),
            opened: dir
                .create(&req.name)
                .await
                .map(Writer::Local)
                .map_err(Into::into),
        });
    }
    if let Some(s3) = &req.s3 {
        copies.push(Copy {
            storage: Storage::S3,
            location: s3.config().location(&req.name),
            opened: s3
                .begin_upload(&req.name, &s3_meta)
                .await
                .map(Writer::S3)
                .map_err(Into::into),
        });
    }
    if copies.iter().all(|c| c.opened.is_err()) {
        let mut copies = copies;
        let first = copies.remove(0);
        return Err(first.opened.err().unwrap_or(SnapshotError::NoDestination));
    }

    let mut stream = match cancel.run_until_cancelled(conn.snapshot_stream()).await {
        Some(stream) => stream?,
        None => {
            for copy in copies {
                if let Ok(w) = copy.opened {
                    w.abort().await;
                }
            }
            return Err(SnapshotError::Cancelled);
        }
    };

    // Stage 3: one task per copy, each fed by its own bounded channel.
    let mut sink_txs = Vec::new();
    let mut sink_tasks = Vec::new();
    let mut failed_early = Vec::new();
    for (i, copy) in copies.iter_mut().enumerate() {
        let opened = std::mem::replace(&mut copy.opened, Err(SnapshotError::NoDestination));
        match opened {
            Ok(mut writer) => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
                sink_txs.push(tx);
                let cancel = cancel.clone();
                sink_tasks.push((
                    i,
                    tokio::spawn(async move {
                        let mut unsynced = 0u64;
                        let copy = async {
                            while let Some(data) = rx.recv().await {
                                unsynced += data.len() as u64;
                                writer.write(data).await?;
                                if unsynced >= LOCAL_SYNC_EVERY {
                                    unsynced = 0;
                                    writer.sync().await?;
                                }
                            }
                            Ok(())
                        };
                        let failed = match cancel.run_until_cancelled(copy).await {
                            Some(Ok(())) => return Ok(writer),
                            Some(Err(e)) => e,
                            None => SnapshotError::Cancelled,
                        };
                        writer.abort().await;
                        Err(failed)
                    }),
                ));
            }
            Err(e) => failed_early.push((i, e)),
        }
    }

    // Stage 2: compression, encryption and the sha256 of the stored bytes, on a blocking thread.
    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(DEPTH);
    let compression = req.compression;
    let level = req.zstd_level;
    let key = req.encryption.clone();
    let transform = tokio::task::spawn_blocking(move || {
        transform(
            raw_rx,
            Output::new(sink_txs, key.as_ref())?,
            compression,
            level,
        )
    });

    // Stage 1: read the stream, check etcd's hash as it goes.
    let read = cancel
        .run_until_cancelled(read_stream(&mut stream, raw_tx, req.progress.as_ref()))
        .await
        .unwrap_or(Err(SnapshotError::Cancelled));
    let transformed = transform
        .await
        .map_err(|e| SnapshotError::Internal(format!("transform thread: {e}")))?;

    let mut results: Vec<Option<Result<Writer, SnapshotError>>> =
        (0..copies.len()).map(|_| None).collect();
    for (i, e) in failed_early {
        results[i] = Some(Err(e));
    }
    for (i, task) in sink_tasks {
        let r = task
            .await
            .map_err(|e| SnapshotError::Internal(format!("copy task: {e}")))
            .and_then(|r| r);
        results[i] = Some(r);
    }

    // The snapshot itself must be complete and correct, or nothing is kept.
    let outcome = read.and_then(|raw_size| transformed.map(|(sha, size)| (raw_size, sha, size)));
    let (raw_size, sha256, size) = match outcome {
        Ok(v) => v,
        Err(e) => {
            for w in results.into_iter().flatten().flatten() {
                w.abort().await;
            }
            return Err(e);
        }
    };

    let record = SnapshotRecord {
        name: req.name.to_string(),
        node_name: req.node_name.clone(),
        created_unix: req.created_unix,
        size,
        raw_size,
        sha256: sha256.clone(),
        etcd_revision: info.revision,
        cluster_id: info.cluster_id.clone(),
        member_name: info.member_name.clone(),
        etcd_version: info.version.clone(),
        compression: req.compression,
        encryption_key_id: key_id,
        duration: Duration::ZERO,
    };

    // The copies are committed side by side (a local fsync and S3's CompleteMultipartUpload).
    let commits = results.into_iter().map(|result| {
        let (req, sha256) = (&req, sha256.as_str());
        async move {
            match result {
                Some(Ok(writer)) => commit(writer, req, sha256).await,
                Some(Err(e)) => Err(e),
                None => Err(SnapshotError::Internal("copy without result".into())),
            }
        }
    });
    let committed = futures::future::join_all(commits).await;
    let reports = copies
        .into_iter()
        .zip(committed)
        .map(|(copy, result)| CopyReport {
            storage: copy.storage,
            location: copy.location,
            result,
        })
        .collect();
    Ok(SaveReport {
        record: SnapshotRecord {
            duration: started.elapsed(),
            ..record
        },
        copies: reports,
    })
}

/// Make a finished copy visible under its final name, with its checksum and metadata.
async fn commit(writer: Writer, req: &SaveRequest, sha256: &str) -> Result<(), SnapshotError> {
    match writer {
        Writer::Local(w) => {
            let dir = req
                .local
                .as_ref()
                .ok_or_else(|| SnapshotError::Internal("local copy without a directory".into()))?;
            w.commit().await?;
            dir.write_checksum(&req.name, sha256)?;
            dir.write_metadata(&req.name, &req.extra_metadata)?;
            Ok(())
        }
        Writer::S3(u) => {
            let s3 = req
                .s3
                .as_ref()
                .ok_or_else(|| SnapshotError::Internal("S3 copy without a store".into()))?;
            u.finish(sha256).await?;
            s3.put_extra_metadata(&req.name, &req.extra_metadata)
                .await?;
            Ok(())
        }
    }
}

/// Read the etcd stream to the end, checking the trailer, and pass 512 KiB batches on. Returns the
/// raw size.
async fn read_stream(
    stream: &mut etcd_client::SnapshotStreaming,
    tx: mpsc::Sender<Bytes>,
    progress: Option<&Progress>,
) -> Result<u64, SnapshotError> {
    let mut verifier = TrailerVerifier::new();
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut remaining = None;
    loop {
        let message = stream.message().await.map_err(|e| {
            tracing::debug!(error = ?e, "etcd snapshot stream failed");
            SnapshotError::Stream {
                received: verifier.total(),
                reason: super::etcd::describe(&e),
            }
        })?;
        let Some(message) = message else { break };
        let blob = message.blob();
        verifier.update(blob);
        batch.extend_from_slice(blob);
        remaining = Some(message.remaining_bytes());
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, BytesMut::with_capacity(BATCH));
            if tx.send(full.freeze()).await.is_err() {
                return Err(SnapshotError::Internal("transform stage stopped".into()));
            }
        }
        if let Some(p) = progress {
            p(verifier.total());
        }
    }
    if !batch.is_empty() && tx.send(batch.freeze()).await.is_err() {
        return Err(SnapshotError::Internal("transform stage stopped".into()));
    }
    drop(tx);
    let received = verifier.total();
    if let Some(remaining) = remaining.filter(|r| *r > 0) {
        return Err(SnapshotError::CutShort {
            received,
            remaining,
        });
    }
    match verifier.finish() {
        TrailerCheck::Ok => Ok(received),
        TrailerCheck::Mismatch { expected, actual } => {
            Err(SnapshotError::HashMismatch { expected, actual })
        }
        TrailerCheck::TooShort(n) => Err(SnapshotError::TooShort(n)),
    }
}

/// The stored bytes: encrypted (optionally), hashed, and fanned out to every copy. A copy whose
/// task stopped (it failed) is dropped from the fan-out so the others go on.
struct Output {
    hasher: Sha256,
    size: u64,
    sinks: Vec<mpsc::Sender<Bytes>>,
    seal: Option<EncryptWriter<Vec<u8>>>,
}

impl Output {
    fn new(
        sinks: Vec<mpsc::Sender<Bytes>>,
        key: Option<&EncryptionKey>,
    ) -> Result<Output, SnapshotError> {
        let seal = key
            .map(|k| EncryptWriter::new(Vec::with_capacity(2 * BATCH), k))
            .transpose()
            .map_err(|e| SnapshotError::Encrypt(e.to_string()))?;
        Ok(Output {
            hasher: Sha256::new(),
            size: 0,
            sinks,
            seal,
        })
    }

    fn emit(&mut self, data: Bytes) {
        self.hasher.update(&data);
        self.size += data.len() as u64;
        self.sinks
            .retain(|tx| tx.blocking_send(data.clone()).is_ok());
    }

    /// Pass on (compressed) bytes; with encryption they leave in batches of about 512 KiB.
    fn push(&mut self, data: Bytes) -> Result<(), SnapshotError> {
        let ready = match self.seal.as_mut() {
            None => Some(data),
            Some(w) => {
                w.write_all(&data)
                    .map_err(|e| SnapshotError::Encrypt(e.to_string()))?;
                (w.get_mut().len() >= BATCH)
                    .then(|| std::mem::replace(w.get_mut(), Vec::with_capacity(2 * BATCH)).into())
            }
        };
        if let Some(data) = ready {
            self.emit(data);
        }
        Ok(())
    }

    /// Seal the last segment; returns (sha256, size) of the stored bytes.
    fn finish(mut self) -> Result<(String, u64), SnapshotError> {
        if let Some(w) = self.seal.take() {
            let rest = w
                .finish()
                .map_err(|e| SnapshotError::Encrypt(e.to_string()))?;
            self.emit(Bytes::from(rest));
        }
        self.sinks.clear();
        Ok((hex::encode(self.hasher.finalize()), self.size))
    }
}

/// Compress (optionally) and pass the result to `out`. Returns (sha256, size) of the stored
/// bytes.
fn transform(
    mut rx: mpsc::Receiver<Bytes>,
    mut out: Output,
    compression: Compression,
    level: i32,
) -> Result<(String, u64), SnapshotError> {
    match compression {
        Compression::None => {
            while let Some(data) = rx.blocking_recv() {
                out.push(data)?;
            }
        }
        Compression::Zstd => {
            let compress = |e: std::io::Error| SnapshotError::Compress(e.to_string());
            let mut encoder = zstd::stream::write::Encoder::new(Vec::with_capacity(BATCH), level)
                .map_err(compress)?;
            while let Some(data) = rx.blocking_recv() {
                encoder.write_all(&data).map_err(compress)?;
                if encoder.get_ref().len() >= BATCH {
                    let done = std::mem::replace(encoder.get_mut(), Vec::with_capacity(BATCH));
                    out.push(Bytes::from(done))?;
                }
            }
            let done = encoder.finish().map_err(compress)?;
            if !done.is_empty() {
                out.push(Bytes::from(done))?;
            }
        }
        Compression::Zip => {
            return Err(SnapshotError::Compress(
                "zip is read for k3s compatibility but never written; use zstd".into(),
            ));
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::crypt::DecryptReader;
    use std::io::Read;

    /// Run `transform` over `input` (in odd-sized batches) into one copy; returns what the copy
    /// received and the reported (sha256, size).
    fn through(
        input: &[u8],
        compression: Compression,
        key: Option<&EncryptionKey>,
    ) -> (Vec<u8>, (String, u64)) {
        let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(4096);
        let (sink_tx, mut sink_rx) = mpsc::channel::<Bytes>(4096);
        for chunk in input.chunks(300_001) {
            raw_tx
                .try_send(Bytes::copy_from_slice(chunk))
                .expect("queue input");
        }
        drop(raw_tx);
        let out = Output::new(vec![sink_tx], key).expect("output");
        let result = transform(raw_rx, out, compression, 1).expect("transform");
        let mut stored = Vec::new();
        while let Ok(b) = sink_rx.try_recv() {
            stored.extend_from_slice(&b);
        }
        (stored, result)
    }

    #[test]
    fn encrypted_output_decrypts_to_the_compressed_stream_and_is_hashed_as_stored() {
        let key = EncryptionKey::generate().expect("key");
        let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        for compression in [Compression::None, Compression::Zstd] {
            let (stored, (sha, size)) = through(&input, compression, Some(&key));
            assert_eq!(size, stored.len() as u64);
            assert_eq!(sha, hex::encode(Sha256::digest(&stored)));
            let mut plain = Vec::new();
            DecryptReader::new(&stored[..], &key)
                .expect("header")
                .read_to_end(&mut plain)
                .expect("decrypts");
            let plain = match compression {
                Compression::Zstd => zstd::decode_all(&plain[..]).expect("zstd inside"),
                _ => plain,
            };
            assert_eq!(plain, input, "{compression:?}");
        }
        let (stored, _) = through(&input, Compression::None, None);
        assert_eq!(stored, input, "without a key the bytes pass unchanged");
    }
}
