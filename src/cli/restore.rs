//! `restore`: restore a snapshot into an etcd data dir as a single-member cluster (the
//! reference's `--cluster-reset --cluster-reset-restore-path`), reset the membership of the
//! existing data dir (`--cluster-reset` alone), or only fetch, decompress and verify a snapshot
//! into a file for k3s/rke2's own restore (`--output`).

use super::args::{EncryptionArgs, RestoreArgs, S3Args};
use crate::restore::{
    self, Checks, DataVersion, PrepareOptions, RestoreError, Restored, ScratchDir, Source, Spec,
    Target, Toolbox, Tools, blocking,
};
use crate::snapshot::crypt::EncryptionKey;
use crate::storage::config::S3Config;
use crate::storage::local::LocalDir;
use crate::storage::s3::S3Store;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Path of `etcdutl` to use instead of the one on `PATH`.
pub const ENV_ETCDUTL: &str = "ETCD_SNAPSHOT_ETCDUTL";
/// Path of `etcdctl` (etcd 3.4) to use when there is no `etcdutl`.
pub const ENV_ETCDCTL: &str = "ETCD_SNAPSHOT_ETCDCTL";

/// The reference's closing message, word for word.
const RESET_DONE: &str =
    "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now.";

/// Run `restore`.
pub async fn run(args: RestoreArgs) -> Result<(), RestoreError> {
    if let Some(output) = &args.output {
        return write_output(&args, output).await;
    }
    if !args.cluster_reset {
        return Err(usage(
            "restore resets etcd cluster membership to this one member: pass --cluster-reset, with \
             --cluster-reset-restore-path=<snapshot> to restore a snapshot or alone to reset the \
             existing data dir (or pass --output FILE to only fetch and verify a snapshot)",
        ));
    }
    let Some(data_dir) = args.data_dir.as_deref() else {
        return Err(usage(
            "--data-dir is required (the etcd data dir to restore into)",
        ));
    };
    check_member(&args.name, &args.peer_url)?;
    let data_dir = absolute(data_dir);
    let bump = bump_of(&args);
    // A bad name is refused first.
    let spec = args.snapshot.as_deref().map(Spec::parse).transpose()?;
    let toolbox = find_tools()?;
    // No tool can bump (or none is usable): said before anything is fetched or touched.
    toolbox.select(None, bump.is_some())?;
    let (restored, tools) = match &spec {
        Some(spec) => restore_snapshot(&args, spec, &toolbox, &data_dir, bump).await?,
        None => reset_data_dir(&args, &toolbox, &data_dir, bump).await?,
    };
    let mut out = std::io::stdout().lock();
    let what = if args.snapshot.is_some() {
        "Restored the snapshot into"
    } else {
        "Reset the membership of the data in"
    };
    let lines = [
        format!(
            "{what} {} as the single member {} ({}) with {}",
            restored.data_dir.display(),
            args.name,
            args.peer_url,
            tools.describe(),
        ),
        bump_line(bump),
        old_dir_line(&restored),
        RESET_DONE.to_string(),
        next_steps(&args, &restored),
    ];
    for line in lines {
        writeln!(out, "{line}").map_err(stdout_err)?;
    }
    Ok(())
}

/// The revision bump asked for: `--bump-revision N` (default), or none with `--no-bump-revision`.
fn bump_of(args: &RestoreArgs) -> Option<u64> {
    (!args.no_bump_revision).then_some(args.bump_revision)
}

/// Fetch and check the snapshot into a scratch dir beside the data dir, pick the tool that may
/// restore its etcd version, then restore it.
async fn restore_snapshot(
    args: &RestoreArgs,
    spec: &Spec,
    toolbox: &Toolbox,
    data_dir: &Path,
    bump: Option<u64>,
) -> Result<(Restored, Tools), RestoreError> {
    let dir = LocalDir::new(&args.dir.path());
    let store = connect_for(spec, &args.s3).await?;
    let source = Source::of(spec, &dir, store.as_ref());
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let scratch = ScratchDir::create(parent, "fetch")?;
    let options = prepare_options(&args.encryption)?;
    let prepared =
        restore::prepare_with(&source, &options, Target::WorkDir(scratch.path())).await?;
    print_checks(&mut std::io::stdout().lock(), prepared.checks())?;
    let (snapshot, recorded) = (
        prepared.path().to_path_buf(),
        prepared.checks().recorded_etcd_version.clone(),
    );
    let data = blocking(move || restore::data_version_of(&snapshot, recorded.as_ref())).await?;
    let tools = toolbox.select(Some(&data), bump.is_some())?.clone();
    print_version(&data)?;
    let (t, d) = (tools.clone(), data_dir.to_path_buf());
    let (n, p) = (args.name.clone(), args.peer_url.clone());
    let restored = blocking(move || {
        let restored = restore::restore_prepared_into(&t, &prepared, &d, &n, &p, bump);
        drop(prepared);
        restored
    })
    .await?;
    drop(scratch);
    Ok((restored, tools))
}

/// `--cluster-reset` alone: reset the membership of the data dir's own data, with the tool
/// that may restore its etcd version.
async fn reset_data_dir(
    args: &RestoreArgs,
    toolbox: &Toolbox,
    data_dir: &Path,
    bump: Option<u64>,
) -> Result<(Restored, Tools), RestoreError> {
    let db = restore::existing_db(data_dir)?;
    let data = blocking(move || restore::data_version_of(&db, None)).await?;
    let tools = toolbox.select(Some(&data), bump.is_some())?.clone();
    print_version(&data)?;
    let (t, d) = (tools.clone(), data_dir.to_path_buf());
    let (n, p) = (args.name.clone(), args.peer_url.clone());
    let restored = blocking(move || restore::cluster_reset(&t, &d, &n, &p, bump)).await?;
    Ok((restored, tools))
}

/// `--output FILE`: fetch, check and decompress into FILE only. The checks go to stderr and the
/// path alone to stdout, so scripts can capture it.
async fn write_output(args: &RestoreArgs, output: &Path) -> Result<(), RestoreError> {
    if args.data_dir.is_some() {
        return Err(usage(
            "--output only writes the verified snapshot to a file; drop --data-dir, or drop \
             --output to restore",
        ));
    }
    let Some(spec) = &args.snapshot else {
        return Err(usage(
            "--output needs the snapshot to fetch: --cluster-reset-restore-path=<snapshot>",
        ));
    };
    // A bad name is refused before anything is contacted.
    let spec = Spec::parse(spec)?;
    let output = absolute(output);
    let dir = LocalDir::new(&args.dir.path());
    let store = connect_for(&spec, &args.s3).await?;
    let source = Source::of(&spec, &dir, store.as_ref());
    let options = prepare_options(&args.encryption)?;
    let prepared = restore::prepare_with(&source, &options, Target::File(&output)).await?;
    print_checks(&mut std::io::stderr().lock(), prepared.checks())?;
    writeln!(
        std::io::stderr().lock(),
        "Wrote the verified plain snapshot; restore it with k3s/rke2: --cluster-reset \
         --cluster-reset-restore-path={}",
        output.display()
    )
    .map_err(stdout_err)?;
    writeln!(std::io::stdout().lock(), "{}", prepared.path().display()).map_err(stdout_err)
}

/// The options of the fetch: the decryption key from `--encryption-key-file`, if given.
pub(super) fn prepare_options(args: &EncryptionArgs) -> Result<PrepareOptions, RestoreError> {
    let encryption_key = args
        .key_file
        .as_deref()
        .map(EncryptionKey::from_file)
        .transpose()
        .map_err(|e| RestoreError::Usage(e.to_string()))?;
    Ok(PrepareOptions {
        encryption_key,
        ..Default::default()
    })
}

/// The S3 store when `--s3` is given.
pub(super) async fn connect(args: &S3Args) -> Result<Option<S3Store>, RestoreError> {
    if !args.enabled {
        return Ok(None);
    }
    let cfg = S3Config::from_args(args)?;
    Ok(Some(S3Store::connect(&cfg).await?))
}

/// The S3 store a snapshot argument is fetched from: only a name is looked up in S3 (when S3
/// is enabled), a path never.
pub(super) async fn connect_for(
    spec: &Spec,
    args: &S3Args,
) -> Result<Option<S3Store>, RestoreError> {
    match spec {
        Spec::Name(_) => connect(args).await,
        Spec::Path(_) => Ok(None),
    }
}

/// etcdutl and etcdctl, from `ETCD_SNAPSHOT_ETCDUTL` / `ETCD_SNAPSHOT_ETCDCTL` (they win) or
/// `PATH`, each asked its version and flags.
pub fn find_tools() -> Result<Toolbox, RestoreError> {
    let from_env = |var| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    Toolbox::find(from_env(ENV_ETCDUTL), from_env(ENV_ETCDCTL))
}

/// Print what was checked, one line per check.
pub(super) fn print_checks(out: &mut impl Write, checks: &Checks) -> Result<(), RestoreError> {
    let mut lines = vec![format!("snapshot        {}", checks.source)];
    lines.push(format!(
        "compression     {} ({} bytes stored, {} bytes plain)",
        checks.compression.as_str(),
        checks.stored_size,
        checks.snapshot_size
    ));
    if let Some(id) = &checks.encryption_key_id {
        lines.push(format!(
            "encryption      OK: {} with key id {id}, every segment authenticated",
            crate::snapshot::crypt::ALGORITHM_NAME
        ));
    }
    if checks.recorded.is_empty() {
        lines.push(format!(
            "stored sha256   {}  (no recorded checksum to compare against)",
            checks.stored_sha256
        ));
    }
    for r in &checks.recorded {
        lines.push(format!(
            "stored sha256   {}  OK: matches {}",
            checks.stored_sha256, r.from
        ));
    }
    lines.push("etcd hash       OK: the trailing sha256 matches the database".into());
    if let Some(meta) = checks.metadata.as_ref().filter(|m| !m.is_empty()) {
        let pairs: Vec<String> = meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(format!("metadata        {}", pairs.join(", ")));
    }
    for line in lines {
        writeln!(out, "{line}").map_err(stdout_err)?;
    }
    Ok(())
}

/// The data's etcd version, printed once the tool for it is chosen.
fn print_version(data: &DataVersion) -> Result<(), RestoreError> {
    writeln!(std::io::stdout().lock(), "etcd version    {data}").map_err(stdout_err)
}

fn bump_line(bump: Option<u64>) -> String {
    match bump {
        Some(n) => format!(
            "revision        bumped by {n} and marked compacted: every watcher of the API server \
             relists (watches from before the restore get \"compacted\")"
        ),
        None => "revision        NOT bumped (--no-bump-revision): the revision went back to the \
                 snapshot's; restart kube-apiserver, kubelets and every controller before use"
            .into(),
    }
}

fn old_dir_line(restored: &Restored) -> String {
    match &restored.old_data_dir {
        Some(old) => format!(
            "The previous data dir was moved to {} (nothing was deleted).",
            old.display()
        ),
        None => "There was no previous data dir.".into(),
    }
}

/// What to do on this node and on the other members, after the reference's message.
fn next_steps(args: &RestoreArgs, restored: &Restored) -> String {
    let d = restored.data_dir.display();
    [
        "Backup and delete the data dir on each peer etcd member and rejoin the members:"
            .to_string(),
        format!(
            "  1. On this node, start etcd on --data-dir={d} with --name={} and \
             --initial-advertise-peer-urls={} (without --force-new-cluster or --cluster-reset); \
             it is now a one-member cluster with the restored data.",
            args.name, args.peer_url
        ),
        "  2. On each other member: stop etcd, back up its data dir and delete it (e.g. mv \
         /var/lib/etcd /var/lib/etcd-old-$(date +%s); on k3s/rke2 ${datadir}/server/db)."
            .to_string(),
        "  3. Add the members back one at a time: on this node `etcdctl member add <name> \
         --peer-urls=<its peer URL>` (etcd answers \"unhealthy cluster\" until the members have \
         been connected for 5 s: retry), then start that member with an empty data dir, \
         --initial-cluster-state=existing and the --initial-cluster that member add printed \
         (k3s/rke2 servers rejoin by themselves when started)."
            .to_string(),
        "  4. Restart kube-apiserver, kube-controller-manager, kube-scheduler and the kubelets \
         (and anything else that caches the API) before relying on the cluster."
            .to_string(),
    ]
    .join("\n")
}

fn check_member(name: &str, peer_url: &str) -> Result<(), RestoreError> {
    if name.is_empty() || name.contains(['=', ',']) || name.chars().any(char::is_whitespace) {
        return Err(usage(&format!(
            "--name {name:?} is not a usable etcd member name (no '=', ',' or spaces)"
        )));
    }
    let url_ok = ["http://", "https://"].iter().any(|s| {
        peer_url
            .strip_prefix(s)
            .is_some_and(|rest| !rest.is_empty())
    }) && !peer_url.contains([',', ' ']);
    if !url_ok {
        return Err(usage(&format!(
            "--initial-advertise-peer-urls {peer_url:?} must be one http:// or https:// URL"
        )));
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path))
}

fn usage(msg: &str) -> RestoreError {
    RestoreError::Usage(msg.to_string())
}

pub(super) fn stdout_err(source: std::io::Error) -> RestoreError {
    RestoreError::Io {
        op: "writing",
        path: "standard output".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_name_and_peer_url_are_checked() {
        assert!(check_member("default", "http://localhost:2380").is_ok());
        assert!(check_member("a=b", "http://localhost:2380").is_err());
        assert!(check_member("m", "localhost:2380").is_err());
        assert!(check_member("m", "http://a:1,http://b:2").is_err());
    }

    #[test]
    fn checks_are_printed_one_per_line() {
        let checks = Checks {
            source: "/s/x.zst".into(),
            compression: crate::api::Compression::Zstd,
            stored_size: 10,
            stored_sha256: "ab".repeat(32),
            recorded: vec![restore::Recorded {
                sha256: "ab".repeat(32),
                from: ".checksums/x.zst".into(),
            }],
            snapshot_size: 20,
            encryption_key_id: Some("0123456789abcdef".into()),
            metadata: None,
            recorded_etcd_version: None,
        };
        let mut out = Vec::new();
        print_checks(&mut out, &checks).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("OK: matches .checksums/x.zst"), "{text}");
        assert!(text.contains("etcd hash       OK"), "{text}");
        assert!(text.contains("key id 0123456789abcdef"), "{text}");
    }
}
