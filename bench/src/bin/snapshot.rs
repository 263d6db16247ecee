//! `eso-bench-snapshot`: the snapshot pipeline benchmark (`make bench-snapshot`).
//!
//! Starts its own etcd 3.5 (data on disk, under `target/bench/work`) and SeaweedFS, fills etcd
//! with Kubernetes-like objects to `--size`, then runs, alternating, `--runs` rounds of:
//!
//! 1. baseline: `etcdctl snapshot save` of the raw snapshot to disk;
//! 2. the reference pipeline (k3s): `etcdctl snapshot save`, then `zip` (deflate, default
//!    level), then a multipart upload of the zip — one after the other;
//! 3. ours: `etcd-snapshot save --snapshot-compress --s3 …` (local copy and S3 from one stream);
//! 4. ours, S3 only (`--s3-only`);
//! 5. restore: `etcdutl snapshot restore` of the raw file (5a) vs `etcd-snapshot restore` of the
//!    compressed S3 snapshot of (3) (5b: download, decompress, verify, restore).
//!
//! Each step is a child process under `/usr/bin/time` (wall time, peak RSS). Results: a
//! Markdown report printed and written to `target/bench/snapshot-<size>.md`.

#[path = "snapshot/fill.rs"]
mod fill;
#[path = "snapshot/report.rs"]
mod report;
#[path = "snapshot/s3.rs"]
mod s3;

use eso_bench::{Error, Measured, Result, io_err, run_measured, run_quiet};
use eso_testenv::{EtcdVersion, Proc, S3Options, S3Server, free_port};
use report::{Case, Report, Sample};
use s3::S3Target;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: eso-bench-snapshot [--size 256MiB] [--runs 5] [--seed N] [--work-dir DIR] [--out FILE]\n\
                     (defaults from BENCH_SIZE and BENCH_RUNS)";
const BUCKET: &str = "bench";
const NODE: &str = "bench";

struct Args {
    size: u64,
    size_text: String,
    runs: usize,
    seed: u64,
    work_dir: PathBuf,
    out: Option<PathBuf>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let usage = |m: &str| Error::Other(format!("{m}\n{USAGE}"));
    let mut size_text = std::env::var("BENCH_SIZE").unwrap_or_else(|_| "256MiB".into());
    let mut runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "5".into());
    let mut seed = "20240601".to_string();
    let mut work_dir = eso_bench::bench_dir().join("work");
    let mut out = None;
    while let Some(flag) = argv.next() {
        let mut value = || {
            argv.next()
                .ok_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--size" => size_text = value()?,
            "--runs" => runs = value()?,
            "--seed" => seed = value()?,
            "--work-dir" => work_dir = PathBuf::from(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(usage("")),
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    }
    let size = eso_bench::parse_size(&size_text)
        .filter(|s| *s >= 1 << 20)
        .ok_or_else(|| usage(&format!("bad size {size_text:?} (e.g. 256MiB, 1GiB)")))?;
    let runs: usize = runs
        .trim()
        .parse()
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| usage(&format!("bad run count {runs:?}")))?;
    let seed = seed
        .parse()
        .map_err(|_| usage(&format!("bad seed {seed:?}")))?;
    Ok(Args {
        size,
        size_text: size_text.trim().to_string(),
        runs,
        seed,
        work_dir,
        out,
    })
}

fn main() {
    let mut argv = std::env::args().skip(1).peekable();
    let result = if argv.peek().map(String::as_str) == Some("upload-reference") {
        argv.next();
        upload_reference(argv)
    } else {
        parse_args(argv).and_then(run)
    };
    if let Err(e) = result {
        eprintln!("eso-bench-snapshot: {e}");
        std::process::exit(1);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the tokio runtime"))
}

/// `upload-reference FILE ENDPOINT BUCKET KEY`, credentials from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`.
fn upload_reference(argv: impl Iterator<Item = String>) -> Result<()> {
    let args: Vec<String> = argv.collect();
    let [file, endpoint, bucket, key] = args.as_slice() else {
        return Err(Error::Other(
            "usage: eso-bench-snapshot upload-reference FILE ENDPOINT BUCKET KEY".into(),
        ));
    };
    let env =
        |name: &str| std::env::var(name).map_err(|_| Error::Other(format!("{name} is not set")));
    let target = S3Target {
        endpoint: endpoint.clone(),
        access_key: env("AWS_ACCESS_KEY_ID")?,
        secret_key: env("AWS_SECRET_ACCESS_KEY")?,
        bucket: bucket.clone(),
    };
    runtime()?.block_on(s3::upload_file(&target, Path::new(file), key))?;
    Ok(())
}

/// The programs the benchmark runs.
struct Tools {
    etcd: PathBuf,
    etcdctl: PathBuf,
    etcdutl: PathBuf,
    weed: PathBuf,
    ours: PathBuf,
    me: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let me = std::env::current_exe().map_err(io_err("finding this program"))?;
        let ours = me.with_file_name("etcd-snapshot");
        if !ours.is_file() {
            return Err(Error::Other(format!(
                "{} not found: build it with `cargo build --release --bin etcd-snapshot` (make bench-snapshot does)",
                ours.display()
            )));
        }
        for (program, package) in [(eso_bench::TIME, "time"), ("zip", "zip")] {
            if run_quiet(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {program}")),
            )
            .is_err()
            {
                return Err(Error::Other(format!(
                    "{program} is not installed (Debian package {package}; scripts/install-test-deps.sh installs it)"
                )));
            }
        }
        Ok(Tools {
            etcd: EtcdVersion::V3_5.etcd()?,
            etcdctl: EtcdVersion::V3_5.etcdctl()?,
            // 3.5.30: `etcd-snapshot restore` bumps the revision by default, which etcdutl
            // 3.5.1 cannot.
            etcdutl: EtcdVersion::V3_5_30.etcdutl()?,
            weed: eso_testenv::bin("weed")?,
            ours,
            me,
        })
    }
}

/// Our own etcd member: data on disk under the work dir, a quota that holds 1 GiB and more.
struct Etcd {
    endpoint: String,
    _proc: Proc,
}

impl Etcd {
    fn start(tools: &Tools, dir: &Path) -> Result<Etcd> {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = vec![
            "--name=bench".to_string(),
            format!("--data-dir={}", dir.join("etcd-data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=bench={peer_url}"),
            "--quota-backend-bytes=8589934592".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut proc = Proc::spawn_with_env(
            "etcd",
            &tools.etcd,
            &args,
            &[("ETCD_UNSUPPORTED_ARCH".into(), String::new())],
            &dir.join("etcd.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc.check_running()?;
            let healthy = Command::new(&tools.etcdctl)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={client_url}"))
                .args(["--command-timeout=2s", "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if healthy {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Other(
                    "etcd did not become healthy within 30s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Etcd {
            endpoint: client_url,
            _proc: proc,
        })
    }
}

/// Everything a round needs.
struct Bench {
    tools: Tools,
    etcd: Etcd,
    s3: S3Server,
    target: S3Target,
    rt: tokio::runtime::Runtime,
    out: PathBuf,
}

fn run(args: Args) -> Result<()> {
    let tools = Tools::find()?;
    std::fs::create_dir_all(&args.work_dir)
        .map_err(io_err(format!("creating {}", args.work_dir.display())))?;
    let work = tempfile::Builder::new()
        .prefix("snapshot-")
        .tempdir_in(&args.work_dir)
        .map_err(io_err(format!(
            "creating a directory in {}",
            args.work_dir.display()
        )))?;
    if eso_bench::is_ram_fs(work.path()) {
        eprintln!(
            "bench: warning: {} is on a RAM file system; \"to disk\" results will flatter every case",
            work.path().display()
        );
    }
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).map_err(io_err("creating the output dir"))?;
    let started = Instant::now();
    let load_before = load_average();
    eprintln!(
        "bench: starting etcd and SeaweedFS in {}",
        work.path().display()
    );
    let etcd = Etcd::start(&tools, work.path())?;
    let s3 = S3Server::start(S3Options::default())?;
    let target = S3Target {
        endpoint: s3.endpoint(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: BUCKET.into(),
    };
    let rt = runtime()?;
    rt.block_on(s3::create_bucket(&target.client(), BUCKET))?;
    eprintln!(
        "bench: filling etcd to {} (seed {})",
        eso_bench::human_size(args.size),
        args.seed
    );
    let filled = rt.block_on(fill::fill(&etcd.endpoint, args.size, args.seed))?;
    eprintln!(
        "bench: filled in {:.1}s: dbSize {}, {} puts, {} deletes, revision {}",
        filled.took.as_secs_f64(),
        eso_bench::human_size(filled.db_size),
        filled.puts,
        filled.deletes,
        filled.revision
    );
    let bench = Bench {
        tools,
        etcd,
        s3,
        target,
        rt,
        out,
    };
    // One unmeasured baseline warms etcd's page cache and the file system.
    let warm = bench.out.join("warm.db");
    bench.baseline(&warm)?;
    let _ = std::fs::remove_file(&warm);

    let mut report = Report::new(filled);
    for round in 1..=args.runs {
        eprintln!("bench: round {round} of {}", args.runs);
        bench.round(&mut report)?;
    }
    report.load = (load_before, load_average());
    report.took = started.elapsed();
    let weed_log = bench.s3.log_path();
    let dirs = [
        ("etcd data and snapshot outputs", work.path()),
        (
            "SeaweedFS data",
            weed_log.parent().unwrap_or(Path::new("/tmp")),
        ),
    ];
    let versions = vec![
        (
            "etcd",
            eso_bench::version_of(&bench.tools.etcd, &["--version"]),
        ),
        (
            "SeaweedFS",
            eso_bench::version_of(&bench.tools.weed, &["version"]),
        ),
        (
            "zip",
            run_quiet(Command::new("zip").arg("-v"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.contains("This is Zip"))
                        .map(|l| l.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
        ),
    ];
    let text = report.render(&args.size_text, args.runs, &dirs, &versions);
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| eso_bench::bench_dir().join(format!("snapshot-{}.md", args.size_text)));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    std::fs::write(&path, &text).map_err(io_err(format!("writing {}", path.display())))?;
    println!("{text}");
    eprintln!(
        "bench: report written to {} ({})",
        path.display(),
        if report.all_pass() {
            "every target holds"
        } else {
            "some targets FAIL"
        }
    );
    drop(bench);
    drop(work);
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(io_err(format!("reading {}", path.display())))?
        .len())
}

fn remove_dir(path: &Path) {
    if path.exists() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Flush dirty pages so that one step's write-back does not land in the next one's time.
fn sync() {
    let _ = Command::new("sync").status();
}

impl Bench {
    fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(&self.tools.etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd.endpoint));
        cmd
    }

    fn measure(&self, cmd: &Command) -> Result<(Measured, String)> {
        let (m, output) = run_measured(cmd, &self.out)?;
        sync();
        Ok((m, String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    fn baseline(&self, file: &Path) -> Result<Measured> {
        let mut cmd = self.etcdctl();
        cmd.args(["snapshot", "save"]).arg(file);
        Ok(self.measure(&cmd)?.0)
    }

    /// `etcd-snapshot` with the S3 flags and credentials.
    fn ours(&self, sub: &str, folder: &str) -> Command {
        let mut cmd = Command::new(&self.tools.ours);
        cmd.arg(sub)
            .args([
                "--s3".to_string(),
                format!("--s3-endpoint={}", self.s3.host_port()),
                "--s3-insecure".to_string(),
                "--s3-bucket-lookup-type=path".to_string(),
                format!("--s3-bucket={BUCKET}"),
                format!("--s3-folder={folder}"),
            ])
            .env("AWS_ACCESS_KEY_ID", &self.target.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.target.secret_key)
            .env("RUST_LOG", "warn")
            .env("ETCD_SNAPSHOT_ETCDUTL", &self.tools.etcdutl);
        cmd
    }

    fn ours_save(&self, name: &str, s3_only: bool) -> Result<(Measured, String)> {
        let dir = self.out.join("ours");
        let mut cmd = self.ours("save", "ours");
        cmd.args(["--snapshot-compress", "--name", name, "--node-name", NODE])
            .arg(format!("--etcd-endpoint={}", self.etcd.endpoint))
            .arg("--dir")
            .arg(&dir);
        if s3_only {
            cmd.arg("--s3-only");
        }
        let (m, stdout) = self.measure(&cmd)?;
        let saved = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Snapshot ")?.strip_suffix(" saved."))
            .ok_or_else(|| Error::Other(format!("etcd-snapshot save printed no name: {stdout}")))?
            .to_string();
        remove_dir(&dir);
        Ok((m, saved))
    }

    fn round(&self, report: &mut Report) -> Result<()> {
        let client = self.target.client();
        // (1) baseline.
        let raw = self.out.join("raw.db");
        let m = self.baseline(&raw)?;
        let raw_size = file_size(&raw)?;
        report.add(Case::Baseline, Sample::new(m, raw_size));

        // (2) the reference pipeline: save, zip, upload, one after the other.
        let ref_db = self.out.join("reference.db");
        let ref_zip = self.out.join("reference.zip");
        let save = self.baseline(&ref_db)?;
        let mut zip = Command::new("zip");
        zip.args(["-q", "-j"]).arg(&ref_zip).arg(&ref_db);
        let (zipped, _) = self.measure(&zip)?;
        let zip_size = file_size(&ref_zip)?;
        let mut upload = Command::new(&self.tools.me);
        upload
            .arg("upload-reference")
            .arg(&ref_zip)
            .arg(&self.target.endpoint)
            .arg(BUCKET)
            .arg("reference/snapshot.zip")
            .env("AWS_ACCESS_KEY_ID", &self.target.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.target.secret_key);
        let (uploaded, _) = self.measure(&upload)?;
        report.add(Case::RefSave, Sample::new(save, raw_size));
        report.add(Case::RefZip, Sample::new(zipped, zip_size));
        report.add(Case::RefUpload, Sample::new(uploaded, zip_size));
        report.add(
            Case::Reference,
            Sample {
                wall: save.wall + zipped.wall + uploaded.wall,
                rss_kib: save
                    .peak_rss_kib
                    .max(zipped.peak_rss_kib)
                    .max(uploaded.peak_rss_kib),
                size: zip_size,
            },
        );
        let _ = std::fs::remove_file(&ref_db);
        let _ = std::fs::remove_file(&ref_zip);
        self.rt.block_on(s3::empty_bucket(&client, BUCKET))?;

        // (3) ours: local copy and S3 from one stream.
        let (m, name) = self.ours_save("bench", false)?;
        let ours_size = self
            .rt
            .block_on(s3::object_size(&client, BUCKET, &format!("ours/{name}")))?
            .ok_or_else(|| Error::Other(format!("ours/{name} is not in S3 after save")))?;
        report.add(Case::Ours, Sample::new(m, ours_size));

        // (4) ours, S3 only.
        let (m, only) = self.ours_save("s3only", true)?;
        let size = self
            .rt
            .block_on(s3::object_size(&client, BUCKET, &format!("ours/{only}")))?
            .ok_or_else(|| Error::Other(format!("ours/{only} is not in S3 after save")))?;
        report.add(Case::OursS3Only, Sample::new(m, size));

        // (5a) etcdutl restore of the raw file.
        let data = self.out.join("restore-etcdutl");
        let mut cmd = Command::new(&self.tools.etcdutl);
        cmd.args(["snapshot", "restore"])
            .arg(&raw)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--name=default",
                "--initial-cluster=default=http://localhost:2380",
                "--initial-advertise-peer-urls=http://localhost:2380",
            ]);
        let (m, _) = self.measure(&cmd)?;
        report.add(Case::RestoreEtcdutl, Sample::new(m, raw_size));
        remove_dir(&data);
        let _ = std::fs::remove_file(&raw);

        // (5b) ours: restore the compressed S3 snapshot of (3).
        let restore_dir = self.out.join("restore-ours");
        std::fs::create_dir_all(&restore_dir).map_err(io_err("creating the restore dir"))?;
        let data = restore_dir.join("data");
        let mut cmd = self.ours("restore", "ours");
        cmd.arg("--cluster-reset")
            .arg(format!("--cluster-reset-restore-path={name}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--dir")
            .arg(restore_dir.join("snapshots"));
        let (m, _) = self.measure(&cmd)?;
        report.add(Case::RestoreOurs, Sample::new(m, ours_size));
        remove_dir(&restore_dir);
        self.rt.block_on(s3::empty_bucket(&client, BUCKET))?;
        Ok(())
    }
}
