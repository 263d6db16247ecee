//! `etcd-snapshot delete NAME...`: delete both the local and the S3 copy of each snapshot.

use super::args::DeleteArgs;
use super::{CliError, common};
use crate::naming::SnapshotName;

/// Delete each named snapshot; "Snapshot N deleted." or "Snapshot N not found." per name, and a
/// failure exit when any was not found.
pub async fn run(args: DeleteArgs) -> Result<(), CliError> {
    // Every name is checked before anything is deleted.
    let names = args
        .names
        .iter()
        .map(|name| SnapshotName::new(name.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let dir = common::local_dir(&args.flags);
    let s3 = common::s3_store(&args.flags.s3).await?;
    let mut missing = Vec::new();
    for name in &names {
        let mut found = dir.delete(name)?;
        if let Some(store) = &s3 {
            found |= store.delete(name).await?;
        }
        if found {
            println!("Snapshot {name} deleted.");
        } else {
            println!("Snapshot {name} not found.");
            missing.push(name.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "not found: {}",
            missing.join(", ")
        )))
    }
}
