//! SIGTERM and SIGINT. In a container the process is PID 1, for which the kernel ignores every
//! signal that has no handler: without one, `kubectl delete pod` waits the whole grace period
//! and then SIGKILLs. [`Shutdown::listen`] installs the handlers; [`Shutdown::wait`] resolves
//! once either signal has arrived (also for waiters that start after it arrived).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A stop request: which signal arrived, once one has.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<&'static str>>,
}

impl Shutdown {
    /// Install the SIGTERM and SIGINT handlers now (a signal that arrives from here on is
    /// caught) and watch for them in the background. Needs a tokio runtime.
    pub fn listen() -> std::io::Result<Shutdown> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tx.send_replace(Some(name));
            // Keep the handlers installed: a second signal must not kill the process while it
            // cleans up (the orchestrator's SIGKILL ends it if cleanup overruns).
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
        });
        Ok(Shutdown { rx })
    }

    /// A request that never comes (for callers without signal handling, and tests).
    pub fn never() -> Shutdown {
        let (_, rx) = watch::channel(None);
        Shutdown { rx }
    }

    /// The signal that arrived, if one has.
    pub fn requested(&self) -> Option<&'static str> {
        *self.rx.borrow()
    }

    /// Wait for SIGTERM or SIGINT; returns its name.
    pub async fn wait(&self) -> &'static str {
        let mut rx = self.rx.clone();
        let arrived = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|name| *name);
        match arrived {
            Some(name) => name,
            // No sender (never(), or the runtime is shutting down): nothing will come.
            None => std::future::pending().await,
        }
    }
}
