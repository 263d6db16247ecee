//! Generated files stay in sync with the code, and the CLI skeleton behaves.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_etcd-snapshot"))
}

#[test]
fn checked_in_crds_match_generated_output() {
    let out = bin().arg("crd").output().expect("run etcd-snapshot crd");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("utf8");
    let dir = eso_testenv::repo_root().join("crds");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("crds/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let checked_in: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read CRD file"))
        .collect();
    assert!(
        checked_in == generated,
        "crds/ is stale: run `make crds` and commit the result"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "controller",
        "agent",
        "save",
        "ls",
        "list",
        "l",
        "delete",
        "prune",
        "restore",
        "verify",
        "trigger",
        "crd",
    ] {
        let out = bin().args([sub, "--help"]).output().expect("run --help");
        assert!(out.status.success(), "{sub} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: etcd-snapshot"), "{sub}: {text}");
    }
}

#[test]
fn unknown_flag_is_one_clear_error() {
    let out = bin()
        .args(["save", "--no-such-flag"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
