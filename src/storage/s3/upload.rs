//! [`S3Upload`]: a multipart upload fed as the bytes arrive.

use super::{MAX_PARTS, MAX_PARTS_IN_FLIGHT, S3Error, S3Store, part_size};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fmt;
use tokio::task::JoinSet;

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
    /// The upload `upload_id` of `key`, just created by [`S3Store::upload`].
    pub(super) fn started(
        store: S3Store,
        key: String,
        upload_id: String,
        metadata: HashMap<String, String>,
        content_type: &'static str,
    ) -> S3Upload {
        S3Upload {
            store,
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
        }
    }

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
