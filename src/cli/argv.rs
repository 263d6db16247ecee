//! The command line before clap parses it, made to work as k3s's does:
//!
//! - Flags may come before the subcommand (`etcd-snapshot --s3 --s3-bucket=b ls`), as k3s's
//!   `etcd-snapshot` command takes its flags before `save`/`ls`/...: so one alias
//!   (`alias es='etcd-snapshot --etcd-endpoint=... --s3 --s3-bucket=...'`) serves every
//!   subcommand. A flag placed there that the chosen subcommand does not take, but another one
//!   does, is ignored (k3s parses those flags at the parent command); one that no subcommand
//!   knows stays where it is, so clap refuses it.
//! - `--config FILE` (or `ETCD_SNAPSHOT_CONFIG`) is a YAML mapping of flag names to values, as
//!   k3s's config file: its keys are added as flags of the subcommand unless the command line
//!   sets the same flag (under any of its names). Keys that the subcommand does not take are
//!   skipped, so one file (even k3s's own `/etc/rancher/k3s/config.yaml`, whose `etcd-s3-*`,
//!   `etcd-snapshot-dir` and `data-dir` keys are ours too) serves every subcommand; keys that no
//!   subcommand knows are named in one warning line, as k3s warns.
//! - `restore` never takes `--name` or `--data-dir` from before the subcommand or from the config
//!   file: there they are k3s's snapshot prefix and data dir, but `restore`'s are the etcd member
//!   name and the etcd data dir to replace.

use super::args::Cli;
use super::config_file::{self, ConfigFileError};
use clap::{ArgAction, CommandFactory};
use std::collections::BTreeSet;

/// Flags that `restore` takes only after the subcommand on the command line.
const RESTORE_OWN: [&str; 2] = ["name", "data-dir"];

/// The command line as clap should see it, and the warnings to print.
#[derive(Debug, Default, PartialEq)]
pub struct Prepared {
    /// Arguments for clap.
    pub argv: Vec<String>,
    /// One line each, without the `warning: ` prefix.
    pub warnings: Vec<String>,
}

/// One flag as clap knows it.
#[derive(Debug, Clone)]
struct FlagInfo {
    /// clap's id (the same for every name of the flag).
    id: String,
    /// Takes a value (`--x V` or `--x=V`).
    takes_value: bool,
    /// A boolean switch.
    switch: bool,
}

/// The flags of one command, by every long name and alias (without `--`) and short letter.
#[derive(Debug, Default)]
struct Flags {
    long: Vec<(String, FlagInfo)>,
    short: Vec<(char, FlagInfo)>,
}

impl Flags {
    fn of(cmd: &clap::Command) -> Flags {
        let mut flags = Flags::default();
        for arg in cmd.get_arguments() {
            let info = FlagInfo {
                id: arg.get_id().to_string(),
                takes_value: arg.get_action().takes_values(),
                switch: matches!(arg.get_action(), ArgAction::SetTrue),
            };
            if let Some(long) = arg.get_long() {
                flags.long.push((long.to_string(), info.clone()));
            }
            for alias in arg.get_all_aliases().into_iter().flatten() {
                flags.long.push((alias.to_string(), info.clone()));
            }
            for short in arg.get_short_and_visible_aliases().into_iter().flatten() {
                flags.short.push((short, info.clone()));
            }
        }
        flags
    }

    fn long(&self, name: &str) -> Option<&FlagInfo> {
        self.long.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }

    fn short(&self, c: char) -> Option<&FlagInfo> {
        self.short.iter().find(|(s, _)| *s == c).map(|(_, f)| f)
    }

    /// The flag an option token names (`--x`, `--x=v`, `-x`, `-xv`), and whether its value is
    /// inside the token.
    fn lookup(&self, token: &str) -> Option<(&FlagInfo, bool)> {
        if let Some(rest) = token.strip_prefix("--") {
            let (name, inline) = match rest.split_once('=') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            self.long(name).map(|f| (f, inline))
        } else {
            let mut chars = token.strip_prefix('-')?.chars();
            let c = chars.next()?;
            self.short(c).map(|f| (f, chars.next().is_some()))
        }
    }
}

/// What clap knows about the whole command line.
struct Model {
    global: Flags,
    /// (name and aliases, flags) of each subcommand.
    subcommands: Vec<(Vec<String>, Flags)>,
}

impl Model {
    fn new() -> Model {
        let root = Cli::command();
        let global = Flags::of(&root);
        let subcommands = root
            .get_subcommands()
            .map(|sc| {
                let mut names = vec![sc.get_name().to_string()];
                names.extend(sc.get_all_aliases().map(str::to_string));
                (names, Flags::of(sc))
            })
            .collect();
        Model {
            global,
            subcommands,
        }
    }

    fn subcommand(&self, word: &str) -> Option<&Flags> {
        self.subcommands
            .iter()
            .find(|(names, _)| names.iter().any(|n| n == word))
            .map(|(_, f)| f)
    }

    /// The flag `token` names in any subcommand.
    fn any_subcommand(&self, token: &str) -> Option<(&FlagInfo, bool)> {
        self.subcommands
            .iter()
            .find_map(|(_, flags)| flags.lookup(token))
    }

    fn known_anywhere(&self, key: &str) -> bool {
        self.global.long(key).is_some()
            || self.subcommands.iter().any(|(_, f)| f.long(key).is_some())
    }
}

/// Split `argv[1..]` up to the subcommand into groups (an option and its value), and find the
/// subcommand's index.
fn before_subcommand(model: &Model, argv: &[String]) -> (Vec<Vec<String>>, Option<usize>) {
    let mut groups = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let token = &argv[i];
        if token == "--" {
            return (groups, None);
        }
        if token.starts_with('-') && token.len() > 1 {
            let found = model
                .global
                .lookup(token)
                .or_else(|| model.any_subcommand(token));
            let width = match found {
                Some((info, inline)) if info.takes_value && !inline => 2,
                _ => 1,
            };
            let end = (i + width).min(argv.len());
            groups.push(argv[i..end].to_vec());
            i = end;
            continue;
        }
        return if model.subcommand(token).is_some() {
            (groups, Some(i))
        } else {
            (groups, None)
        };
    }
    (groups, None)
}

/// Whether `token` (an option) or config `key` is one that `restore` takes only after the
/// subcommand: `--name`, `--data-dir` or `-d`.
fn restore_own(token: &str) -> bool {
    let name = token.trim_start_matches('-');
    let name = name.split('=').next().unwrap_or_default();
    RESTORE_OWN.contains(&name) || (token.starts_with("-d") && !token.starts_with("--"))
}

/// Apply the rules of the module documentation to `argv` (`argv[0]` is the program).
pub fn prepare(argv: Vec<String>) -> Result<Prepared, ConfigFileError> {
    let model = Model::new();
    let (groups, at) = before_subcommand(&model, &argv);
    let Some((at, sub)) = at.and_then(|at| model.subcommand(&argv[at]).map(|sub| (at, sub))) else {
        // No subcommand: clap prints the help or the error.
        return Ok(Prepared {
            argv,
            warnings: Vec::new(),
        });
    };
    let word = argv[at].clone();
    let is_restore = word == "restore";
    let mut warnings = Vec::new();
    let mut head = vec![argv[0].clone()];
    let mut moved = Vec::new();
    for group in groups {
        let token = group[0].clone();
        if model.global.lookup(&token).is_some() {
            head.extend(group);
        } else if is_restore && restore_own(&token) {
            warnings.push(format!(
                "{token} before the subcommand is not used by restore: give the etcd member \
                 name and data dir after `restore`"
            ));
        } else if sub.lookup(&token).is_some() {
            moved.extend(group);
        } else if model.any_subcommand(&token).is_none() {
            // Unknown everywhere: left for clap to refuse.
            head.extend(group);
        }
    }
    let sub_at = head.len();
    let mut out = head;
    out.push(word);
    out.extend(moved);
    out.extend(argv[at + 1..].iter().cloned());

    if let Some(path) = config_file::config_path(&out) {
        let entries = config_file::load(&path)?;
        let given: BTreeSet<String> = out
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let found = if i > sub_at {
                    sub.lookup(t).or_else(|| model.global.lookup(t))
                } else {
                    model.global.lookup(t)
                };
                found.map(|(f, _)| f.id.clone())
            })
            .collect();
        let mut extra = Vec::new();
        let mut unknown = Vec::new();
        for (key, values) in entries {
            if key == "config" {
                continue;
            }
            if is_restore && restore_own(&key) {
                warnings.push(format!(
                    "config file {path}: {key:?} is not used by restore: give the etcd member \
                     name and data dir on the command line"
                ));
                continue;
            }
            let Some(info) = sub.long(&key).or_else(|| model.global.long(&key)) else {
                if !model.known_anywhere(&key) {
                    unknown.push(key);
                }
                continue;
            };
            if given.contains(&info.id) {
                continue;
            }
            for value in values {
                let text = match value {
                    config_file::Value::Bool(b) => b.to_string(),
                    config_file::Value::Text(t) => t,
                };
                match (info.switch, text.as_str()) {
                    (true, "true") => extra.push(format!("--{key}")),
                    (true, "false") => {}
                    _ => extra.push(format!("--{key}={text}")),
                }
            }
        }
        if !unknown.is_empty() {
            warnings.push(format!(
                "config file {path}: skipped keys that no subcommand takes: {}",
                unknown.join(", ")
            ));
        }
        out.splice(sub_at + 1..sub_at + 1, extra);
    }
    Ok(Prepared {
        argv: out,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn prepared(s: &str) -> Vec<String> {
        prepare(argv(s)).expect("prepare").argv
    }

    #[test]
    fn flags_before_the_subcommand_move_after_it() {
        assert_eq!(
            prepared("es --s3 --s3-bucket b --etcd-endpoint=http://e:1 ls -o json"),
            argv("es ls --s3 --s3-bucket b --etcd-endpoint=http://e:1 -o json")
        );
        // Global flags stay where they are.
        assert_eq!(
            prepared("es --debug --log-level info --s3 delete x"),
            argv("es --debug --log-level info delete --s3 x")
        );
    }

    #[test]
    fn flags_of_other_subcommands_are_dropped_and_unknown_ones_left_for_clap() {
        // --snapshot-compress is not a restore flag: ignored there, as k3s ignores it.
        assert_eq!(
            prepared("es --snapshot-compress --s3-bucket b restore --cluster-reset"),
            argv("es restore --s3-bucket b --cluster-reset")
        );
        assert_eq!(
            prepared("es --no-such-flag ls"),
            argv("es --no-such-flag ls")
        );
    }

    #[test]
    fn restore_never_takes_name_or_data_dir_from_before_the_subcommand() {
        let p = prepare(argv(
            "es --name nightly -d /var/lib/rancher/k3s restore --cluster-reset",
        ))
        .expect("prepare");
        assert_eq!(p.argv, argv("es restore --cluster-reset"));
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        // ... but save does.
        assert_eq!(
            prepared("es --name nightly save"),
            argv("es save --name nightly")
        );
    }

    #[test]
    fn without_a_subcommand_nothing_changes() {
        assert_eq!(prepared("es --help"), argv("es --help"));
        assert_eq!(prepared("es nosuch --x"), argv("es nosuch --x"));
        assert_eq!(prepared("es -- ls"), argv("es -- ls"));
    }

    fn with_config(yaml: &str, line: &str) -> Prepared {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).expect("write");
        let line = format!("{line} --config {}", path.display());
        let mut p = prepare(argv(&line)).expect("prepare");
        // Drop the --config pair for easy comparison.
        let at = p
            .argv
            .iter()
            .position(|t| t == "--config")
            .expect("--config");
        p.argv.drain(at..at + 2);
        p
    }

    #[test]
    fn config_file_keys_the_subcommand_takes_are_added_others_skipped() {
        let yaml = "etcd-s3: true\netcd-s3-bucket: b\nsnapshot-compress: true\ndata-dir: /var/lib/rancher/k3s\n\
                    tls-san: [a, b]\ncluster-init: true\nkeep-daily: 3\netcd-endpoint: [http://a:1, http://b:2]\n";
        let p = with_config(yaml, "es ls");
        assert_eq!(
            p.argv,
            argv(
                "es ls --etcd-s3 --etcd-s3-bucket=b --snapshot-compress --data-dir=/var/lib/rancher/k3s \
                 --etcd-endpoint=http://a:1 --etcd-endpoint=http://b:2"
            )
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0]
                .ends_with(": skipped keys that no subcommand takes: tls-san, cluster-init"),
            "{:?}",
            p.warnings
        );
        // keep-daily is prune's.
        assert!(
            with_config(yaml, "es prune")
                .argv
                .contains(&"--keep-daily=3".to_string())
        );
    }

    #[test]
    fn the_command_line_wins_under_any_name_of_the_flag() {
        let p = with_config(
            "etcd-s3-bucket: fromfile\ns3: true\n",
            "es save --s3-bucket=cli",
        );
        assert_eq!(p.argv, argv("es save --s3 --s3-bucket=cli"));
    }

    #[test]
    fn restore_takes_neither_name_nor_data_dir_from_the_config_file() {
        let p = with_config(
            "name: nightly\ndata-dir: /var/lib/rancher/k3s\ns3-bucket: b\n",
            "es restore --cluster-reset",
        );
        assert_eq!(p.argv, argv("es restore --s3-bucket=b --cluster-reset"));
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    #[test]
    fn switches_take_yaml_or_string_booleans() {
        let p = with_config("s3: \"true\"\ns3-insecure: false\n", "es ls");
        assert_eq!(p.argv, argv("es ls --s3"));
    }
}
