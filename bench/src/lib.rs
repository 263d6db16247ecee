//! Shared helpers of the benchmarks (`make bench`): statistics over repeated runs, wall time and
//! peak RSS of a child process, sizes, Markdown tables and a description of the machine.
//!
//! The benchmark binaries live in `src/bin/`; each starts its own real servers through
//! `eso-testenv` and writes its results table to `target/bench/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Anything that stops a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A measured or helper command failed; carries the end of its output.
    #[error("{command} failed ({status}): {tail}")]
    Command {
        /// The command (program and first arguments).
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its stderr and stdout.
        tail: String,
    },
    /// The test environment did not start.
    #[error(transparent)]
    Testenv(#[from] eso_testenv::Error),
    /// Anything else, as one line.
    #[error("{0}")]
    Other(String),
}

/// Result type of the benchmarks.
pub type Result<T> = std::result::Result<T, Error>;

/// An `Io` error builder for `map_err`.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Median of `values` (mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Smallest of `values` (0 when empty).
pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

/// Largest of `values` (0 when empty).
pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::max).unwrap_or(0.0)
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Wall time and peak resident set size of one child process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak RSS in KiB (`ru_maxrss` as reported by `/usr/bin/time`).
    pub peak_rss_kib: u64,
}

impl Measured {
    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// The program that reports a child's peak RSS.
pub const TIME: &str = "/usr/bin/time";

/// Run `cmd` to completion under `/usr/bin/time` and return its wall time, peak RSS and output.
/// Fails when the command exits unsuccessfully. `scratch` is a directory for the RSS report.
pub fn run_measured(cmd: &Command, scratch: &Path) -> Result<(Measured, Output)> {
    let report = scratch.join(format!(".rss-{}", std::process::id()));
    let mut timed = Command::new(TIME);
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let output = timed
        .output()
        .map_err(io_err(format!("starting {TIME} {}", show(cmd))))?;
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    if !output.status.success() {
        return Err(command_failed(cmd, &output));
    }
    let peak_rss_kib = parse_rss(&text).ok_or_else(|| {
        Error::Other(format!(
            "{TIME} printed no peak RSS for {}: {text:?}",
            show(cmd)
        ))
    })?;
    Ok((Measured { wall, peak_rss_kib }, output))
}

/// Run a helper command (not measured) and return its stdout; fails on a non-zero exit.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("starting {}", show(cmd))))?;
    if !output.status.success() {
        return Err(command_failed(cmd, &output));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn command_failed(cmd: &Command, output: &Output) -> Error {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = tail.len().saturating_sub(5);
    Error::Command {
        command: show(cmd),
        status: output.status.to_string(),
        tail: tail[start..].join(" | "),
    }
}

/// The last number `/usr/bin/time -f %M` wrote (it may prefix "Command exited…" lines).
fn parse_rss(text: &str) -> Option<u64> {
    text.lines().rev().find_map(|l| l.trim().parse().ok())
}

/// A command as `program arg1 arg2` (the first three arguments, for messages).
fn show(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let args: Vec<String> = cmd
        .get_args()
        .take(3)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{program} {}", args.join(" ")).trim().to_string()
}

/// Parse a size such as `256MiB`, `1GiB`, `64 KiB`, `1000000` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A size for people: `256.0 MiB`, `1.00 GiB`, `812 KiB`.
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", b / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / f64::from(1u32 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// A Markdown table with a header row.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// One line of the machine description: `name: value`.
fn line(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "- {name}: {value}");
}

/// A Markdown list describing this machine: CPUs, memory, kernel, and the disk and file system
/// under each of `dirs` (name, path).
pub fn machine_description(dirs: &[(&str, &Path)]) -> String {
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    line(&mut out, "CPUs (nproc)", &format!("{cpus} × {model}"));
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or_else(|| "unknown".into(), |kib| human_size(kib * 1024));
    line(&mut out, "RAM", &mem);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
    line(&mut out, "kernel", &kernel);
    for (name, dir) in dirs {
        line(&mut out, name, &disk_of(dir));
    }
    out
}

/// `device (fstype, size)` of the file system holding `dir`, from `df`.
pub fn disk_of(dir: &Path) -> String {
    let text = run_quiet(
        Command::new("df")
            .arg("--output=source,fstype,size")
            .arg("-h")
            .arg(dir),
    )
    .unwrap_or_default();
    let fields: Vec<&str> = text
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    match fields.as_slice() {
        [source, fstype, size] => format!("{source} ({fstype}, {size}) at {}", dir.display()),
        _ => format!("unknown file system at {}", dir.display()),
    }
}

/// Whether `dir` is on a RAM-backed file system (tmpfs/ramfs), where "to disk" would flatter.
pub fn is_ram_fs(dir: &Path) -> bool {
    let d = disk_of(dir);
    d.contains("(tmpfs,") || d.contains("(ramfs,")
}

/// The first line a `program --version`-like command prints, or `unknown`.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    run_quiet(Command::new(program).args(args))
        .ok()
        .and_then(|t| t.lines().find(|l| !l.trim().is_empty()).map(str::to_string))
        .map_or_else(|| "unknown".into(), |l| l.trim().to_string())
}

/// `target/bench` under the current directory (the repository root under `make`).
pub fn bench_dir() -> PathBuf {
    PathBuf::from("target").join("bench")
}

/// A small, fast, seeded PRNG (SplitMix64): the same seed gives the same data on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One element of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(min(&[3.0, 1.0, 2.0]), 1.0);
        assert_eq!(max(&[3.0, 1.0, 2.0]), 3.0);
    }

    #[test]
    fn ratio_of_zero_is_nan() {
        assert!(ratio(1.0, 0.0).is_nan());
        assert_eq!(ratio(1.0, 4.0), 0.25);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("64 KiB"), Some(64 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1TB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(human_size(1 << 30), "1.00 GiB");
    }

    #[test]
    fn rss_is_the_last_number_time_printed() {
        assert_eq!(parse_rss("51234\n"), Some(51234));
        assert_eq!(
            parse_rss("Command exited with non-zero status 1\n812\n"),
            Some(812)
        );
        assert_eq!(parse_rss(""), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.range(10, 20);
            assert!((10..=20).contains(&x));
        }
    }

    #[test]
    fn tables_have_a_separator_row() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }

    #[test]
    fn measured_commands_report_rss_and_fail_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (m, out) = run_measured(Command::new("true").arg("x"), dir.path()).expect("true runs");
        assert!(m.peak_rss_kib > 0);
        assert!(out.status.success());
        let err = run_measured(&Command::new("false"), dir.path()).expect_err("false fails");
        assert!(err.to_string().contains("false"), "{err}");
    }
}
