//! `etcd-snapshot save`: one snapshot now, to the local directory and/or S3.
//!
//! As k3s, an S3 problem never costs the local copy: S3 settings that cannot be right (a
//! malformed endpoint or timeout, a missing bucket name) are refused before anything is done,
//! like any bad flag, but whatever S3 itself refuses or fails at (unreachable, untrusted
//! certificate, wrong credentials, no such bucket, a refused upload) fails only the S3 copy: the
//! local copy is saved, the error names the S3 failure, and the exit status is 1.

use super::args::SaveArgs;
use super::{CliError, common};
use crate::api::{Compression, Storage};
use crate::naming::SnapshotName;
use crate::shutdown::Shutdown;
use crate::snapshot::crypt::EncryptionKey;
use crate::snapshot::{self, SaveRequest};
use crate::storage::s3::S3Store;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Take and store one snapshot; prints `Snapshot NAME saved.` per stored copy, as the reference.
pub async fn run(args: SaveArgs) -> Result<(), CliError> {
    let flags = &args.flags;
    if args.s3_only && !flags.s3.enabled {
        return Err(CliError::Usage(
            "--s3-only needs --s3 and the S3 settings".into(),
        ));
    }
    if flags.name.trim().is_empty() {
        return Err(CliError::Usage("--name must not be empty".into()));
    }
    let node = common::node_name(flags.node_name.as_deref())?;
    let compression = if flags.compress {
        Compression::Zstd
    } else {
        Compression::None
    };
    let created = common::now_unix();
    let key = flags
        .encryption
        .key_file
        .as_deref()
        .map(EncryptionKey::from_file)
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let name = SnapshotName::build(&flags.name, &node, created, compression, key.is_some())
        .map_err(|e| CliError::Usage(format!("--name {:?}: {e}", flags.name)))?;
    let s3_config = common::s3_config(&flags.s3)?;
    let local = (!args.s3_only).then(|| common::local_dir(flags));
    // S3 is asked before the snapshot starts (one stream feeds both copies); when it cannot take
    // the copy, the snapshot goes on with the local copy alone.
    let mut s3_refused = None;
    let s3 = match s3_config {
        Some(cfg) => match S3Store::connect(&cfg).await {
            Ok(store) => Some(store),
            Err(e) if local.is_some() => {
                tracing::debug!(error = %e, "S3 cannot take the copy; saving the local copy only");
                s3_refused = Some(e);
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // Ctrl-C or SIGTERM cancels cleanly: no temp file, no multipart upload left behind.
    let cancel = CancellationToken::new();
    let shutdown = Shutdown::listen()
        .map_err(|e| CliError::Usage(format!("cannot install the SIGTERM/SIGINT handlers: {e}")))?;
    let on_signal = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown.wait().await;
            cancel.cancel();
        }
    });
    let request = SaveRequest {
        name: name.clone(),
        node_name: node,
        created_unix: created,
        compression,
        zstd_level: 1,
        local,
        s3,
        extra_metadata: Default::default(),
        progress: std::io::stderr().is_terminal().then(progress_display),
        encryption: key,
        cancel,
    };
    let report = snapshot::save(&common::etcd_config(&flags.etcd), request).await;
    on_signal.abort();
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
    let report = report?;
    let mut saved = Vec::new();
    let mut failed = Vec::new();
    for copy in &report.copies {
        match &copy.result {
            Ok(()) => {
                println!("Snapshot {} saved.", report.record.name);
                saved.push(copy);
            }
            Err(e) => failed.push(format!(
                "the {} copy was not saved: {e}",
                copy.storage.as_str()
            )),
        }
    }
    if let Some(e) = s3_refused {
        failed.push(format!("the S3 copy was not saved: {e}"));
    }
    tracing::info!(
        name = %report.record.name,
        size = report.record.size,
        raw_size = report.record.raw_size,
        sha256 = %report.record.sha256,
        revision = report.record.etcd_revision,
        cluster_id = %report.record.cluster_id,
        encryption_key_id = report.record.encryption_key_id.as_deref().unwrap_or(""),
        duration_ms = u64::try_from(report.record.duration.as_millis()).unwrap_or(u64::MAX),
        "snapshot stored"
    );
    if failed.is_empty() {
        return Ok(());
    }
    let kept: Vec<String> = saved
        .iter()
        .map(|c| match c.storage {
            Storage::Local => format!(
                "the local copy {} was saved",
                c.location.strip_prefix("file://").unwrap_or(&c.location)
            ),
            Storage::S3 => format!("the S3 copy {} was saved", c.location),
        })
        .collect();
    let mut message = failed.join("; ");
    if !kept.is_empty() {
        message.push_str(&format!("; {}", kept.join(" and ")));
    }
    Err(CliError::Failed(message))
}

/// Bytes and rate on one terminal line, at most four updates a second.
fn progress_display() -> snapshot::Progress {
    let start = Instant::now();
    let last_ms = AtomicU64::new(0);
    Arc::new(move |bytes: u64| {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if ms.saturating_sub(last_ms.load(Ordering::Relaxed)) < 250 {
            return;
        }
        last_ms.store(ms, Ordering::Relaxed);
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let rate = mib / (ms.max(1) as f64 / 1000.0);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{mib:.1} MiB received, {rate:.1} MiB/s");
        let _ = err.flush();
    })
}
