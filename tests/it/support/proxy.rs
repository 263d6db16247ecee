//! A bandwidth-limiting TCP proxy for fault tests: it forwards bytes to a real server (e.g.
//! SeaweedFS) unchanged, at most `rate` bytes per second in each direction, and can be made to
//! stall (accept and hold connections, forward nothing). It is not a fake of the server: every
//! request is answered by the real one. Stops when dropped.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct ThrottleProxy {
    port: u16,
    rate: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottleProxy {
    /// Listen on a free 127.0.0.1 port and forward to `target` (`host:port`) at `rate` bytes per
    /// second (0 = unlimited).
    pub async fn start(target: &str, rate: u64) -> ThrottleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let rate = Arc::new(AtomicU64::new(rate));
        let stalled = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        let task = {
            let (rate, stalled) = (rate.clone(), stalled.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (rate, stalled, target) = (rate.clone(), stalled.clone(), target.clone());
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let up = pump(cr, sw, rate.clone(), stalled.clone());
                        let down = pump(sr, cw, rate, stalled);
                        let _ = tokio::join!(up, down);
                    });
                }
            })
        };
        ThrottleProxy {
            port,
            rate,
            stalled,
            task,
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Change the rate (bytes per second, 0 = unlimited).
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::SeqCst);
    }

    /// Stall (`true`: hold every connection, forward nothing) or resume.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rate: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let limit = rate.load(Ordering::SeqCst);
        // Small reads when throttled, so the pace is smooth.
        let want = if limit == 0 {
            buf.len()
        } else {
            usize::try_from(limit / 20)
                .unwrap_or(buf.len())
                .clamp(512, buf.len())
        };
        let n = match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if limit > 0 {
            let secs = n as f64 / limit as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
