//! The metrics and health endpoints over real TCP, with a plain HTTP/1.1 client.

use etcd_snapshot::api::Storage;
use etcd_snapshot::http::{self, OPENMETRICS_CONTENT_TYPE};
use etcd_snapshot::metrics::Metrics;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Every metric family and the sample name it must show.
const FAMILIES: [(&str, &str); 13] = [
    (
        "etcd_snapshot_duration_seconds",
        "etcd_snapshot_duration_seconds_bucket{",
    ),
    (
        "etcd_snapshot_last_size_bytes",
        "etcd_snapshot_last_size_bytes{",
    ),
    ("etcd_snapshot_bytes", "etcd_snapshot_bytes_total{"),
    (
        "etcd_snapshot_last_success_timestamp_seconds",
        "etcd_snapshot_last_success_timestamp_seconds{",
    ),
    ("etcd_snapshot_failures", "etcd_snapshot_failures_total{"),
    ("etcd_snapshot_pruned", "etcd_snapshot_pruned_total{"),
    (
        "etcd_snapshot_verify_failures",
        "etcd_snapshot_verify_failures_total ",
    ),
    ("etcd_snapshot_verified", "etcd_snapshot_verified_total "),
    (
        "etcd_snapshot_last_verified_timestamp_seconds",
        "etcd_snapshot_last_verified_timestamp_seconds ",
    ),
    ("etcd_snapshot_reconcile", "etcd_snapshot_reconcile_total{"),
    (
        "etcd_snapshot_reconcile_errors",
        "etcd_snapshot_reconcile_errors_total{",
    ),
    (
        "etcd_snapshot_reconcile_duration_seconds",
        "etcd_snapshot_reconcile_duration_seconds_sum{",
    ),
    ("etcd_snapshot_leader", "etcd_snapshot_leader "),
];

/// A parsed response: status line, headers (lowercased names), body.
struct Reply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("end of head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").to_owned();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn start() -> (SocketAddr, Metrics, watch::Sender<bool>) {
    let metrics = Metrics::new();
    let (ready_tx, ready_rx) = watch::channel(false);
    let (listener, addr) = http::bind("127.0.0.1:0").await.expect("bind");
    assert_ne!(addr.port(), 0);
    tokio::spawn(http::serve_on(listener, metrics.clone(), ready_rx));
    (addr, metrics, ready_tx)
}

#[tokio::test]
async fn metrics_endpoint_serves_every_family_as_openmetrics() {
    let (addr, metrics, _ready) = start().await;
    metrics.record_snapshot(
        Storage::Local,
        "node-a",
        Some("daily"),
        Duration::from_secs(3),
        4096,
    );
    metrics.record_snapshot(Storage::S3, "node-a", None, Duration::from_secs(9), 4096);
    metrics.record_failure(Storage::S3, "S3");
    metrics.record_prune(Storage::Local, "daily", 3);
    metrics.record_verify_failure();
    drop(metrics.reconcile_started("schedule"));
    metrics.record_reconcile_error("schedule", "InvalidSchedule");
    metrics.set_leader(true);

    let reply = request(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, "HTTP/1.1 200 OK");
    assert_eq!(reply.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    for (family, sample) in FAMILIES {
        assert!(
            reply.body.contains(&format!("\n# HELP {family} "))
                || reply.body.starts_with(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{}",
            reply.body
        );
        assert!(
            reply.body.contains(sample),
            "no sample {sample}:\n{}",
            reply.body
        );
    }
    assert!(
        reply
            .body
            .contains(r#"etcd_snapshot_pruned_total{storage="local",schedule="daily"} 3"#)
    );
    assert!(
        reply
            .body
            .contains(r#"etcd_snapshot_bytes_total{storage="s3",node="node-a"} 4096"#)
    );
    assert!(reply.body.contains("etcd_snapshot_leader 1"));
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let (addr, _metrics, ready) = start().await;

    let reply = request(addr, "GET", "/healthz").await;
    assert_eq!(
        (reply.status.as_str(), reply.body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );

    let reply = request(addr, "GET", "/readyz").await;
    assert_eq!(reply.status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(reply.body, "not ready\n");
    ready.send_replace(true);
    let reply = request(addr, "GET", "/readyz?verbose").await;
    assert_eq!(
        (reply.status.as_str(), reply.body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    ready.send_replace(false);
    assert_eq!(
        request(addr, "GET", "/readyz").await.status,
        "HTTP/1.1 503 Service Unavailable"
    );

    assert_eq!(
        request(addr, "GET", "/").await.status,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        request(addr, "GET", "/metricsx").await.status,
        "HTTP/1.1 404 Not Found"
    );
    let reply = request(addr, "POST", "/metrics").await;
    assert_eq!(reply.status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = request(addr, "HEAD", "/healthz").await;
    assert_eq!(
        (reply.header("content-length"), reply.body.as_str()),
        (Some("3"), "")
    );
}

#[tokio::test]
async fn a_stalled_client_does_not_block_others() {
    let (addr, _metrics, _ready) = start().await;
    // Connects and sends half a request, then nothing.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled.write_all(b"GET /metr").await.expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(2), request(addr, "GET", "/healthz"))
        .await
        .expect("answered while another client stalls");
    assert_eq!(reply.status, "HTTP/1.1 200 OK");
    // A garbage request gets a 400, not a hang.
    let mut bad = TcpStream::connect(addr).await.expect("connect");
    bad.write_all(b"\r\n\r\n").await.expect("send");
    let mut raw = String::new();
    bad.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{raw}");
    drop(stalled);
}
