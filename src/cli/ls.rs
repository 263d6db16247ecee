//! `etcd-snapshot ls` (`list`, `l`): local and S3 copies, as the reference's table or as an
//! ETCDSnapshotFileList.

use super::args::{LsArgs, OutputFormat};
use super::{CliError, common};
use crate::storage::catalog::{StoredCopy, sort_copies};
use crate::storage::local::LocalDir;
use crate::storage::s3::S3Store;
use std::io::Write;

/// Every stored copy this node can see: its local directory, plus S3 when enabled.
pub async fn collect(
    dir: &LocalDir,
    node: &str,
    s3: Option<&S3Store>,
) -> Result<Vec<StoredCopy>, CliError> {
    let mut copies = Vec::new();
    for entry in dir.list()? {
        let sha = dir.read_checksum(&entry.name).ok().flatten();
        copies.push(StoredCopy::from_local(&entry, node, sha));
    }
    if let Some(store) = s3 {
        let cfg = store.config();
        for entry in store.list().await? {
            copies.push(StoredCopy::from_s3(
                &entry,
                cfg.location(&entry.name),
                cfg.to_location(),
            ));
        }
    }
    sort_copies(&mut copies);
    Ok(copies)
}

/// Ready copies recorded in the cluster, as stored copies.
async fn from_cluster() -> Result<Vec<StoredCopy>, CliError> {
    let client = common::kube_client().await?;
    let api: kube::Api<crate::api::ETCDSnapshotFile> = kube::Api::all(client);
    let list = api.list(&Default::default()).await.map_err(|e| {
        CliError::Usage(format!(
            "listing ETCDSnapshotFiles: {}",
            common::kube_reason(&e)
        ))
    })?;
    let mut copies: Vec<StoredCopy> = list
        .items
        .iter()
        .filter_map(crate::storage::catalog::StoredCopy::from_record)
        .collect();
    sort_copies(&mut copies);
    Ok(copies)
}

/// Print the copies.
pub async fn run(args: LsArgs) -> Result<(), CliError> {
    let copies = if args.cluster {
        from_cluster().await?
    } else {
        let node = common::node_name(args.flags.node_name.as_deref())?;
        let s3 = common::s3_store(&args.flags.s3).await?;
        collect(&common::local_dir(&args.flags), &node, s3.as_ref()).await?
    };
    let out = match args.output {
        OutputFormat::Table => table(&copies),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&list_document(&copies))
                .map_err(|e| CliError::Usage(format!("encoding JSON: {e}")))?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_yaml::to_string(&list_document(&copies))?,
    };
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

/// `Name Location Size Created`, columns padded as Go's tabwriter does.
pub fn table(copies: &[StoredCopy]) -> String {
    let mut rows = vec![[
        "Name".to_string(),
        "Location".to_string(),
        "Size".to_string(),
        "Created".to_string(),
    ]];
    for c in copies {
        rows.push([
            c.name.clone(),
            c.location.clone(),
            c.size.to_string(),
            c.created_rfc3339(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i == 3 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$} ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// An `ETCDSnapshotFileList` of the copies.
pub fn list_document(copies: &[StoredCopy]) -> serde_json::Value {
    let items: Vec<_> = copies.iter().map(StoredCopy::to_esf).collect();
    serde_json::json!({
        "apiVersion": format!("{}/{}", crate::consts::GROUP, crate::consts::VERSION),
        "kind": "ETCDSnapshotFileList",
        "metadata": {},
        "items": items,
    })
}
