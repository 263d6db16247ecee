//! Pieces shared by the standalone subcommands: turning flags into library settings.

use super::CliError;
use super::args::{DirArgs, EtcdArgs, S3Args};
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

/// The local snapshot directory from the flags.
pub fn local_dir(args: &DirArgs) -> LocalDir {
    LocalDir::new(&args.dir)
}

/// The S3 store when `--s3` is given (settings checked, bucket reachable), else `None`.
pub async fn s3_store(args: &S3Args) -> Result<Option<S3Store>, CliError> {
    if !args.enabled {
        return Ok(None);
    }
    let cfg = S3Config::from_args(args)?;
    Ok(Some(S3Store::connect(&cfg).await?))
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
