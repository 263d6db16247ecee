//! `--config FILE`: a YAML mapping whose keys are flag names (without `--`), as k3s's config
//! file. Values on the command line win; the file fills in the rest; environment variables come
//! after both (clap reads them for flags neither set).
//!
//! ```yaml
//! dir: /var/lib/etcd-snapshots
//! snapshot-compress: true
//! s3: true
//! s3-bucket: backups
//! etcd-endpoint: [https://10.0.0.1:2379, https://10.0.0.2:2379]
//! ```

use std::path::Path;

/// Environment variable naming the config file (like `--config`).
pub const CONFIG_ENV: &str = "ETCD_SNAPSHOT_CONFIG";

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Error.
        source: std::io::Error,
    },
    /// The file is not a YAML mapping of flag names to scalars or lists of scalars.
    #[error("config file {path}: {reason}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The config file named by `--config FILE`/`--config=FILE` in `argv`, or by the environment.
pub fn config_path(argv: &[String]) -> Option<String> {
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = arg.strip_prefix("--config=") {
            return Some(v.to_string());
        }
    }
    std::env::var(CONFIG_ENV).ok().filter(|v| !v.is_empty())
}

/// Read the config file and merge it into `argv`.
pub fn load_and_merge(argv: Vec<String>, path: &str) -> Result<Vec<String>, ConfigFileError> {
    let text =
        std::fs::read_to_string(Path::new(path)).map_err(|source| ConfigFileError::Read {
            path: path.to_string(),
            source,
        })?;
    merge(argv, &text).map_err(|reason| ConfigFileError::Invalid {
        path: path.to_string(),
        reason,
    })
}

/// Insert `--key=value` for every key of the YAML mapping that `argv` does not set itself,
/// right after the subcommand (`argv[1]`). `true` becomes a bare `--key`, `false` is left out,
/// a list becomes one `--key=item` per item.
pub fn merge(argv: Vec<String>, yaml: &str) -> Result<Vec<String>, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match value {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(argv),
        _ => return Err("must be a mapping of flag names to values".into()),
    };
    let given = |key: &str| {
        argv.iter().any(|a| {
            a.strip_prefix("--")
                .is_some_and(|rest| rest == key || rest.starts_with(&format!("{key}=")))
        })
    };
    let mut extra = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| format!("key {k:?} is not a string"))?
            .trim_start_matches("--")
            .to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{key:?} is not a flag name"));
        }
        if key == "config" || given(&key) {
            continue;
        }
        let items = match v {
            serde_yaml::Value::Sequence(items) => items,
            other => vec![other],
        };
        for item in items {
            match item {
                serde_yaml::Value::Bool(true) => extra.push(format!("--{key}")),
                serde_yaml::Value::Bool(false) | serde_yaml::Value::Null => {}
                serde_yaml::Value::String(s) => extra.push(format!("--{key}={s}")),
                serde_yaml::Value::Number(n) => extra.push(format!("--{key}={n}")),
                _ => {
                    return Err(format!(
                        "{key}: value must be a string, number, boolean or list"
                    ));
                }
            }
        }
    }
    let mut out = argv;
    let at = out.len().min(2);
    out.splice(at..at, extra);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn file_fills_in_what_the_command_line_leaves_out() {
        let out = merge(
            argv("etcd-snapshot save --dir /cli"),
            "dir: /file\nsnapshot-compress: true\ns3: false\ns3-bucket: b\nsnapshot-retention: 3\n",
        )
        .expect("merge");
        assert_eq!(
            out,
            argv(
                "etcd-snapshot save --snapshot-compress --s3-bucket=b --snapshot-retention=3 --dir /cli"
            )
        );
    }

    #[test]
    fn lists_repeat_the_flag() {
        let out = merge(argv("x ls"), "etcd-endpoint: [a, b]").expect("merge");
        assert_eq!(out, argv("x ls --etcd-endpoint=a --etcd-endpoint=b"));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(merge(argv("x ls"), "- a\n- b").is_err());
        assert!(merge(argv("x ls"), "dir: {a: 1}").is_err());
        assert!(merge(argv("x ls"), "\"bad key\": 1").is_err());
        assert!(merge(argv("x ls"), ": : :").is_err());
        assert_eq!(merge(argv("x ls"), "").expect("empty"), argv("x ls"));
    }

    #[test]
    fn config_path_is_found_in_both_forms() {
        assert_eq!(
            config_path(&argv("x save --config /c.yaml")),
            Some("/c.yaml".into())
        );
        assert_eq!(
            config_path(&argv("x save --config=/c.yaml")),
            Some("/c.yaml".into())
        );
    }
}
