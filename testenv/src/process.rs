//! Child processes that die with the test, and free ports on 127.0.0.1.

use crate::{Error, Result, io_err};
use std::collections::HashSet;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by this process, never handed out twice (parallel tests in one binary).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 that this process has not handed out before.
pub fn free_port() -> u16 {
    free_port_with(|_| true)
}

/// A free port `p` for which `extra(p)` also holds (e.g. `p + 10000` is free too).
pub(crate) fn free_port_with(extra: impl Fn(u16) -> bool) -> u16 {
    loop {
        let Ok(listener) = TcpListener::bind(("127.0.0.1", 0)) else {
            continue;
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        let port = addr.port();
        drop(listener);
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let set = guard.get_or_insert_with(HashSet::new);
        if set.contains(&port) || !extra(port) {
            continue;
        }
        set.insert(port);
        return port;
    }
}

/// Whether nothing listens on `port` right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A running child process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Start `program args…` with stdout and stderr appended to `log`, under
    /// `setpriv --pdeathsig KILL` so it dies with the spawning thread.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Proc> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// As [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("opening log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("opening log {}", log.display())))?;
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {name} ({})", program.display())))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the process's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails with the log tail if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(Error::Start(format!(
                "{} exited early ({status}); last log lines:\n{}",
                self.name,
                log_tail(&self.log, 30)
            )));
        }
        Ok(())
    }

    /// Kill with SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop with SIGTERM, waiting up to `grace` before SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `ready` every 100 ms until it is true, the process exits, or `timeout` passes.
pub(crate) fn wait_until(
    proc: &mut Proc,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_running()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Start(format!(
                "{what} not ready after {timeout:?}; last log lines:\n{}",
                log_tail(proc.log_path(), 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether something accepts TCP connections on `ip`:`port`.
pub(crate) fn tcp_open(ip: std::net::Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from((ip, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
