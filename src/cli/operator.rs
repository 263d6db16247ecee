//! `etcd-snapshot controller` and `etcd-snapshot agent`: flags to settings, then run.

use super::CliError;
use super::args::{AgentArgs, ControllerArgs};
use super::common;
use crate::agent::AgentConfig;
use crate::controller::ControllerConfig;
use crate::duration::parse_go;
use crate::leader::LeaseConfig;
use crate::shutdown::Shutdown;
use std::time::Duration;

fn duration(flag: &str, value: &str) -> Result<Duration, CliError> {
    parse_go(value).filter(|d| !d.is_zero()).ok_or_else(|| {
        CliError::Usage(format!(
            "--{flag} {value:?} is not a duration like 10s, 5m or 500ms"
        ))
    })
}

/// SIGTERM and SIGINT handlers, installed before anything else starts.
fn listen() -> Result<Shutdown, CliError> {
    Shutdown::listen()
        .map_err(|e| CliError::Usage(format!("cannot install the SIGTERM/SIGINT handlers: {e}")))
}

async fn client() -> Result<kube::Client, CliError> {
    kube::Client::try_default().await.map_err(|e| {
        CliError::Usage(format!(
            "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}"
        ))
    })
}

/// Run the controller until it loses leadership or is stopped.
pub async fn controller(args: ControllerArgs) -> Result<(), CliError> {
    let lease = LeaseConfig {
        lease_duration: duration("lease-duration", &args.lease_duration)?,
        renew_deadline: duration("renew-deadline", &args.renew_deadline)?,
        retry_period: duration("retry-period", &args.retry_period)?,
        ..LeaseConfig::default()
    };
    lease
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let config = ControllerConfig {
        resync: duration("resync", &args.resync)?,
        failed_ttl: duration("failed-ttl", &args.failed_ttl)?,
        s3_sync_interval: duration("s3-sync-interval", &args.s3_sync_interval)?,
        s3_release_after: duration("s3-release-after", &args.s3_release_after)?,
        s3_preflight_interval: duration("s3-preflight-interval", &args.s3_preflight_interval)?,
        lease,
        events_namespace: args.events_namespace,
    };
    let identity = match args.identity {
        Some(id) if !id.is_empty() => id,
        _ => common::node_name(None)?,
    };
    let shutdown = listen()?;
    crate::controller::run(
        client().await?,
        args.namespace,
        identity,
        &args.metrics_addr,
        config,
        shutdown,
    )
    .await
    .map_err(|e| CliError::Usage(e.to_string()))
}

/// Run the agent until stopped.
pub async fn agent(args: AgentArgs) -> Result<(), CliError> {
    if args.node_name.trim().is_empty() {
        return Err(CliError::Usage(
            "--node-name (or NODE_NAME) is required".into(),
        ));
    }
    if !crate::naming::is_dns1123_subdomain(args.node_name.trim()) {
        return Err(CliError::Usage(format!(
            "--node-name {:?} is not a Kubernetes node name (lowercase letters, digits, '-' and '.')",
            args.node_name
        )));
    }
    let config = AgentConfig {
        node: args.node_name.trim().to_string(),
        namespace: args.namespace,
        dir: crate::storage::local::LocalDir::new(&args.dir.path()),
        etcd: common::etcd_config(&args.etcd),
        heartbeat: duration("heartbeat", &args.heartbeat)?,
        sync_interval: duration("sync-interval", &args.sync_interval)?,
        shutdown_grace: parse_go(&args.shutdown_grace).ok_or_else(|| {
            CliError::Usage(format!(
                "--shutdown-grace {:?} is not a duration like 0s, 5s or 500ms",
                args.shutdown_grace
            ))
        })?,
        events_namespace: args.events_namespace,
    };
    let shutdown = listen()?;
    crate::agent::run(client().await?, config, &args.metrics_addr, shutdown)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))
}
