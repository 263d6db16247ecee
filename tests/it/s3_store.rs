//! The S3 store against the real SeaweedFS of the test environment: multipart uploads, listing,
//! deletion, aborts, and the errors a user meets (missing bucket, wrong secret, untrusted
//! certificate, unsafe names, a server that is down).

use crate::support;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use eso_testenv::{S3Options, S3Server};
use etcd_snapshot::api::BucketLookup;
use etcd_snapshot::consts::s3_metadata;
use etcd_snapshot::storage::config::{Proxy, S3Config};
use etcd_snapshot::storage::s3::{S3Error, S3Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BUCKET: &str = "snapshots";
const FOLDER: &str = "etcd";

fn start(https: bool) -> S3Server {
    S3Server::start(S3Options {
        https,
        ..Default::default()
    })
    .expect("start SeaweedFS")
}

fn config(s3: &S3Server) -> S3Config {
    S3Config {
        endpoint: s3.host_port(),
        endpoint_ca: None,
        skip_ssl_verify: false,
        access_key: Some(s3.access_key.clone()),
        secret_key: Some(s3.secret_key.clone()),
        session_token: None,
        bucket: BUCKET.into(),
        bucket_lookup: BucketLookup::Path,
        region: "us-east-1".into(),
        folder: FOLDER.into(),
        insecure: true,
        timeout: Duration::from_secs(30),
        proxy: Proxy::None,
    }
}

fn raw(s3: &S3Server) -> aws_sdk_s3::Client {
    support::s3_client(s3)
}

async fn with_bucket(s3: &S3Server) -> Client {
    let client = raw(s3);
    client
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    client
}

async fn connected(s3: &S3Server) -> (S3Store, Client) {
    let client = with_bucket(s3).await;
    let store = S3Store::connect(&config(s3)).await.expect("connect");
    (store, client)
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for S3.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn snapshot_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([
        (s3_metadata::CLUSTER_ID.to_string(), "c0ffee".to_string()),
        (s3_metadata::NODE_NAME.to_string(), "node-a".to_string()),
    ])
}

/// Upload `data` as `name` in chunks of uneven sizes.
async fn upload(store: &S3Store, name: &str, data: &[u8]) {
    let mut upload = store
        .begin_upload(name, &snapshot_metadata())
        .await
        .expect("begin upload");
    let sizes = [1, 777_777, 3 * 1024 * 1024 + 5, 65_536, 9 * 1024 * 1024 + 1];
    let mut offset = 0;
    for size in sizes.iter().cycle() {
        if offset >= data.len() {
            break;
        }
        let end = (offset + size).min(data.len());
        upload
            .write(Bytes::copy_from_slice(&data[offset..end]))
            .await
            .expect("write");
        offset = end;
    }
    assert_eq!(upload.bytes_written(), data.len() as u64);
    upload.finish(&sha256_hex(data)).await.expect("finish");
}

async fn pending_uploads(client: &Client) -> usize {
    client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list multipart uploads")
        .uploads()
        .len()
}

async fn object_keys(client: &Client) -> Vec<String> {
    client
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list objects")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn multipart_round_trip_keeps_bytes_sha256_and_metadata() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let data = random_bytes(20 * 1024 * 1024 + 12_345, 7);
    let name = "on-demand-node-a-1730000000.zst";
    upload(&store, name, &data).await;

    let entry = store
        .head(name)
        .await
        .expect("head")
        .expect("object exists");
    assert_eq!(entry.key, format!("{FOLDER}/{name}"));
    assert_eq!(entry.size, data.len() as u64);
    assert_eq!(entry.sha256(), Some(sha256_hex(&data).as_str()));
    assert_eq!(
        entry
            .metadata
            .get(s3_metadata::NODE_NAME)
            .map(String::as_str),
        Some("node-a")
    );
    assert!(entry.last_modified.is_some());
    let raw_head = client
        .head_object()
        .bucket(BUCKET)
        .key(&entry.key)
        .send()
        .await
        .expect("raw head");
    assert_eq!(raw_head.content_type(), Some("application/zstd"));
    let stored = raw_head.metadata().expect("user metadata");
    assert_eq!(
        stored.get(s3_metadata::SHA256),
        Some(&sha256_hex(&data)),
        "sha256 is in the object's metadata, not only a tag"
    );
    assert_eq!(
        stored.get(s3_metadata::CLUSTER_ID).map(String::as_str),
        Some("c0ffee")
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join(name);
    let got = store.download(name, &dest).await.expect("download");
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(got.sha256, sha256_hex(&data));
    assert_eq!(std::fs::read(&dest).expect("read"), data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        store.download(name, &dest).await.is_err(),
        "an existing file is never overwritten"
    );
    assert_eq!(std::fs::read(&dest).expect("still there").len(), data.len());
    assert_eq!(pending_uploads(&client).await, 0);
}

#[tokio::test]
async fn extra_metadata_round_trips_as_json_beside_the_snapshot() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let name = "etcd-snapshot-node-a-1730000000";
    assert_eq!(store.get_extra_metadata(name).await.expect("get"), None);
    store
        .put_extra_metadata(name, &BTreeMap::new())
        .await
        .expect("empty put");
    assert!(
        object_keys(&client).await.is_empty(),
        "nothing for empty metadata"
    );
    let meta = BTreeMap::from([("cluster".to_string(), "prod".to_string())]);
    store.put_extra_metadata(name, &meta).await.expect("put");
    assert_eq!(
        store.get_extra_metadata(name).await.expect("get"),
        Some(meta)
    );
    let key = format!("{FOLDER}/.metadata/{name}");
    let head = client
        .head_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .expect("metadata object");
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test]
async fn list_shows_snapshots_only() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let data = random_bytes(1000, 1);
    upload(&store, "b-node-a-2", &data).await;
    upload(&store, "a-node-a-1.zip", &data).await;
    store
        .put_extra_metadata(
            "a-node-a-1.zip",
            &BTreeMap::from([("k".to_string(), "v".to_string())]),
        )
        .await
        .expect("extra metadata");
    for (key, body) in [
        (format!("{FOLDER}/empty-node-a-3"), &b""[..]),
        (format!("{FOLDER}/sub/c-node-a-4"), &b"x"[..]),
        ("elsewhere-node-a-5".to_string(), &b"x"[..]),
        (format!("{FOLDER}-other/d-node-a-6"), &b"x"[..]),
    ] {
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .expect("put");
    }
    let list = store.list().await.expect("list");
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a-node-a-1.zip", "b-node-a-2"]);
    for entry in &list {
        assert_eq!(entry.size, 1000);
        assert_eq!(entry.sha256(), Some(sha256_hex(&data).as_str()));
        assert_eq!(
            entry
                .metadata
                .get(s3_metadata::CLUSTER_ID)
                .map(String::as_str),
            Some("c0ffee")
        );
    }
}

#[tokio::test]
async fn delete_returns_true_then_false_and_removes_the_metadata_object() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let name = "on-demand-node-a-1";
    upload(&store, name, b"snapshot bytes").await;
    store
        .put_extra_metadata(name, &BTreeMap::from([("k".to_string(), "v".to_string())]))
        .await
        .expect("extra metadata");
    assert_eq!(object_keys(&client).await.len(), 2);
    assert!(store.delete(name).await.expect("delete"));
    assert!(object_keys(&client).await.is_empty());
    assert!(!store.delete(name).await.expect("delete again"));
    assert_eq!(store.head(name).await.expect("head"), None);
}

#[tokio::test]
async fn abort_leaves_no_object_and_no_pending_upload() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let mut upload = store
        .begin_upload("aborted-node-a-1", &snapshot_metadata())
        .await
        .expect("begin");
    upload
        .write(Bytes::from(random_bytes(9 * 1024 * 1024, 3)))
        .await
        .expect("write");
    assert_eq!(pending_uploads(&client).await, 1);
    upload.abort().await;
    assert_eq!(pending_uploads(&client).await, 0);
    assert!(object_keys(&client).await.is_empty());
}

#[tokio::test]
async fn a_dropped_upload_leaves_no_visible_object_and_aborts_itself() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let mut upload = store
        .begin_upload("dropped-node-a-1", &snapshot_metadata())
        .await
        .expect("begin");
    upload
        .write(Bytes::from(random_bytes(10 * 1024 * 1024, 4)))
        .await
        .expect("write");
    drop(upload);
    assert!(object_keys(&client).await.is_empty());
    assert_eq!(store.list().await.expect("list"), []);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending_uploads(&client).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped upload was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stale_uploads_are_aborted_by_age() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    for key in [
        format!("{FOLDER}/stale-node-a-1"),
        format!("{FOLDER}/sub/other"),
    ] {
        client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("create upload");
    }
    let hour = Duration::from_secs(3600);
    assert_eq!(store.abort_stale_uploads(hour).await.expect("abort"), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store
            .abort_stale_uploads(Duration::from_secs(1))
            .await
            .expect("abort"),
        1,
        "only uploads of snapshots directly under the folder"
    );
    assert_eq!(pending_uploads(&client).await, 1);
}

#[tokio::test]
async fn a_missing_bucket_is_no_such_bucket() {
    let s3 = start(false);
    let err = S3Store::connect(&config(&s3))
        .await
        .expect_err("no bucket yet");
    assert!(
        matches!(&err, S3Error::NoSuchBucket { bucket } if bucket == BUCKET),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "S3 bucket {BUCKET:?} does not exist: create it, or check the bucket name \
             (--s3-bucket, etcd-s3-bucket in a Secret)"
        )
    );
}

#[tokio::test]
async fn a_wrong_secret_is_access_denied_and_never_shown() {
    let s3 = start(false);
    with_bucket(&s3).await;
    let secret = "wrong-secret-Zq8xK2pLm".to_string();
    let token = "session-token-Y7wQ".to_string();
    let cfg = S3Config {
        secret_key: Some(secret.clone()),
        session_token: Some(token.clone()),
        ..config(&s3)
    };
    let err = S3Store::connect(&cfg).await.expect_err("wrong secret");
    assert!(matches!(err, S3Error::AccessDenied { .. }), "{err:?}");
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(text.contains("S3 refused the credentials (check the access key and secret key)"));
    for shown in [&text, &debug] {
        assert!(
            !shown.contains(&secret) && !shown.contains(&token),
            "{shown}"
        );
        assert!(!shown.contains(&s3.secret_key), "{shown}");
    }
}

fn https_config(s3: &S3Server) -> S3Config {
    S3Config {
        endpoint: s3.https_host_port().expect("https"),
        insecure: false,
        ..config(s3)
    }
}

#[tokio::test]
async fn https_works_with_the_endpoint_ca() {
    let s3 = start(true);
    with_bucket(&s3).await;
    let ca = std::fs::read_to_string(s3.ca_file().expect("CA")).expect("read CA");
    let cfg = S3Config {
        endpoint_ca: Some(ca),
        ..https_config(&s3)
    };
    let store = S3Store::connect(&cfg).await.expect("connect over HTTPS");
    upload(&store, "tls-node-a-1", b"over tls").await;
    assert_eq!(store.list().await.expect("list").len(), 1);
}

#[tokio::test]
async fn https_without_the_ca_is_a_tls_error_naming_the_ca_option() {
    let s3 = start(true);
    with_bucket(&s3).await;
    let err = S3Store::connect(&https_config(&s3))
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, S3Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("--s3-endpoint-ca") && text.contains("etcd-s3-endpoint-ca"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn https_with_skip_ssl_verify_works_without_the_ca() {
    let s3 = start(true);
    with_bucket(&s3).await;
    let cfg = S3Config {
        skip_ssl_verify: true,
        ..https_config(&s3)
    };
    let store = S3Store::connect(&cfg)
        .await
        .expect("connect skipping verification");
    let data = random_bytes(9 * 1024 * 1024, 5);
    upload(&store, "insecure-node-a-1", &data).await;
    let entry = store
        .head("insecure-node-a-1")
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(entry.sha256(), Some(sha256_hex(&data).as_str()));
    let dir = tempfile::tempdir().expect("tempdir");
    let got = store
        .download("insecure-node-a-1", &dir.path().join("x"))
        .await
        .expect("download");
    assert_eq!(got.sha256, sha256_hex(&data));
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1; counts the tunnels it opened.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                else {
                    let _ = client.write_all(b"HTTP/1.1 405 Only CONNECT\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (url, tunnels)
}

#[tokio::test]
async fn https_goes_through_a_configured_proxy() {
    use std::sync::atomic::Ordering;
    let s3 = start(true);
    with_bucket(&s3).await;
    let (proxy, tunnels) = connect_proxy().await;
    let ca = std::fs::read_to_string(s3.ca_file().expect("CA")).expect("read CA");
    let with_ca = S3Config {
        endpoint_ca: Some(ca),
        proxy: Proxy::Url(proxy.clone()),
        ..https_config(&s3)
    };
    let store = S3Store::connect(&with_ca).await.expect("connect via proxy");
    upload(&store, "proxied-node-a-1", b"through the proxy").await;
    let after_ca = tunnels.load(Ordering::SeqCst);
    assert!(after_ca >= 1, "the SDK connector did not use the proxy");
    let skip = S3Config {
        skip_ssl_verify: true,
        proxy: Proxy::Url(proxy),
        ..https_config(&s3)
    };
    let store = S3Store::connect(&skip)
        .await
        .expect("connect via proxy, no verify");
    assert_eq!(store.list().await.expect("list").len(), 1);
    assert!(
        tunnels.load(Ordering::SeqCst) > after_ca,
        "the skip-verify connector did not use the proxy"
    );
}

#[tokio::test]
async fn unsafe_names_are_refused_before_any_request() {
    let mut s3 = start(false);
    let (store, _client) = connected(&s3).await;
    // With the server down, any request would fail as Unreachable: a Name error proves none
    // was sent.
    s3.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
    for bad in ["../x", "a/b", "..", ".metadata", ""] {
        let is_name = |r: Result<(), S3Error>| matches!(r, Err(S3Error::Name(_)));
        assert!(
            is_name(store.begin_upload(bad, &meta).await.map(|_| ())),
            "{bad}"
        );
        assert!(is_name(store.head(bad).await.map(|_| ())), "{bad}");
        assert!(is_name(store.delete(bad).await.map(|_| ())), "{bad}");
        let dest = dir.path().join("dest");
        assert!(
            is_name(store.download(bad, &dest).await.map(|_| ())),
            "{bad}"
        );
        assert!(!dest.exists());
        assert!(is_name(store.put_extra_metadata(bad, &meta).await), "{bad}");
        assert!(
            is_name(store.get_extra_metadata(bad).await.map(|_| ())),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_stopped_server_is_unreachable_within_the_timeout() {
    let mut s3 = start(false);
    with_bucket(&s3).await;
    let timeout = Duration::from_secs(3);
    let cfg = S3Config {
        timeout,
        ..config(&s3)
    };
    let store = S3Store::connect(&cfg).await.expect("connect");
    s3.stop();
    let started = Instant::now();
    let err = store.list().await.expect_err("server is down");
    let took = started.elapsed();
    assert!(
        matches!(err, S3Error::Unreachable { .. } | S3Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    let started = Instant::now();
    let err = store
        .begin_upload("down-node-a-1", &snapshot_metadata())
        .await
        .expect_err("server is down");
    assert!(
        matches!(err, S3Error::Unreachable { .. } | S3Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    let err = S3Store::connect(&cfg).await.expect_err("server is down");
    assert!(
        matches!(err, S3Error::Unreachable { .. } | S3Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&s3.host_port()), "{err}");
}

/// Not a test: how long the in-place copy that records the sha256 takes against the upload.
/// Run with `cargo test --release --test s3_store -- --ignored --nocapture measure`.
#[tokio::test]
#[ignore]
async fn measure_in_place_copy_against_upload() {
    let s3 = start(false);
    let (store, client) = connected(&s3).await;
    let data = Bytes::from(random_bytes(200 * 1024 * 1024, 9));
    let sha = sha256_hex(&data);
    for round in 0..3 {
        let name = format!("measure-node-a-{round}");
        let started = Instant::now();
        let mut upload = store
            .begin_upload(&name, &snapshot_metadata())
            .await
            .expect("begin");
        for chunk in data.chunks(1024 * 1024) {
            upload.write(data.slice_ref(chunk)).await.expect("write");
        }
        let writes = started.elapsed();
        let finishing = Instant::now();
        upload.finish(&sha).await.expect("finish");
        let finish = finishing.elapsed();
        // A second in-place copy on its own: the request finish() ends with.
        let key = format!("{FOLDER}/{name}");
        let copying = Instant::now();
        client
            .copy_object()
            .bucket(BUCKET)
            .key(&key)
            .copy_source(format!("{BUCKET}/{key}"))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .metadata(s3_metadata::SHA256, &sha)
            .send()
            .await
            .expect("copy");
        let copy = copying.elapsed();
        println!(
            "round {round}: 200 MiB: writes {writes:?}, finish (last parts + complete + copy) \
             {finish:?}, in-place copy alone {copy:?} = {:.2}% of the upload",
            100.0 * copy.as_secs_f64() / (writes + finish).as_secs_f64()
        );
    }
}
