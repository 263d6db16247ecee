//! `etcd-snapshot delete NAME...`: delete both the local and the S3 copy of each snapshot.

use super::args::DeleteArgs;
use super::{CliError, common};
use crate::naming::validate_snapshot_name;

/// Delete each named snapshot; "Snapshot N deleted." or "Snapshot N not found." per name, and a
/// failure exit when any was not found.
pub async fn run(args: DeleteArgs) -> Result<(), CliError> {
    for name in &args.names {
        validate_snapshot_name(name).map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let dir = common::local_dir(&args.flags);
    let s3 = common::s3_store(&args.flags.s3).await?;
    let mut missing = Vec::new();
    for name in &args.names {
        let mut found = dir.delete(name)?;
        if let Some(store) = &s3 {
            found |= store.delete(name).await?;
        }
        if found {
            println!("Snapshot {name} deleted.");
        } else {
            println!("Snapshot {name} not found.");
            missing.push(name.clone());
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
