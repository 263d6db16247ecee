//! The etcd tool that restores snapshots: `etcdutl` (etcd 3.5+), or `etcdctl` with
//! `ETCDCTL_API=3` for etcd 3.4 data (etcd 3.4 has no etcdutl; 3.5 deprecated and 3.6 removed
//! `etcdctl snapshot restore`, so etcdctl is used for nothing else). Each tool is asked what it
//! is before it is used: its release (`version`) and whether its `snapshot restore --help`
//! offers `--bump-revision` and `--mark-compacted`. Which tool may restore which data is decided
//! by pure rules over those facts ([`Toolbox::select`]).

use super::RestoreError;
use super::version::{BUMP_SINCE, DataVersion, Minor, Release};
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which etcd tool restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// `etcdutl` (etcd 3.5+).
    Etcdutl,
    /// `etcdctl` (etcd 3.4).
    Etcdctl,
}

impl ToolKind {
    /// The program name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Etcdutl => "etcdutl",
            ToolKind::Etcdctl => "etcdctl",
        }
    }
}

/// A restore tool, with what it said about itself.
#[derive(Debug, Clone)]
pub struct Tools {
    kind: ToolKind,
    path: PathBuf,
    /// Its release, or why it could not be told.
    release: Result<Release, String>,
    /// Whether its `snapshot restore` takes `--bump-revision` and `--mark-compacted`.
    can_bump: bool,
}

/// Every restore tool found, most preferred first; [`Toolbox::select`] picks the one that may
/// restore a given snapshot.
#[derive(Debug, Clone)]
pub struct Toolbox {
    tools: Vec<Tools>,
}

/// `snapshot status -w json` of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// etcd's hash of the database contents (crc32, as etcd prints it).
    pub hash: u32,
    /// The etcd revision the snapshot was taken at.
    pub revision: i64,
    /// Number of keys in the database, across all of etcd's buckets (as etcd counts them).
    pub total_key: u64,
    /// Size of the database in bytes.
    pub total_size: u64,
}

/// Environment variables of etcdctl that would clash with the flags passed here.
const ETCDCTL_CLASHING_ENV: [&str; 6] = [
    "ETCDCTL_DATA_DIR",
    "ETCDCTL_NAME",
    "ETCDCTL_INITIAL_CLUSTER",
    "ETCDCTL_INITIAL_ADVERTISE_PEER_URLS",
    "ETCDCTL_SKIP_HASH_CHECK",
    "ETCDCTL_WRITE_OUT",
];

/// How many of the tool's last output lines an error carries.
const TAIL_LINES: usize = 3;

impl Toolbox {
    /// Find the tools: the explicit paths given (`ETCD_SNAPSHOT_ETCDUTL`, `ETCD_SNAPSHOT_ETCDCTL`:
    /// they win), else `etcdutl` and `etcdctl` on `PATH`; each is asked its version and flags.
    /// Fails naming everything that was looked at when none is found.
    pub fn find(
        etcdutl: Option<PathBuf>,
        etcdctl: Option<PathBuf>,
    ) -> Result<Toolbox, RestoreError> {
        let mut searched = Vec::new();
        let mut found = Vec::new();
        for (kind, given) in [(ToolKind::Etcdutl, etcdutl), (ToolKind::Etcdctl, etcdctl)] {
            if let Some(path) = given {
                if is_executable(&path) {
                    found.push((kind, path));
                } else {
                    searched.push(format!(
                        "{} {} is not an executable file",
                        kind.as_str(),
                        path.display()
                    ));
                }
            }
        }
        if found.is_empty() {
            for kind in [ToolKind::Etcdutl, ToolKind::Etcdctl] {
                match on_path(kind.as_str()) {
                    Some(path) => found.push((kind, path)),
                    None => searched.push(format!("no {} on PATH", kind.as_str())),
                }
            }
        }
        if found.is_empty() {
            return Err(RestoreError::ToolMissing {
                searched: searched.join(", "),
            });
        }
        Ok(Toolbox {
            tools: found
                .into_iter()
                .map(|(kind, path)| Tools::probe(kind, path))
                .collect(),
        })
    }

    /// The tools, most preferred first.
    pub fn tools(&self) -> &[Tools] {
        &self.tools
    }

    /// The most preferred tool that may restore `data` (when known), with the revision bump
    /// when `bump`. Refusals, in this order: no tool can be used at all; none is recent enough
    /// for the data (or etcdctl for data newer than 3.4); none can bump.
    pub fn select(&self, data: Option<&DataVersion>, bump: bool) -> Result<&Tools, RestoreError> {
        select(&self.tools, data, bump)
    }
}

impl From<Tools> for Toolbox {
    fn from(tools: Tools) -> Toolbox {
        Toolbox { tools: vec![tools] }
    }
}

/// Why a tool may not do a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unfit {
    /// It cannot be used at all.
    Unusable(String),
    /// It may not restore this data (too old, or etcdctl for data newer than 3.4).
    Version(String),
    /// It cannot bump the revision.
    NoBump(String),
}

/// Why `tool` may not restore `data` (with the bump when `bump`), if it may not.
fn unfit(tool: &Tools, data: Option<&DataVersion>, bump: bool) -> Option<Unfit> {
    let name = tool.kind.as_str();
    let path = tool.path.display();
    let release = match &tool.release {
        Ok(r) => *r,
        Err(why) => {
            return Some(Unfit::Unusable(format!(
                "{name} {path}: cannot tell its version ({why})"
            )));
        }
    };
    if tool.kind == ToolKind::Etcdctl && release.minor() >= Minor::V3_6 {
        return Some(Unfit::Unusable(format!(
            "{name} {release} ({path}) has no `snapshot restore` (etcd 3.6 removed it; use etcdutl)"
        )));
    }
    if let Some(data) = data {
        if release.minor() < data.minor {
            return Some(Unfit::Version(format!(
                "{name} {release} ({path}) is older than etcd {}",
                data.minor
            )));
        }
        if tool.kind == ToolKind::Etcdctl && data.minor > Minor::V3_4 {
            return Some(Unfit::Version(format!(
                "{name} {release} ({path}) restores etcd 3.4 data only (`etcdctl snapshot \
                 restore` is deprecated in 3.5 and gone in 3.6; use etcdutl)"
            )));
        }
    }
    if bump && !tool.can_bump {
        return Some(Unfit::NoBump(format!(
            "{name} {release} ({path}) has no --bump-revision/--mark-compacted"
        )));
    }
    None
}

/// See [`Toolbox::select`].
fn select<'a>(
    tools: &'a [Tools],
    data: Option<&DataVersion>,
    bump: bool,
) -> Result<&'a Tools, RestoreError> {
    let verdicts: Vec<(&Tools, Option<Unfit>)> =
        tools.iter().map(|t| (t, unfit(t, data, bump))).collect();
    if let Some((tool, _)) = verdicts.iter().find(|(_, u)| u.is_none()) {
        return Ok(tool);
    }
    let reasons = |keep: fn(&Unfit) -> bool| {
        verdicts
            .iter()
            .filter_map(|(_, u)| u.as_ref())
            .filter(|u| keep(u))
            .map(|u| match u {
                Unfit::Unusable(s) | Unfit::Version(s) | Unfit::NoBump(s) => s.as_str(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let any = |keep: fn(&Unfit) -> bool| verdicts.iter().filter_map(|(_, u)| u.as_ref()).any(keep);
    if any(|u| matches!(u, Unfit::NoBump(_))) {
        return Err(RestoreError::BumpUnsupported {
            tools: reasons(|u| matches!(u, Unfit::NoBump(_))),
            since: BUMP_SINCE.to_string(),
        });
    }
    match data {
        Some(data) if any(|u| matches!(u, Unfit::Version(_))) => {
            Err(RestoreError::SnapshotTooNew {
                data: data.to_string(),
                minor: data.minor.to_string(),
                tools: reasons(|u| matches!(u, Unfit::Version(_))),
            })
        }
        _ => Err(RestoreError::ToolUnusable {
            tools: reasons(|_| true),
        }),
    }
}

impl Tools {
    /// Ask the tool at `path` what it is: `<tool> version`, and `<tool> snapshot restore
    /// --help` for the bump flags.
    pub fn probe(kind: ToolKind, path: PathBuf) -> Tools {
        let mut tools = Tools {
            kind,
            path,
            release: Err("not asked yet".into()),
            can_bump: false,
        };
        let mut cmd = tools.command();
        cmd.arg("version");
        tools.release = match cmd.output() {
            Ok(out) => parse_release(kind, &out),
            Err(e) => Err(format!("cannot run it: {e}")),
        };
        if tools.release.is_ok() {
            let mut cmd = tools.command();
            cmd.args(["snapshot", "restore", "--help"]);
            tools.can_bump = cmd.output().is_ok_and(|out| offers_bump(&out));
        }
        tools
    }

    /// The first tool [`Toolbox::find`] finds (kept for callers that want exactly one).
    pub fn find(etcdutl: Option<PathBuf>, etcdctl: Option<PathBuf>) -> Result<Tools, RestoreError> {
        let mut toolbox = Toolbox::find(etcdutl, etcdctl)?;
        Ok(toolbox.tools.swap_remove(0))
    }

    /// Its release, when it could be told.
    pub fn release(&self) -> Option<Release> {
        self.release.as_ref().ok().copied()
    }

    /// Whether it can bump the revision on restore.
    pub fn can_bump(&self) -> bool {
        self.can_bump
    }

    /// Refuse (before anything is touched) when this tool may not restore `data`, with the
    /// revision bump when `bump`.
    pub fn check(&self, data: &DataVersion, bump: bool) -> Result<(), RestoreError> {
        select(std::slice::from_ref(self), Some(data), bump).map(|_| ())
    }

    /// `etcdutl 3.5.30 (/usr/bin/etcdutl)`, for messages.
    pub fn describe(&self) -> String {
        match &self.release {
            Ok(r) => format!("{} {r} ({})", self.kind.as_str(), self.path.display()),
            Err(_) => format!("{} ({})", self.kind.as_str(), self.path.display()),
        }
    }

    /// Which tool this is.
    pub fn kind(&self) -> ToolKind {
        self.kind
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        if self.kind == ToolKind::Etcdctl {
            cmd.env("ETCDCTL_API", "3");
            for var in ETCDCTL_CLASHING_ENV {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    fn run(&self, what: &str, mut cmd: Command) -> Result<Output, RestoreError> {
        let tool = format!("{} {what}", self.kind.as_str());
        let output = cmd.output().map_err(|e| RestoreError::ToolFailed {
            tool: tool.clone(),
            status: "could not start".into(),
            output_tail: format!("{}: {e}", self.path.display()),
        })?;
        if output.status.success() {
            return Ok(output);
        }
        Err(RestoreError::ToolFailed {
            tool,
            status: output.status.to_string(),
            output_tail: output_tail(&output),
        })
    }

    /// `snapshot restore SNAPSHOT --data-dir D --name N --initial-cluster N=URL
    /// --initial-advertise-peer-urls URL` (plus `--skip-hash-check` for a database copied out
    /// of a data dir, which carries no trailing hash, and `--bump-revision B --mark-compacted`
    /// when `bump` is `Some(B)`). `data_dir` must not exist yet.
    pub fn restore(
        &self,
        snapshot: &Path,
        data_dir: &Path,
        member_name: &str,
        peer_url: &str,
        skip_hash_check: bool,
        bump: Option<u64>,
    ) -> Result<(), RestoreError> {
        let mut cmd = self.command();
        cmd.args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--name")
            .arg(member_name)
            .arg("--initial-cluster")
            .arg(format!("{member_name}={peer_url}"))
            .arg("--initial-advertise-peer-urls")
            .arg(peer_url);
        if skip_hash_check {
            cmd.arg("--skip-hash-check");
        }
        if let Some(by) = bump {
            if !self.can_bump {
                return Err(RestoreError::BumpUnsupported {
                    tools: format!(
                        "{} has no --bump-revision/--mark-compacted",
                        self.describe()
                    ),
                    since: BUMP_SINCE.to_string(),
                });
            }
            cmd.arg(format!("--bump-revision={by}"))
                .arg("--mark-compacted");
        }
        self.run("snapshot restore", cmd).map(|_| ())
    }

    /// `snapshot status -w json` of a plain snapshot (opened read-only by the tool).
    pub fn status(&self, snapshot: &Path) -> Result<SnapshotStatus, RestoreError> {
        let mut cmd = self.command();
        cmd.args(["snapshot", "status"])
            .arg(snapshot)
            .args(["-w", "json"]);
        let output = self.run("snapshot status", cmd)?;
        parse_status(&String::from_utf8_lossy(&output.stdout)).map_err(|reason| {
            RestoreError::ToolOutput {
                tool: format!("{} snapshot status", self.kind.as_str()),
                reason,
                output: shorten(&String::from_utf8_lossy(&output.stdout), 200),
            }
        })
    }
}

/// The release in `<tool> version` output (`etcdutl version: 3.5.30`, `etcdctl version: 3.4.23`).
fn parse_release(kind: ToolKind, output: &Output) -> Result<Release, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{} version:", kind.as_str());
    let found = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(Release::parse);
    match found {
        Some(release) => Ok(release),
        None if !output.status.success() => Err(format!(
            "`{} version` failed ({}): {}",
            kind.as_str(),
            output.status,
            output_tail(output)
        )),
        None => Err(format!(
            "`{} version` printed no \"{prefix} X.Y.Z\" line: {}",
            kind.as_str(),
            output_tail(output)
        )),
    }
}

/// Whether `snapshot restore --help` lists both bump flags.
fn offers_bump(output: &Output) -> bool {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.contains("--bump-revision") && text.contains("--mark-compacted")
}

/// The JSON object line of `snapshot status -w json` (log lines may come before it).
fn parse_status(stdout: &str) -> Result<SnapshotStatus, String> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{') && l.contains("\"revision\""))
        .ok_or_else(|| "no JSON status line".to_string())?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// The last few non-empty lines of the tool's output, on one line.
fn output_tail(output: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    if tail.is_empty() {
        return "no output".into();
    }
    tail.iter()
        .map(|l| shorten(l, 300))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_read_after_log_lines() {
        let out = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"hash\":1090134050,\"revision\":4,\"totalKey\":9,\"totalSize\":20480}\n";
        assert_eq!(
            parse_status(out),
            Ok(SnapshotStatus {
                hash: 1090134050,
                revision: 4,
                total_key: 9,
                total_size: 20480
            })
        );
        assert!(parse_status("Error: bad").is_err());
    }

    #[test]
    fn missing_tools_are_named() {
        let err = Tools::find(
            Some(PathBuf::from("/nonexistent/etcdutl")),
            Some(PathBuf::from("/nonexistent/etcdctl")),
        );
        // PATH may hold an etcdctl on a developer machine; when it does not, both are named.
        if let Err(e) = err {
            let msg = e.to_string();
            assert!(msg.contains("/nonexistent/etcdutl"), "{msg}");
            assert!(msg.contains("/nonexistent/etcdctl"), "{msg}");
        }
    }

    fn tool(kind: ToolKind, release: &str, can_bump: bool) -> Tools {
        Tools {
            kind,
            path: PathBuf::from(format!("/opt/{}-{release}", kind.as_str())),
            release: Release::parse(release).ok_or_else(|| "`version` failed".to_string()),
            can_bump,
        }
    }

    fn data(minor: Minor) -> DataVersion {
        DataVersion {
            minor,
            evidence: "test".into(),
        }
    }

    #[test]
    fn the_preferred_tool_that_fits_is_chosen() {
        let utl_new = tool(ToolKind::Etcdutl, "3.5.30", true);
        let utl_old = tool(ToolKind::Etcdutl, "3.5.1", false);
        let ctl_34 = tool(ToolKind::Etcdctl, "3.4.23", false);
        let tools = [utl_new.clone(), ctl_34.clone()];
        fn pick(tools: &[Tools], d: Option<&DataVersion>, bump: bool) -> Option<PathBuf> {
            select(tools, d, bump).ok().map(|t| t.path.clone())
        }
        assert_eq!(
            pick(&tools, Some(&data(Minor::V3_4)), true),
            Some(utl_new.path.clone())
        );
        // Without the bump, etcd 3.4 data still goes to the preferred etcdutl.
        let tools = [utl_old.clone(), ctl_34.clone()];
        assert_eq!(
            pick(&tools, Some(&data(Minor::V3_4)), false),
            Some(utl_old.path.clone())
        );
        // etcdctl 3.4 alone restores etcd 3.4 data without the bump.
        assert_eq!(
            pick(
                std::slice::from_ref(&ctl_34),
                Some(&data(Minor::V3_4)),
                false
            ),
            Some(ctl_34.path.clone())
        );
    }

    #[test]
    fn a_tool_older_than_the_data_is_refused() {
        let ctl_34 = tool(ToolKind::Etcdctl, "3.4.23", false);
        let err = select(
            std::slice::from_ref(&ctl_34),
            Some(&data(Minor::V3_5)),
            false,
        )
        .expect_err("3.5 data, etcdctl 3.4");
        assert_eq!(err.reason(), "SnapshotTooNew");
        let msg = err.to_string();
        assert!(
            msg.contains("etcdctl 3.4.23 (/opt/etcdctl-3.4.23) is older than etcd 3.5"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        let utl = tool(ToolKind::Etcdutl, "3.5.30", true);
        let err = utl
            .check(&data(Minor::V3_6), true)
            .expect_err("3.6 data, etcdutl 3.5");
        assert_eq!(err.reason(), "SnapshotTooNew");
        assert!(
            err.to_string().contains("use etcdutl 3.6 or newer"),
            "{err}"
        );
        // A newer etcdctl is not used for etcd 3.5 data (its restore is deprecated, then gone).
        let ctl_35 = tool(ToolKind::Etcdctl, "3.5.30", true);
        let err = ctl_35
            .check(&data(Minor::V3_5), false)
            .expect_err("etcdctl for 3.5 data");
        assert!(
            err.to_string().contains("restores etcd 3.4 data only"),
            "{err}"
        );
        let ctl_36 = tool(ToolKind::Etcdctl, "3.6.0", true);
        let err = ctl_36
            .check(&data(Minor::V3_4), false)
            .expect_err("etcdctl 3.6");
        assert_eq!(err.reason(), "ToolUnusable");
    }

    #[test]
    fn a_bump_needs_a_tool_that_can() {
        let utl_old = tool(ToolKind::Etcdutl, "3.5.1", false);
        let ctl_34 = tool(ToolKind::Etcdctl, "3.4.23", false);
        let tools = [utl_old, ctl_34];
        // Known before the snapshot is even fetched.
        let err = select(&tools, None, true).expect_err("nobody can bump");
        assert_eq!(err.reason(), "BumpUnsupported");
        let msg = err.to_string();
        assert!(
            msg.contains("etcdutl 3.5.1 (/opt/etcdutl-3.5.1) has no --bump-revision"),
            "{msg}"
        );
        assert!(msg.contains("etcdctl 3.4.23"), "{msg}");
        assert!(msg.contains("--no-bump-revision"), "{msg}");
        assert!(select(&tools, None, false).is_ok());
        // A tool whose version cannot be told is never used.
        let unknown = tool(ToolKind::Etcdutl, "garbage", true);
        let err = unknown
            .check(&data(Minor::V3_4), false)
            .expect_err("unknown");
        assert_eq!(err.reason(), "ToolUnusable");
        assert!(err.to_string().contains("cannot tell its version"), "{err}");
    }

    fn output(code: i32, stdout: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn releases_and_flags_are_read_from_the_tools_output() {
        let out = output(0, "etcdutl version: 3.5.30\nAPI version: 3.5\n");
        assert_eq!(
            parse_release(ToolKind::Etcdutl, &out),
            Ok(Release::parse("3.5.30").expect("release"))
        );
        let out = output(0, "etcdctl version: 3.4.23\nAPI version: 3.4\n");
        assert!(parse_release(ToolKind::Etcdctl, &out).is_ok());
        assert!(parse_release(ToolKind::Etcdutl, &out).is_err());
        let err =
            parse_release(ToolKind::Etcdutl, &output(2, "no such command")).expect_err("fail");
        assert!(
            err.contains("failed") && err.contains("no such command"),
            "{err}"
        );
        assert!(offers_bump(&output(
            0,
            "      --bump-revision uint   How much\n      --mark-compacted   Mark\n"
        )));
        assert!(!offers_bump(&output(
            0,
            "      --skip-hash-check   Ignore\n"
        )));
    }

    #[test]
    fn an_explicit_path_wins_over_path() {
        let tools = Tools::find(None, Some(PathBuf::from("/bin/sh"))).expect("sh exists");
        assert_eq!(tools.kind(), ToolKind::Etcdctl);
        assert_eq!(tools.path(), Path::new("/bin/sh"));
    }
}
