//! `verify`: download a snapshot, check every checksum, test-restore it into a temporary data
//! dir and print what etcd reports about it. Any failed check is an error (non-zero exit).

use super::args::VerifyArgs;
use super::restore::{connect_for, find_tools, prepare_options, print_checks, stdout_err};
use crate::restore::{self, RestoreError, Source, Spec};
use crate::storage::local::LocalDir;
use std::io::Write;

/// Run `verify`. Scratch files go to the temporary directory (`TMPDIR`) and are removed again.
pub async fn run(args: VerifyArgs) -> Result<(), RestoreError> {
    let tools = find_tools()?;
    let dir = LocalDir::new(&args.flags.snapshot_dir());
    // A bad name is refused before anything is contacted.
    let spec = Spec::parse(&args.snapshot)?;
    let store = connect_for(&spec, &args.flags.s3).await?;
    let source = Source::of(&spec, &dir, store.as_ref());
    let options = prepare_options(&args.flags.encryption)?;
    let report = restore::verify_with(&tools, &source, &options, &std::env::temp_dir()).await?;
    let mut out = std::io::stdout().lock();
    print_checks(&mut out, &report.checks)?;
    let s = report.status;
    let lines = [
        format!("etcd version    {}", report.data_version),
        format!(
            "test restore    OK: {} snapshot restore into a temporary data dir",
            report.tool_description
        ),
        format!("revision        {}", s.revision),
        format!(
            "keys            {} (all of etcd's buckets, as `snapshot status` counts them)",
            s.total_key
        ),
        format!("size            {} bytes", s.total_size),
        format!("hash            {}", s.hash),
        "verified: every check passed".to_string(),
    ];
    for line in lines {
        writeln!(out, "{line}").map_err(stdout_err)?;
    }
    Ok(())
}
