//! `etcd-snapshot prune`: delete snapshots beyond the retention policy, locally and in S3.

use super::args::{PruneArgs, ScopeArg};
use super::{CliError, common, ls};
use crate::api::Storage;
use crate::prune::{Scope, plan};
use crate::retention::{Policy, parse_duration};

/// Apply the policy to the snapshots named `<--name>-…`; `--dry-run` prints every decision.
pub async fn run(args: PruneArgs) -> Result<(), CliError> {
    let flags = &args.flags;
    if flags.retention == 0 {
        return Err(CliError::Usage(
            "--snapshot-retention 0 would keep nothing: give the number of snapshots to keep (1 or more)"
                .into(),
        ));
    }
    let policy = Policy {
        count: Some(flags.retention),
        max_age: args
            .max_age
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| CliError::Usage(format!("--max-age: {e}")))?,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    // S3 keeps `--s3-retention` snapshots when given, else as many as locally.
    let s3_policy = Policy {
        count: Some(flags.s3.retention.unwrap_or(flags.retention)),
        ..policy.clone()
    };
    let node = common::node_name(flags.node_name.as_deref())?;
    let dir = common::local_dir(flags);
    let s3 = common::s3_store(&flags.s3).await?;
    // S3 pruning is scoped to this etcd cluster: ask etcd who we are.
    let cluster_id = match &s3 {
        Some(_) => {
            let mut conn = common::etcd_config(&flags.etcd).connect().await?;
            Some(conn.member_info().await?.cluster_id)
        }
        None => None,
    };
    let copies = ls::collect(&dir, &node, s3.as_ref()).await?;
    let scope = match args.retention_scope {
        ScopeArg::Node => Scope::Node,
        ScopeArg::Cluster => Scope::Cluster,
    };
    let plan = plan(
        &copies,
        &flags.name,
        &policy,
        &s3_policy,
        scope,
        cluster_id.as_deref(),
        chrono::Utc::now(),
    );
    if args.dry_run {
        for (copy, decision) in &plan.decisions {
            let verb = if decision.keep { "keep  " } else { "delete" };
            println!(
                "{verb} {} ({}): {}",
                copy.name,
                copy.storage.as_str(),
                decision.reason
            );
        }
        for copy in &plan.other_cluster {
            println!(
                "skip   {} (s3): recorded for another or an unknown etcd cluster",
                copy.name
            );
        }
        return Ok(());
    }
    for (copy, decision) in plan.deletions() {
        let found = match copy.storage {
            Storage::Local => dir.delete(&copy.name)?,
            Storage::S3 => match &s3 {
                Some(store) => store.delete(&copy.name).await?,
                None => false,
            },
        };
        if found {
            println!(
                "Snapshot {} pruned from {}: {}.",
                copy.name,
                copy.storage.as_str(),
                decision.reason
            );
        }
    }
    Ok(())
}
