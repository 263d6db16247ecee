//! Pieces shared by the standalone subcommands: turning flags into library settings.

use super::CliError;
use super::args::{EtcdArgs, S3Args, SnapshotFlags};
use crate::snapshot::EtcdConfig;
use crate::storage::config::S3Config;
use crate::storage::local::LocalDir;
use crate::storage::s3::S3Store;

/// etcd settings from the flags.
pub fn etcd_config(args: &EtcdArgs) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(args.endpoints.clone());
    cfg.cacert = args.cacert.clone();
    cfg.cert = args.cert.clone();
    cfg.key = args.key.clone();
    cfg
}

/// The local snapshot directory from the flags (`--dir`, else under `--data-dir`).
pub fn local_dir(flags: &SnapshotFlags) -> LocalDir {
    LocalDir::new(&flags.snapshot_dir())
}

/// The S3 settings when `--s3` is given, checked without contacting S3, else `None`.
pub fn s3_config(args: &S3Args) -> Result<Option<S3Config>, CliError> {
    if !args.enabled {
        return Ok(None);
    }
    if args.config_secret.is_some() && args.bucket.is_none() {
        return Err(CliError::Usage(
            "--s3-config-secret names a Kubernetes Secret, which this command does not read: give \
             the S3 settings as --s3-* flags or in the --config file"
                .into(),
        ));
    }
    Ok(Some(S3Config::from_args(args)?))
}

/// The S3 store when `--s3` is given (settings checked, bucket reachable), else `None`.
pub async fn s3_store(args: &S3Args) -> Result<Option<S3Store>, CliError> {
    match s3_config(args)? {
        Some(cfg) => Ok(Some(S3Store::connect(&cfg).await?)),
        None => Ok(None),
    }
}

/// This node's name: the flag (or `NODE_NAME`), else the host name, lowercased.
pub fn node_name(flag: Option<&str>) -> Result<String, CliError> {
    let name = match flag {
        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| {
                CliError::Usage(format!("cannot read the host name ({e}); pass --node-name"))
            })?,
    };
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(CliError::Usage(format!(
            "node name {name:?} is not usable in a snapshot name; pass --node-name"
        )));
    }
    Ok(name.to_lowercase())
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A client of the Kubernetes API of `KUBECONFIG` (or the pod's service account), or one line
/// saying why there is none.
pub async fn kube_client() -> Result<kube::Client, CliError> {
    kube::Client::try_default().await.map_err(|e| {
        tracing::debug!(error = ?e, "no Kubernetes client");
        let why = crate::net_error::chain(&e)
            .find_map(|c| c.downcast_ref::<kube::config::KubeconfigError>())
            .map(|k| match k {
                kube::config::KubeconfigError::ReadConfig(io, path) => {
                    format!("cannot read the kubeconfig {}: {io}", path.display())
                }
                other => crate::net_error::one_line(&other.to_string()),
            })
            .unwrap_or_else(|| crate::net_error::one_line(&e.to_string()));
        CliError::Usage(format!(
            "no connection to the Kubernetes API: {why} (set KUBECONFIG, or run inside the cluster)"
        ))
    })
}

/// A failed Kubernetes API request in a person's words (the whole error goes to the debug log).
pub fn kube_reason(e: &kube::Error) -> String {
    tracing::debug!(error = ?e, "Kubernetes API request failed");
    match e {
        kube::Error::Api(status) => format!(
            "the API server answered {} {}",
            status.code,
            crate::net_error::one_line(&status.message)
        ),
        other => match crate::net_error::Cause::of(other) {
            crate::net_error::Cause::Other(text) => text,
            cause => format!("{cause} (is the API server that KUBECONFIG names up?)"),
        },
    }
}
