//! `--config FILE`: a YAML mapping whose keys are flag names (without `--`), as k3s's config
//! file. Values on the command line win; the file fills in the rest; environment variables come
//! after both (clap reads them for flags neither set). How the keys become flags of a
//! subcommand (and which are skipped) is in [`super::argv`].
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

/// A value of the config file: a YAML boolean, or anything else as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// A string or number.
    Text(String),
}

/// Read the config file: its keys (without a leading `--`) in file order, each with its values
/// (a list gives several; `null` none).
pub fn load(path: &str) -> Result<Vec<(String, Vec<Value>)>, ConfigFileError> {
    let text =
        std::fs::read_to_string(Path::new(path)).map_err(|source| ConfigFileError::Read {
            path: path.to_string(),
            source,
        })?;
    parse(&text).map_err(|reason| ConfigFileError::Invalid {
        path: path.to_string(),
        reason,
    })
}

/// Parse the YAML text of a config file (see [`load`]).
pub fn parse(yaml: &str) -> Result<Vec<(String, Vec<Value>)>, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match value {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        _ => return Err("must be a mapping of flag names to values".into()),
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| format!("key {k:?} is not a string"))?
            .trim_start_matches("--")
            .to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{key:?} is not a flag name"));
        }
        let items = match v {
            serde_yaml::Value::Sequence(items) => items,
            other => vec![other],
        };
        let mut values = Vec::new();
        for item in items {
            match item {
                serde_yaml::Value::Bool(b) => values.push(Value::Bool(b)),
                serde_yaml::Value::Null => {}
                serde_yaml::Value::String(s) => values.push(Value::Text(s)),
                serde_yaml::Value::Number(n) => values.push(Value::Text(n.to_string())),
                _ => {
                    return Err(format!(
                        "{key}: value must be a string, number, boolean or list"
                    ));
                }
            }
        }
        out.push((key, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn keys_come_in_file_order_with_their_values() {
        let parsed = parse("dir: /file\nsnapshot-compress: true\ns3: false\nsnapshot-retention: 3\netcd-endpoint: [a, b]\nx: ~\n")
            .expect("parse");
        assert_eq!(
            parsed,
            vec![
                ("dir".into(), vec![Value::Text("/file".into())]),
                ("snapshot-compress".into(), vec![Value::Bool(true)]),
                ("s3".into(), vec![Value::Bool(false)]),
                ("snapshot-retention".into(), vec![Value::Text("3".into())]),
                (
                    "etcd-endpoint".into(),
                    vec![Value::Text("a".into()), Value::Text("b".into())]
                ),
                ("x".into(), vec![]),
            ]
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(parse("- a\n- b").is_err());
        assert!(parse("dir: {a: 1}").is_err());
        assert!(parse("\"bad key\": 1").is_err());
        assert!(parse(": : :").is_err());
        assert_eq!(parse("").expect("empty"), vec![]);
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
