//! S3 for the benchmark: a client for SeaweedFS, emptying the bucket between runs, and the
//! reference pipeline's uploader (`eso-bench-snapshot upload-reference`), run as its own process
//! so that its wall time and peak RSS are measured like every other step.
//!
//! The uploader stands in for k3s's minio-go `FPutObject` of the finished file: a multipart
//! upload with 16 MiB parts (minio-go's minimum part size) and 4 parts in flight (its default
//! thread count), each part read from the file at its offset.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use eso_bench::{Error, Result, io_err};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Part size of the reference uploader (minio-go's minimum).
const PART: u64 = 16 * 1024 * 1024;
/// Parts in flight (minio-go's default `NumThreads`).
const IN_FLIGHT: usize = 4;

/// Where and as whom to reach S3.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Bucket.
    pub bucket: String,
}

impl S3Target {
    /// A path-style client.
    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "eso-bench",
            ))
            .build();
        Client::from_conf(conf)
    }
}

fn s3_err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Other(format!("S3 {what}: {e:?}"))
}

/// Create the bucket.
pub async fn create_bucket(client: &Client, bucket: &str) -> Result<()> {
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(s3_err("CreateBucket"))?;
    Ok(())
}

/// Size of an object, if it exists.
pub async fn object_size(client: &Client, bucket: &str, key: &str) -> Result<Option<u64>> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(out.content_length().and_then(|n| u64::try_from(n).ok())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(s3_err("HeadObject")(e)),
    }
}

/// Delete every object in the bucket (and abort unfinished multipart uploads).
pub async fn empty_bucket(client: &Client, bucket: &str) -> Result<()> {
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(s3_err("ListObjectsV2"))?;
        for obj in out.contents() {
            if let Some(key) = obj.key() {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(s3_err("DeleteObject"))?;
            }
        }
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .map_err(s3_err("ListMultipartUploads"))?;
    for u in uploads.uploads() {
        if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await;
        }
    }
    Ok(())
}

/// The reference uploader: multipart upload of `file` to `key`.
pub async fn upload_file(target: &S3Target, file: &Path, key: &str) -> Result<u64> {
    let client = target.client();
    let bucket = target.bucket.as_str();
    let f = std::fs::File::open(file).map_err(io_err(format!("opening {}", file.display())))?;
    let size = f
        .metadata()
        .map_err(io_err(format!("reading {}", file.display())))?
        .len();
    let f = Arc::new(f);
    // minio-go: the part size grows so that 10,000 parts hold the object, in 16 MiB steps.
    let part = size.div_ceil(10_000).div_ceil(PART).max(1) * PART;
    let parts = size.div_ceil(part).max(1);
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/zip")
        .send()
        .await
        .map_err(s3_err("CreateMultipartUpload"))?;
    let id = upload
        .upload_id()
        .ok_or_else(|| Error::Other("CreateMultipartUpload returned no upload id".into()))?
        .to_string();
    let mut done = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for number in 1..=parts {
        while set.len() >= IN_FLIGHT {
            if let Some(r) = set.join_next().await {
                done.push(r.map_err(|e| Error::Other(format!("upload task: {e}")))??);
            }
        }
        let (client, bucket, key, id, f, path) = (
            client.clone(),
            bucket.to_string(),
            key.to_string(),
            id.clone(),
            f.clone(),
            PathBuf::from(file),
        );
        set.spawn(async move {
            let offset = (number - 1) * part;
            let len = part.min(size - offset);
            let body = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                f.read_exact_at(&mut buf, offset)
                    .map(|()| buf)
                    .map_err(io_err(format!("reading {}", path.display())))
            })
            .await
            .map_err(|e| Error::Other(format!("read task: {e}")))??;
            let number = i32::try_from(number).unwrap_or(i32::MAX);
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .content_length(i64::try_from(len).unwrap_or(i64::MAX))
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(s3_err("UploadPart"))?;
            Ok::<CompletedPart, Error>(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            )
        });
    }
    while let Some(r) = set.join_next().await {
        done.push(r.map_err(|e| Error::Other(format!("upload task: {e}")))??);
    }
    done.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .map_err(s3_err("CompleteMultipartUpload"))?;
    Ok(size)
}
