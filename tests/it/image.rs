//! The operator image that `make image` builds (scripts/build-image.sh), here from the test build
//! of `etcd-snapshot` (the script takes any binary; `make image` gives it the release build):
//! - the archive is a docker-archive (manifest.json, repositories, config and layer named by
//!   their sha256) tagged with the chart's image repository and Cargo.toml's version;
//! - `etcd-snapshot` and `etcdutl` run from the image's root file system, as the image's user, so
//!   a missing shared library fails here and not in a pod;
//! - the same inputs give the same bytes;
//! - the Dockerfile's final stage says what the image config says (user, entrypoint, PATH), takes
//!   the root file system from the same script, and names the same etcd version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    eso_testenv::repo_root()
}

/// Scratch space of this test binary in the target dir (rebuilt on every run).
fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image-test")
}

/// Runs scripts/build-image.sh with the test build of etcd-snapshot into `out` (and the script's
/// own etcdutl, the one `make image` uses); the archive path.
fn build_image(out: &Path) -> PathBuf {
    let output = Command::new(root().join("scripts/build-image.sh"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_etcd-snapshot"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run scripts/build-image.sh");
    assert!(
        output.status.success(),
        "scripts/build-image.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "no archive at {}", path.display());
    path
}

/// `tar -xf ARCHIVE -C DIR` (a fresh DIR).
fn untar(archive: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("create dir");
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xf {}", archive.display());
}

/// The image, built once per test run: the archive, its contents unpacked, and the layer unpacked
/// into a root file system.
struct Image {
    archive: PathBuf,
    unpacked: PathBuf,
    rootfs: PathBuf,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = scratch();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clean the scratch dir");
        }
        let archive = build_image(&dir.join("out"));
        let unpacked = dir.join("unpacked");
        untar(&archive, &unpacked);
        let manifest = json(&unpacked.join("manifest.json"));
        let layer = manifest[0]["Layers"][0].as_str().expect("a layer");
        let rootfs = dir.join("rootfs");
        untar(&unpacked.join(layer), &rootfs);
        Image {
            archive,
            unpacked,
            rootfs,
        }
    })
}

fn json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sha256sum FILE` (the image is ~130 MB with the debug binary: sha2 in a debug build would take
/// seconds).
fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join(path)).expect("read YAML");
    serde_yaml::from_str(&text).expect("valid YAML")
}

/// The image config (the JSON the manifest names).
fn config(image: &Image) -> Value {
    let manifest = json(&image.unpacked.join("manifest.json"));
    let name = manifest[0]["Config"].as_str().expect("Config");
    json(&image.unpacked.join(name))
}

/// `chroot --userspec=UID:GID ROOTFS COMMAND...`: (success, stdout + stderr).
fn run_in_rootfs(rootfs: &Path, user: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("/usr/sbin/chroot")
        .arg(format!("--userspec={user}"))
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin")
        .output()
        .expect("run chroot (the tests run as root)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The etcd version of the image's etcdutl (`etcdutl version` -> "etcdutl version: 3.5.30").
fn image_etcd_version(image: &Image) -> String {
    let (ok, out) = run_in_rootfs(
        &image.rootfs,
        "65532:65532",
        &["/usr/local/bin/etcdutl", "version"],
    );
    assert!(ok, "etcdutl version in the image: {out}");
    out.lines()
        .find_map(|l| l.strip_prefix("etcdutl version: "))
        .unwrap_or_else(|| panic!("unexpected `etcdutl version` output: {out}"))
        .trim()
        .to_owned()
}

#[test]
fn archive_is_a_docker_archive_tagged_with_the_charts_image_and_sha256_named_parts() {
    let image = image();
    let version = env!("CARGO_PKG_VERSION");
    let values = yaml("charts/etcd-snapshot-operator/values.yaml");
    let repository = values["image"]["repository"].as_str().expect("repository");
    let chart = yaml("charts/etcd-snapshot-operator/Chart.yaml");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "the chart's appVersion (its default image tag) is Cargo.toml's version"
    );
    assert_eq!(
        image.archive.file_name().and_then(|n| n.to_str()),
        Some(format!("etcd-snapshot-{version}.tar").as_str())
    );

    let manifest = json(&image.unpacked.join("manifest.json"));
    let entries = manifest.as_array().expect("manifest.json is a list");
    assert_eq!(entries.len(), 1, "{manifest}");
    let entry = &entries[0];
    assert_eq!(
        entry["RepoTags"],
        serde_json::json!([format!("{repository}:{version}")])
    );
    let config_name = entry["Config"].as_str().expect("Config");
    let config_hex = config_name.strip_suffix(".json").expect("<sha256>.json");
    assert_eq!(sha256_hex(&image.unpacked.join(config_name)), config_hex);
    let layers = entry["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let layer_name = layers[0].as_str().expect("layer path");
    let layer_hex = layer_name
        .strip_suffix("/layer.tar")
        .expect("<sha256>/layer.tar");
    assert_eq!(sha256_hex(&image.unpacked.join(layer_name)), layer_hex);

    let repositories = json(&image.unpacked.join("repositories"));
    assert_eq!(
        repositories,
        serde_json::json!({ repository: { version: layer_hex } })
    );

    let config = config(image);
    assert_eq!(config["os"], "linux");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(config["architecture"], "amd64");
    }
    assert_eq!(
        config["rootfs"],
        serde_json::json!({ "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] })
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/etcd-snapshot"])
    );
    let env = config["config"]["Env"].as_array().expect("Env");
    assert!(
        env.iter().any(|e| e
            .as_str()
            .and_then(|e| e.strip_prefix("PATH="))
            .is_some_and(|p| p.split(':').any(|d| d == "/usr/local/bin"))),
        "restore and verify find etcdutl on PATH: {env:?}"
    );
}

#[test]
fn etcd_snapshot_and_etcdutl_run_from_the_image_root_fs_as_the_image_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let image = image();
    let user = config(image)["config"]["User"]
        .as_str()
        .expect("User")
        .to_owned();

    let (ok, out) = run_in_rootfs(
        &image.rootfs,
        &user,
        &["/usr/local/bin/etcd-snapshot", "--version"],
    );
    assert!(ok, "etcd-snapshot --version in the image: {out}");
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    // The tool restore and verify use, found on the image's PATH.
    let version = image_etcd_version(image);
    assert!(version.starts_with("3."), "etcdutl {version}");

    let ca = std::fs::metadata(image.rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("CA bundle");
    assert!(ca.len() > 1000, "CA bundle is empty");
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    let tmp = std::fs::metadata(image.rootfs.join("tmp")).expect("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777, "/tmp");
    // Everything belongs to root: the non-root user can write nowhere but /tmp.
    for entry in walk(&image.rootfs) {
        let meta = std::fs::symlink_metadata(&entry).expect("metadata");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{} is not owned by root",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn the_same_inputs_give_the_same_image_bytes() {
    let first = sha256_hex(&image().archive);
    let again = build_image(&scratch().join("again"));
    assert_eq!(
        sha256_hex(&again),
        first,
        "two builds from the same binaries differ"
    );
    std::fs::remove_dir_all(scratch().join("again")).expect("remove the second build");
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped: (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, rest) = current.split_once(' ').unwrap_or((current.as_str(), ""));
        out.push((instruction.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfile_final_stage_matches_the_image_config_and_etcd_version() {
    let image = image();
    let config = config(image);
    let steps = dockerfile();

    // etcdutl: the Dockerfile's etcd release is the version `make image` puts in.
    let etcd = steps
        .iter()
        .find_map(|(i, rest)| {
            (i == "ARG")
                .then(|| rest.strip_prefix("ETCD_VERSION="))
                .flatten()
        })
        .expect("ARG ETCD_VERSION=... in the Dockerfile");
    assert_eq!(
        etcd.trim_start_matches('v'),
        image_etcd_version(image),
        "the Dockerfile's ETCD_VERSION and the etcdutl of `make image` (ETCDUTL in \
         scripts/build-image.sh) must be the same release"
    );
    // The root file system comes from the same script.
    assert!(
        steps
            .iter()
            .any(|(i, rest)| i == "RUN"
                && rest.starts_with("scripts/build-image.sh --rootfs /rootfs ")),
        "the build stage assembles /rootfs with scripts/build-image.sh --rootfs"
    );

    let last_from = steps
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("FROM in the Dockerfile");
    let last = &steps[last_from..];
    let get = |instruction: &str| -> Vec<&str> {
        last.iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
            .collect()
    };
    assert_eq!(get("FROM"), ["scratch"], "the final stage starts empty");
    assert_eq!(
        get("COPY"),
        ["--from=build /rootfs/ /"],
        "the final stage is the script's root file system and nothing else"
    );
    assert!(get("RUN").is_empty(), "nothing runs in the final stage");
    let user = get("USER");
    assert_eq!(user.len(), 1, "one USER in the final stage");
    assert_eq!(config["config"]["User"], user[0]);
    let entrypoint: Value =
        serde_json::from_str(get("ENTRYPOINT").first().expect("ENTRYPOINT")).expect("JSON form");
    assert_eq!(config["config"]["Entrypoint"], entrypoint);
    let cmd: Value = serde_json::from_str(get("CMD").first().expect("CMD")).expect("JSON form");
    assert_eq!(config["config"]["Cmd"], cmd);
    let env: Vec<Value> = get("ENV").into_iter().map(Value::from).collect();
    assert_eq!(config["config"]["Env"], Value::Array(env));
}
