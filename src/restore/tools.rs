//! The etcd tool that restores snapshots: `etcdutl` (etcd 3.5+), or `etcdctl` with
//! `ETCDCTL_API=3` (etcd 3.4, which has no etcdutl). Both take the same restore flags.

use super::RestoreError;
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

/// The tool found, with its path.
#[derive(Debug, Clone)]
pub struct Tools {
    kind: ToolKind,
    path: PathBuf,
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

impl Tools {
    /// Find the tool: an explicit `etcdutl` path, else an explicit `etcdctl` path, else `etcdutl`
    /// on `PATH`, else `etcdctl` on `PATH`. Fails naming everything that was looked at.
    pub fn find(etcdutl: Option<PathBuf>, etcdctl: Option<PathBuf>) -> Result<Tools, RestoreError> {
        let mut searched = Vec::new();
        for (kind, given) in [(ToolKind::Etcdutl, etcdutl), (ToolKind::Etcdctl, etcdctl)] {
            if let Some(path) = given {
                if is_executable(&path) {
                    return Ok(Tools { kind, path });
                }
                searched.push(format!(
                    "{} {} is not an executable file",
                    kind.as_str(),
                    path.display()
                ));
            }
        }
        for kind in [ToolKind::Etcdutl, ToolKind::Etcdctl] {
            match on_path(kind.as_str()) {
                Some(path) => return Ok(Tools { kind, path }),
                None => searched.push(format!("no {} on PATH", kind.as_str())),
            }
        }
        Err(RestoreError::ToolMissing {
            searched: searched.join(", "),
        })
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
    /// of a data dir, which carries no trailing hash). `data_dir` must not exist yet.
    pub fn restore(
        &self,
        snapshot: &Path,
        data_dir: &Path,
        member_name: &str,
        peer_url: &str,
        skip_hash_check: bool,
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

    #[test]
    fn an_explicit_path_wins_over_path() {
        let tools = Tools::find(None, Some(PathBuf::from("/bin/sh"))).expect("sh exists");
        assert_eq!(tools.kind(), ToolKind::Etcdctl);
        assert_eq!(tools.path(), Path::new("/bin/sh"));
    }
}
