//! A minimal HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! One request per connection (`Connection: close`), each connection on its own task with read
//! and write timeouts, so a slow or broken client never blocks another. Hand-rolled on tokio's
//! `TcpListener`: three fixed GET endpoints do not need a web framework.

use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Content type of `/metrics` (OpenMetrics text).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the plain-text answers.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// How long a client may take to send its request, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request head; longer requests get 431.
const MAX_HEAD: usize = 8 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Accepting connections failed for good.
    #[error("accepting connections failed: {0}")]
    Accept(#[source] std::io::Error),
}

impl HttpError {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Bind { .. } => "HttpBind",
            HttpError::Accept(_) => "HttpAccept",
        }
    }
}

/// Bind `addr` (e.g. `0.0.0.0:8080`, or `127.0.0.1:0` for any free port) and return the
/// listener with the address actually bound.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), HttpError> {
    let bind_error = |source| HttpError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// As [`bind`], waiting while the address is in use, for up to `patience`: during a rollout of
/// a host-network DaemonSet the previous pod holds the port until it has stopped.
pub async fn bind_when_free(
    addr: &str,
    patience: Duration,
) -> Result<(TcpListener, SocketAddr), HttpError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut told = false;
    loop {
        match bind(addr).await {
            Err(HttpError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                if !std::mem::replace(&mut told, true) {
                    tracing::info!(
                        addr,
                        "the address is in use (the previous pod still stopping?); waiting for it"
                    );
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
            other => return other,
        }
    }
}

/// Pause between two attempts of [`bind_when_free`].
const BIND_RETRY: Duration = Duration::from_millis(500);

/// Bind `addr` and serve until a fatal accept error; see [`serve_on`].
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let (listener, local) = bind(addr).await?;
    tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz");
    serve_on(listener, metrics, ready).await
}

/// Serve `GET /metrics` (OpenMetrics), `/healthz` (always `ok`) and `/readyz` (`ok` while
/// `ready` is true, else 503) on `listener`. Runs until a fatal accept error; transient ones
/// (aborted connections, out of file descriptors) are logged and retried.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let metrics = metrics.clone();
                let ready = ready.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, &metrics, &ready).await {
                        tracing::debug!(%error, "HTTP connection failed");
                    }
                });
            }
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => return Err(HttpError::Accept(e)),
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    // EMFILE/ENFILE have no ErrorKind of their own; they show as `Other`/`Uncategorized`.
    !matches!(e.kind(), InvalidInput | Unsupported | PermissionDenied)
}

/// A response: status line, content type and body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Self {
        Response {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: format!("{body}\n"),
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: &Metrics,
    ready: &watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (response, head_only) = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await
    {
        Ok(Ok(Some(head))) => route(&head, metrics, ready),
        Ok(Ok(None)) => (
            Response::text("431 Request Header Fields Too Large", "request too large"),
            false,
        ),
        Ok(Err(e)) => return Err(e),
        Err(_) => (
            Response::text("408 Request Timeout", "request timeout"),
            false,
        ),
    };
    let bytes = encode(&response, head_only);
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Read until the end of the request head. `None` when it exceeds [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// Pick the response for a request head; the flag is true for HEAD (no body sent).
fn route(head: &str, metrics: &Metrics, ready: &watch::Receiver<bool>) -> (Response, bool) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (Response::text("400 Bad Request", "bad request"), false);
    };
    if !version.starts_with("HTTP/1.") {
        return (
            Response::text("505 HTTP Version Not Supported", "HTTP/1.x only"),
            false,
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return (Response::text("404 Not Found", "not found"), false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return (
                Response::text("405 Method Not Allowed", "method not allowed"),
                false,
            );
        }
    };
    let response = match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: OPENMETRICS_CONTENT_TYPE,
            body: metrics.encode(),
        },
        "/readyz" if !*ready.borrow() => Response::text("503 Service Unavailable", "not ready"),
        _ => Response::text("200 OK", "ok"),
    };
    (response, head_only)
}

fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if response.status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binding_waits_while_the_previous_holder_still_has_the_port() {
        let (held, addr) = bind("127.0.0.1:0").await.expect("bind");
        let addr = addr.to_string();
        let waiter = tokio::spawn({
            let addr = addr.clone();
            async move { bind_when_free(&addr, Duration::from_secs(20)).await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiter.is_finished(), "waits while the port is held");
        drop(held);
        let (_, bound) = waiter.await.expect("task").expect("bound once free");
        assert_eq!(bound.to_string(), addr);

        // Past the patience, the error is the bind error.
        let (_held, addr) = bind("127.0.0.1:0").await.expect("bind");
        let err = bind_when_free(&addr.to_string(), Duration::from_millis(300))
            .await
            .expect_err("still in use");
        assert!(err.to_string().contains("cannot listen on"), "{err}");
    }
}
