//! The results of the snapshot benchmark as Markdown: data, machine, command, table, targets.

use crate::fill::Filled;
use eso_bench::{Measured, human_size, markdown_table, max, median, min, ratio};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What was measured; the order is the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    Baseline,
    Reference,
    RefSave,
    RefZip,
    RefUpload,
    Ours,
    OursS3Only,
    RestoreEtcdutl,
    RestoreOurs,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Baseline => "(1) baseline: `etcdctl snapshot save` to disk",
            Case::Reference => "(2) reference: save, then zip, then upload",
            Case::RefSave => "(2a) … `etcdctl snapshot save`",
            Case::RefZip => "(2b) … `zip` (deflate, default level)",
            Case::RefUpload => "(2c) … multipart upload of the zip",
            Case::Ours => "(3) ours: `save --snapshot-compress --s3` (local + S3)",
            Case::OursS3Only => "(4) ours: `save --snapshot-compress --s3 --s3-only`",
            Case::RestoreEtcdutl => "(5a) `etcdutl snapshot restore` of the raw file",
            Case::RestoreOurs => "(5b) ours: `restore` of the .zst in S3",
        }
    }

    /// The case a row's "× baseline" compares with.
    fn baseline(self) -> Case {
        match self {
            Case::RestoreEtcdutl | Case::RestoreOurs => Case::RestoreEtcdutl,
            _ => Case::Baseline,
        }
    }
}

/// One run of one case.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall time.
    pub wall: Duration,
    /// Peak RSS (KiB).
    pub rss_kib: u64,
    /// Size of what it produced (or read).
    pub size: u64,
}

impl Sample {
    pub fn new(m: Measured, size: u64) -> Sample {
        Sample {
            wall: m.wall,
            rss_kib: m.peak_rss_kib,
            size,
        }
    }
}

/// Every sample, by case.
pub struct Report {
    filled: Filled,
    samples: BTreeMap<Case, Vec<Sample>>,
    /// Load average at the start and the end.
    pub load: (String, String),
    /// Wall time of the whole benchmark.
    pub took: Duration,
}

/// One target: a measured value and its limit (at most).
struct Target {
    what: &'static str,
    value: f64,
    limit: f64,
    unit: &'static str,
}

impl Report {
    pub fn new(filled: Filled) -> Report {
        Report {
            filled,
            samples: BTreeMap::new(),
            load: (String::new(), String::new()),
            took: Duration::ZERO,
        }
    }

    pub fn add(&mut self, case: Case, sample: Sample) {
        self.samples.entry(case).or_default().push(sample);
    }

    fn walls(&self, case: Case) -> Vec<f64> {
        self.samples
            .get(&case)
            .map(|s| s.iter().map(|x| x.wall.as_secs_f64()).collect())
            .unwrap_or_default()
    }

    fn median_wall(&self, case: Case) -> f64 {
        median(&self.walls(case))
    }

    fn peak_rss_mib(&self, case: Case) -> f64 {
        self.samples
            .get(&case)
            .and_then(|s| s.iter().map(|x| x.rss_kib).max())
            .unwrap_or(0) as f64
            / 1024.0
    }

    fn median_size(&self, case: Case) -> u64 {
        let sizes: Vec<f64> = self
            .samples
            .get(&case)
            .map(|s| s.iter().map(|x| x.size as f64).collect())
            .unwrap_or_default();
        median(&sizes) as u64
    }

    fn targets(&self) -> Vec<Target> {
        let base = self.median_wall(Case::Baseline);
        let ours = self.median_wall(Case::Ours);
        vec![
            Target {
                what: "(3) ours ÷ (1) baseline, wall",
                value: ratio(ours, base),
                limit: 1.15,
                unit: "×",
            },
            Target {
                what: "(3) ours ÷ (2) reference pipeline, wall",
                value: ratio(ours, self.median_wall(Case::Reference)),
                limit: 0.35,
                unit: "×",
            },
            Target {
                what: "(4) S3-only ÷ (1) baseline, wall",
                value: ratio(self.median_wall(Case::OursS3Only), base),
                limit: 1.10,
                unit: "×",
            },
            Target {
                what: "(5b) our restore ÷ (5a) etcdutl restore, wall",
                value: ratio(
                    self.median_wall(Case::RestoreOurs),
                    self.median_wall(Case::RestoreEtcdutl),
                ),
                limit: 1.3,
                unit: "×",
            },
            Target {
                what: "peak RSS of `save`, (3) and (4), worst run",
                value: self
                    .peak_rss_mib(Case::Ours)
                    .max(self.peak_rss_mib(Case::OursS3Only)),
                limit: 64.0,
                unit: " MiB",
            },
        ]
    }

    /// Whether every target holds.
    pub fn all_pass(&self) -> bool {
        self.targets().iter().all(|t| t.value <= t.limit)
    }

    pub fn render(
        &self,
        size: &str,
        runs: usize,
        dirs: &[(&str, &Path)],
        versions: &[(&str, String)],
    ) -> String {
        let mut out = String::new();
        let f = &self.filled;
        let _ = writeln!(out, "### {size} database, {runs} alternating rounds\n");
        let _ = writeln!(
            out,
            "Command: `make bench-snapshot BENCH_SIZE={size} BENCH_RUNS={runs}`\n"
        );
        let _ = writeln!(out, "Machine:\n");
        out.push_str(&eso_bench::machine_description(dirs));
        for (name, v) in versions {
            let _ = writeln!(out, "- {name}: {v}");
        }
        let _ = writeln!(
            out,
            "- load average at start / end: {} / {}; whole run {:.0}s\n",
            self.load.0,
            self.load.1,
            self.took.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "Data: etcd dbSize {} ({} in use after compaction), {} puts ({} of values), {} deletes, \
             revision {}, compacted at {}; filled in {:.0}s.\n",
            human_size(f.db_size),
            human_size(f.db_size_in_use),
            f.puts,
            human_size(f.value_bytes),
            f.deletes,
            f.revision,
            f.compacted,
            f.took.as_secs_f64()
        );
        let raw = self.median_size(Case::Baseline) as f64;
        let base = self.median_wall(Case::Baseline);
        let reference = self.median_wall(Case::Reference);
        let restore_base = self.median_wall(Case::RestoreEtcdutl);
        let mut rows = Vec::new();
        for &case in self.samples.keys() {
            let walls = self.walls(case);
            let m = median(&walls);
            let vs_base = if case.baseline() == Case::Baseline {
                ratio(m, base)
            } else {
                ratio(m, restore_base)
            };
            let vs_ref = match case {
                Case::Baseline | Case::Ours | Case::OursS3Only => {
                    format!("{:.2}", ratio(m, reference))
                }
                _ => "".into(),
            };
            let size = self.median_size(case);
            let compression = match case {
                Case::Reference
                | Case::RefZip
                | Case::RefUpload
                | Case::Ours
                | Case::OursS3Only => {
                    format!("{:.2}", ratio(raw, size as f64))
                }
                _ => "".into(),
            };
            rows.push(vec![
                case.label().to_string(),
                format!("{m:.2}"),
                format!("{:.2}–{:.2}", min(&walls), max(&walls)),
                format!("{vs_base:.2}"),
                vs_ref,
                format!("{:.1}", self.peak_rss_mib(case)),
                human_size(size),
                compression,
            ]);
        }
        out.push_str(&markdown_table(
            &[
                "case",
                "median wall (s)",
                "min–max (s)",
                "× baseline",
                "× reference",
                "peak RSS (MiB)",
                "size",
                "raw ÷ size",
            ],
            &rows,
        ));
        let _ = writeln!(
            out,
            "\n\"× baseline\" is against (1) for the saves and against (5a) for the restores. Peak \
             RSS is the worst run; for (2) the largest of its three processes. Sizes are the \
             stored bytes: raw snapshot, zip, zstd (level 1).\n"
        );
        let mut trows = Vec::new();
        for t in self.targets() {
            trows.push(vec![
                t.what.to_string(),
                format!("{:.2}{}", t.value, t.unit),
                format!("≤ {:.2}{}", t.limit, t.unit),
                if t.value <= t.limit { "PASS" } else { "FAIL" }.to_string(),
            ]);
        }
        out.push_str(&markdown_table(
            &["target", "measured", "limit", "result"],
            &trows,
        ));
        out
    }
}
