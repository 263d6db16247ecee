//! Bad input on the command line (issue 7): every flag given a value of the wrong type or out of
//! range, and snapshot names with path separators, run through the real `etcd-snapshot` binary.
//! Each must exit non-zero with exactly one `error:` line that names the flag or value, and no
//! panic or backtrace. Values are refused before anything is contacted: the etcd endpoint of the
//! table is a closed port, so a value that slipped through would show up as "cannot reach etcd"
//! instead of the expected message.
//!
//! Also: TLS verification is on by default, for etcd and for S3 (the real TLS etcd and HTTPS
//! SeaweedFS refuse a client that was not given the CA, or was given the wrong one).
//! The cases already in `cli_snapshot.rs` (`bad_input_gets_one_clear_line`) are not repeated.

use crate::support;

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion, S3Options, S3Server, free_port};
use std::path::Path;
use support::{cli, etcd_flags, run};

/// Assert a failed run printed exactly one `error:` line containing `needle`, and no panic.
fn assert_refused(what: &str, ok: bool, err: &str, needle: &str) {
    assert!(!ok, "{what}: should fail, stderr: {err}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!err.contains(bad), "{what}: {bad} in {err}");
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error: line expected in {err}");
    assert!(
        errors[0].contains(needle),
        "{what}: expected {needle:?} in {:?}",
        errors[0]
    );
}

/// A kubeconfig whose server is a closed port (the client is built without contacting it).
fn dead_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let port = free_port();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: t}}
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[test]
fn every_flag_with_a_wrong_type_or_out_of_range_value_gets_one_clear_error_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = format!("--dir={}", tmp.path().join("snapshots").display());
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").expect("write");
    let closed = format!("--etcd-endpoint=http://127.0.0.1:{}", free_port());
    let long_name = format!("--name={}", "x".repeat(300));
    let garbage_ca = format!("--s3-endpoint-ca={}", garbage.display());
    let save = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["save", "--node-name=n", &dir, &closed];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    // `--s3` with a valid bucket and a closed endpoint, unless `extra` gives its own.
    let s3 = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--s3"];
        for default in ["--s3-bucket=bucket-1", "--s3-endpoint=127.0.0.1:1"] {
            let flag = default.split('=').next().unwrap_or_default();
            if !extra.iter().any(|e| e.starts_with(&format!("{flag}="))) {
                args.push(default);
            }
        }
        args.extend_from_slice(extra);
        save(&args)
    };
    let with_dir = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(dir.clone());
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        // save: booleans, names, etcd
        (save(&["--snapshot-compress=maybe"]), "'maybe'"),
        (save(&["--s3-insecure=maybe"]), "'maybe'"),
        (save(&["--s3-skip-ssl-verify=2"]), "'2'"),
        (save(&["--name="]), "--name must not be empty"),
        (save(&["--name=a/b"]), "must not contain"),
        (save(&["--name=a\\b"]), "must not contain"),
        (save(&["--name=.hidden"]), "must not start with '.'"),
        (save(&["--name=a\tb"]), "control characters"),
        (save(&[&long_name]), "longer than 255 bytes"),
        (
            vec![
                "save".into(),
                "--node-name=a/b".into(),
                dir.clone(),
                closed.clone(),
            ],
            "not usable in a snapshot name",
        ),
        (
            save(&["--etcd-endpoint=http://127.0.0.1:99999"]),
            "port from 1 to 65535",
        ),
        (
            save(&["--etcd-endpoint=http://127.0.0.1:0"]),
            "port from 1 to 65535",
        ),
        (
            save(&["--etcd-endpoint=http://127.0.0.1:2379/v3"]),
            "must be scheme://host:port",
        ),
        (
            save(&["--etcd-endpoint=unix:///run/etcd.sock"]),
            "must start with http:// or https://",
        ),
        (save(&["--s3-only"]), "--s3-only needs --s3"),
        // save: S3 flags
        (save(&["--s3"]), "--s3-bucket is missing"),
        (s3(&["--s3-timeout=abc"]), "--s3-timeout \"abc\""),
        (s3(&["--s3-timeout=0s"]), "--s3-timeout \"0s\""),
        (s3(&["--s3-timeout=-5m"]), "--s3-timeout \"-5m\""),
        (s3(&["--s3-timeout=5"]), "--s3-timeout \"5\""),
        (s3(&["--s3-bucket-lookup-type=sideways"]), "'sideways'"),
        (
            s3(&["--s3-endpoint=https://s3.example.com/path"]),
            "without a path",
        ),
        (
            s3(&["--s3-endpoint=ftp://s3.example.com"]),
            "schemes accepted",
        ),
        (
            s3(&["--s3-endpoint=s3.example.com:99999"]),
            "port from 1 to 65535",
        ),
        (
            s3(&["--s3-endpoint=s3.example.com:http"]),
            "port from 1 to 65535",
        ),
        (s3(&["--s3-endpoint=[::1"]), "unclosed '['"),
        (s3(&["--s3-endpoint=::1:9000"]), "[addr]:port"),
        (s3(&["--s3-endpoint=s3 example.com"]), "only letters"),
        (
            s3(&["--s3-endpoint=user:pw@s3.example.com"]),
            "without user info",
        ),
        (
            s3(&["--s3-endpoint=https://s3.example.com", "--s3-insecure"]),
            "says https:// but --s3-insecure is true",
        ),
        (
            s3(&["--s3-proxy=proxy.local:3128"]),
            "must be a URL with a scheme",
        ),
        (
            s3(&["--s3-proxy=ftp://proxy.local:21"]),
            "scheme http, https or socks5",
        ),
        (
            s3(&["--s3-proxy=http://proxy.local:0"]),
            "port from 1 to 65535",
        ),
        (s3(&["--s3-proxy=http://"]), "with a host"),
        (
            s3(&["--s3-bucket=Bad_Bucket"]),
            "not a valid S3 bucket name",
        ),
        (s3(&["--s3-bucket=ab"]), "not a valid S3 bucket name"),
        (s3(&["--s3-bucket=10.0.0.1"]), "not a valid S3 bucket name"),
        (s3(&["--s3-folder=../up"]), "--s3-folder"),
        (
            s3(&["--s3-access-key=AKIDONLY"]),
            "--s3-secret-key is missing",
        ),
        (
            s3(&["--s3-secret-key=only-the-secret"]),
            "--s3-access-key is missing",
        ),
        (
            s3(&["--s3-session-token=tok"]),
            "--s3-access-key is missing",
        ),
        (
            s3(&["--s3-endpoint-ca=/nonexistent/ca.pem"]),
            "cannot read CA file",
        ),
        (s3(&[&garbage_ca]), "--s3-endpoint-ca"),
        // ls / delete / prune
        (with_dir(&["ls", "-o", "xml"]), "'xml'"),
        (with_dir(&["delete", "a/b"]), "must not contain"),
        (with_dir(&["delete", ".."]), "must not contain"),
        (with_dir(&["delete", ""]), "snapshot name is empty"),
        (
            with_dir(&["delete", ".metadata"]),
            "must not start with '.'",
        ),
        (with_dir(&["prune", "--snapshot-retention=-1"]), "'-1'"),
        (with_dir(&["prune", "--snapshot-retention=abc"]), "'abc'"),
        (
            with_dir(&["prune", "--snapshot-retention=99999999999"]),
            "'99999999999'",
        ),
        (with_dir(&["prune", "--keep-hourly=0"]), "'0'"),
        (with_dir(&["prune", "--keep-daily=-3"]), "'-3'"),
        (with_dir(&["prune", "--keep-weekly=x"]), "'x'"),
        (with_dir(&["prune", "--keep-monthly=1.5"]), "'1.5'"),
        (
            with_dir(&["prune", "--max-age=-1h"]),
            "must not be negative",
        ),
        (with_dir(&["prune", "--retention-scope=galaxy"]), "'galaxy'"),
        // restore / verify: names refused before S3 is contacted
        (
            with_dir(&[
                "restore",
                "--cluster-reset",
                "--snapshot=a/b",
                "--data-dir=/nonexistent/data",
                "--s3",
                "--s3-bucket=bucket-1",
                "--s3-endpoint=127.0.0.1:1",
            ]),
            "must not contain",
        ),
        (
            with_dir(&[
                "verify",
                "--s3",
                "--s3-bucket=bucket-1",
                "--s3-endpoint=127.0.0.1:1",
                "x/../../etc/passwd",
            ]),
            "must not contain",
        ),
        (
            with_dir(&["restore", "--snapshot=a", "--data-dir=/nonexistent/data"]),
            "--cluster-reset",
        ),
        (
            with_dir(&["restore", "--cluster-reset", "--bump-revision=0"]),
            "--bump-revision <N>",
        ),
        (
            with_dir(&[
                "restore",
                "--cluster-reset",
                "--bump-revision=5",
                "--no-bump-revision",
            ]),
            "cannot be used with",
        ),
        // trigger
        (
            vec!["trigger".into(), "--timeout=soon".into(), "s".into()],
            "--timeout \"soon\"",
        ),
        // global
        (with_dir(&["--log-level=%%%", "ls"]), "--log-level"),
        (
            with_dir(&["--config=/nonexistent/config.yaml", "ls"]),
            "cannot read config file",
        ),
        // controller / agent durations and names
        (
            vec!["controller".into(), "--lease-duration=abc".into()],
            "--lease-duration \"abc\"",
        ),
        (
            vec!["controller".into(), "--renew-deadline=-1s".into()],
            "--renew-deadline \"-1s\"",
        ),
        (
            vec!["controller".into(), "--retry-period=0s".into()],
            "--retry-period \"0s\"",
        ),
        (
            vec!["controller".into(), "--resync=forever".into()],
            "--resync \"forever\"",
        ),
        (
            vec!["controller".into(), "--failed-ttl=1d".into()],
            "--failed-ttl \"1d\"",
        ),
        (
            vec!["controller".into(), "--s3-sync-interval=0".into()],
            "--s3-sync-interval \"0\"",
        ),
        (
            vec![
                "controller".into(),
                "--lease-duration=1s".into(),
                "--renew-deadline=2s".into(),
            ],
            "invalid leader election settings",
        ),
        (
            vec![
                "agent".into(),
                "--node-name=n".into(),
                "--heartbeat=0s".into(),
            ],
            "--heartbeat \"0s\"",
        ),
        (
            vec![
                "agent".into(),
                "--node-name=n".into(),
                "--sync-interval=abc".into(),
            ],
            "--sync-interval \"abc\"",
        ),
        (
            vec!["agent".into(), "--node-name=a/b".into()],
            "not a Kubernetes node name",
        ),
        (
            vec!["agent".into(), "--node-name=Node_1".into()],
            "not a Kubernetes node name",
        ),
        (
            vec!["agent".into(), "--node-name=".into()],
            "--node-name (or NODE_NAME) is required",
        ),
    ];
    let kubeconfig = dead_kubeconfig(tmp.path());
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let what = args.join(" ");
        let (ok, _, err) = run(cli()
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("NODE_NAME")
            .env_remove("RUST_BACKTRACE"));
        if let Err(e) = std::panic::catch_unwind(|| assert_refused(&what, ok, &err, needle)) {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| what.clone()),
            );
        }
    }
    eprintln!("{} bad command lines refused", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing was written by any of the refused commands.
    assert!(
        !tmp.path().join("snapshots").exists()
            || std::fs::read_dir(tmp.path().join("snapshots"))
                .expect("read dir")
                .next()
                .is_none(),
        "a refused command wrote into the snapshot directory"
    );
}

#[test]
fn a_bad_metrics_address_is_one_error_line_for_controller_and_agent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dead_kubeconfig(tmp.path());
    let dir = format!("--dir={}", tmp.path().join("snapshots").display());
    for (args, needle) in [
        (
            vec![
                "agent",
                "--node-name=n",
                "--metrics-addr=not-an-address",
                &dir,
            ],
            "cannot listen on not-an-address",
        ),
        (
            vec![
                "agent",
                "--node-name=n",
                "--metrics-addr=127.0.0.1:99999",
                &dir,
            ],
            "cannot listen on 127.0.0.1:99999",
        ),
        (
            vec!["controller", "--metrics-addr=not-an-address"],
            "cannot listen on not-an-address",
        ),
    ] {
        let (ok, _, err) = run(cli().args(&args).env("KUBECONFIG", &kubeconfig));
        assert_refused(&args.join(" "), ok, &err, needle);
    }
}

/// TLS verification is on by default: an HTTPS etcd needs its CA (there is no flag to skip
/// verification), and a CA that did not sign etcd's certificate is refused; an HTTPS S3 endpoint
/// is verified against the system roots unless `--s3-endpoint-ca` or `--s3-skip-ssl-verify` is
/// given (an untrusted S3 fails only the S3 copy: `save` keeps the local one, as k3s does).
#[tokio::test]
async fn tls_is_verified_by_default_for_etcd_and_s3() {
    let etcd = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: true,
    })
    .expect("start TLS etcd");
    let s3 = S3Server::start(S3Options {
        https: true,
        ..Default::default()
    })
    .expect("start HTTPS SeaweedFS");
    support::create_bucket(&s3, "tls-bucket").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = format!("--dir={}", tmp.path().display());
    let save = |flags: &[String]| run(cli().args(["save", "--node-name=n"]).arg(&dir).args(flags));
    let tls = etcd.tls().expect("etcd TLS files");
    let client = [
        format!("--etcd-cert={}", tls.client_cert.display()),
        format!("--etcd-key={}", tls.client_key.display()),
    ];

    // No CA for the HTTPS etcd.
    let mut flags = vec![format!("--etcd-endpoint={}", etcd.endpoint(0))];
    flags.extend(client.clone());
    let (ok, _, err) = save(&flags);
    assert_refused("etcd without CA", ok, &err, "needs --etcd-cacert");

    // A CA that did not sign etcd's certificate (SeaweedFS's).
    let wrong_ca = s3.ca_file().expect("S3 CA");
    flags.push(format!("--etcd-cacert={}", wrong_ca.display()));
    let (ok, _, err) = save(&flags);
    assert!(!ok, "a wrong CA must fail: {err}");
    let last = err.lines().last().unwrap_or_default().to_lowercase();
    assert!(
        last.starts_with("error:") && last.contains("cannot reach etcd"),
        "{err}"
    );

    // HTTPS S3 without the CA: refused by certificate verification.
    let mut flags = etcd_flags(&etcd);
    flags.extend([
        "--s3".to_string(),
        format!("--s3-endpoint={}", s3.https_host_port().expect("https")),
        "--s3-bucket-lookup-type=path".into(),
        "--s3-bucket=tls-bucket".into(),
        format!("--s3-access-key={}", s3.access_key),
        format!("--s3-secret-key={}", s3.secret_key),
    ]);
    let (ok, _, err) = save(&flags);
    assert_refused("S3 without CA", ok, &err, "--s3-endpoint-ca");
    assert!(!err.contains(&s3.secret_key), "secret key in {err}");

    // With the right CAs both work: the failures above were verification, nothing else.
    flags.push(format!("--s3-endpoint-ca={}", wrong_ca.display()));
    let (ok, out, err) = save(&flags);
    assert!(ok, "with the CAs: {err}");
    assert_eq!(out.matches(" saved.").count(), 2, "{out}");
}

/// What `err` must look like to a person: exactly one `error:` line, which starts with `start`
/// (after `error: `) and holds no library internals (`{`, `Os {`, `Error(`), no log line with a
/// timestamp or an upper-case level, and no secret.
fn assert_person_readable(what: &str, ok: bool, err: &str, start: &str, secret: &str) {
    assert!(!ok, "{what}: should fail: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line expected in {err}");
    let line = errors[0];
    assert!(
        line.starts_with(&format!("error: {start}")),
        "{what}: expected it to start with {start:?}: {line}"
    );
    for internal in ["{", "Os {", "Error(", "os error 111", "tonic::", "hyper::"] {
        assert!(!line.contains(internal), "{what}: {internal:?} in {line}");
    }
    for l in err.lines() {
        assert!(
            l.starts_with("error: ") || l.starts_with("warning: "),
            "{what}: a stray line on stderr: {l:?}"
        );
        assert!(
            !l.contains(" WARN ") && !l.contains(" ERROR ") && !l.contains("Z "),
            "{what}: a log line for machines: {l:?}"
        );
    }
    assert!(
        !err.contains(secret),
        "{what}: the secret key leaked: {err}"
    );
}

/// A new user's mistakes, each against the real servers: etcd down, https to a plain etcd, an
/// etcd CA that did not sign its certificate, no client certificate for an etcd that wants one,
/// S3 down, wrong S3 credentials, a bucket that does not exist, https to a plain S3, bad
/// durations, no kubeconfig. Each gives one line that says what failed and what to do; an S3
/// failure during `save` costs only the S3 copy (the local copy is saved, as k3s does).
#[tokio::test]
async fn what_a_new_user_gets_wrong_is_one_line_saying_what_failed_and_what_to_do() {
    let plain = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: false,
    })
    .expect("start etcd");
    let tls_etcd = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: true,
    })
    .expect("start TLS etcd");
    let s3 = S3Server::start(S3Options::default()).expect("start S3");
    support::create_bucket(&s3, "bucket-1").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let snaps = tmp.path().join("snaps");
    let dir = format!("--dir={}", snaps.display());
    let secret = s3.secret_key.clone();
    let closed = free_port();
    let plain_hostport = plain.endpoint(0).trim_start_matches("http://").to_string();
    let tls_files = tls_etcd.tls().expect("TLS files");
    let s3_args = |endpoint: &str, bucket: &str, secret: &str, insecure: bool| {
        let mut v = vec![
            "--s3".to_string(),
            format!("--s3-endpoint={endpoint}"),
            "--s3-bucket-lookup-type=path".into(),
            format!("--s3-bucket={bucket}"),
            format!("--s3-access-key={}", s3.access_key),
            format!("--s3-secret-key={secret}"),
        ];
        if insecure {
            v.push("--s3-insecure".into());
        }
        v
    };
    let save = |extra: Vec<String>| -> Vec<String> {
        let mut v = vec!["save".to_string(), "--node-name=n".into(), dir.clone()];
        v.extend(extra);
        v
    };
    let with_plain_etcd = |mut extra: Vec<String>| {
        extra.extend(etcd_flags(&plain));
        save(extra)
    };
    // A CA of its own, which did not sign etcd's certificate.
    let other = eso_testenv::TlsFiles::generate(&tmp.path().join("other-ca")).expect("other CA");
    let wrong_ca = Some(other.ca.clone());
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "etcd down",
            save(vec![format!("--etcd-endpoint=http://127.0.0.1:{closed}")]),
            format!(
                "cannot reach etcd at http://127.0.0.1:{closed}: connection refused: is etcd running"
            ),
        ),
        (
            "https to a plain etcd",
            save(vec![
                format!("--etcd-endpoint=https://{plain_hostport}"),
                format!("--etcd-cacert={}", tls_files.ca.display()),
            ]),
            format!(
                "cannot reach etcd at https://{plain_hostport}: etcd closed the connection during the TLS handshake: if it serves plain HTTP, use http://"
            ),
        ),
        (
            "http to a TLS etcd",
            save(vec![format!(
                "--etcd-endpoint=http://{}",
                tls_etcd.endpoint(0).trim_start_matches("https://")
            )]),
            format!(
                "cannot reach etcd at http://{}: etcd closed the connection: if it serves TLS, use https://",
                tls_etcd.endpoint(0).trim_start_matches("https://")
            ),
        ),
        (
            "no client certificate for a TLS etcd",
            save(vec![
                format!("--etcd-endpoint={}", tls_etcd.endpoint(0)),
                format!("--etcd-cacert={}", tls_files.ca.display()),
            ]),
            format!("cannot reach etcd at {}: etcd ", tls_etcd.endpoint(0)),
        ),
        (
            "S3 down",
            with_plain_etcd(s3_args(&format!("127.0.0.1:{closed}"), "bucket-1", &secret, true)),
            format!(
                "the S3 copy was not saved: cannot reach S3 endpoint 127.0.0.1:{closed}: connection refused: is the S3 server running there?"
            ),
        ),
        (
            "wrong S3 credentials",
            with_plain_etcd(s3_args(&s3.host_port(), "bucket-1", "wrong-secret-Q9", true)),
            "the S3 copy was not saved: S3 refused the credentials (check the access key and secret key)".into(),
        ),
        (
            "a bucket that does not exist",
            with_plain_etcd(s3_args(&s3.host_port(), "no-such-bucket", &secret, true)),
            "the S3 copy was not saved: S3 bucket \"no-such-bucket\" does not exist: create it".into(),
        ),
        (
            "https to a plain S3",
            with_plain_etcd(s3_args(&s3.host_port(), "bucket-1", &secret, false)),
            format!(
                "the S3 copy was not saved: cannot reach S3 endpoint {}: it does not speak TLS: if it serves plain HTTP, set --s3-insecure",
                s3.host_port()
            ),
        ),
        (
            "ls with S3 down",
            {
                let mut v = vec!["ls".to_string(), dir.clone()];
                v.extend(s3_args(&format!("127.0.0.1:{closed}"), "bucket-1", &secret, true));
                v
            },
            format!("cannot reach S3 endpoint 127.0.0.1:{closed}: connection refused"),
        ),
        (
            "a bad --max-age",
            vec!["prune".into(), dir.clone(), "--max-age=5x".into()],
            "--max-age: invalid duration \"5x\": unknown unit \"x\" (use s, m, h, d or w)".into(),
        ),
        (
            "a bad --s3-timeout",
            with_plain_etcd({
                let mut v = s3_args(&s3.host_port(), "bucket-1", &secret, true);
                v.push("--s3-timeout=5".into());
                v
            }),
            "--s3-timeout \"5\"".into(),
        ),
        (
            "no kubeconfig",
            vec!["ls".into(), "--cluster".into()],
            "no connection to the Kubernetes API: cannot read the kubeconfig /nonexistent/kubeconfig".into(),
        ),
        (
            "the k3s Secret flag alone",
            with_plain_etcd(vec![
                "--s3".into(),
                "--s3-config-secret=k3s-etcd-snapshot-s3-config".into(),
            ]),
            "--s3-config-secret names a Kubernetes Secret, which this command does not read".into(),
        ),
    ];
    let mut cases = cases;
    if let Some(ca) = &wrong_ca {
        cases.push((
            "an etcd CA that did not sign etcd's certificate",
            save(vec![
                format!("--etcd-endpoint={}", tls_etcd.endpoint(0)),
                format!("--etcd-cacert={}", ca.display()),
                format!("--etcd-cert={}", tls_files.client_cert.display()),
                format!("--etcd-key={}", tls_files.client_key.display()),
            ]),
            format!(
                "cannot reach etcd at {}: etcd's TLS certificate is not trusted (",
                tls_etcd.endpoint(0)
            ),
        ));
    }
    let mut failures = Vec::new();
    for (what, args, start) in &cases {
        let (ok, out, err) = run(cli()
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("RUST_BACKTRACE"));
        eprintln!("{what}: {}", err.trim_end());
        if let Err(e) = std::panic::catch_unwind(|| {
            assert_person_readable(what, ok, &err, start, &secret);
            // An S3 failure during save costs only the S3 copy.
            if start.starts_with("the S3 copy was not saved") {
                assert_eq!(out.matches(" saved.").count(), 1, "{what}: {out}");
                let name = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Snapshot ")?.strip_suffix(" saved."))
                    .unwrap_or_default();
                assert!(snaps.join(name).is_file(), "{what}: no local copy {name}");
                assert!(
                    err.contains(&format!(
                        "the local copy {} was saved",
                        snaps.join(name).display()
                    )),
                    "{what}: {err}"
                );
            }
        }) {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| what.to_string()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The CLI's log lines read like its error line (no timestamp, no upper-case level, no module
/// path); `--log FILE` writes the timestamped form to the file instead, as k3s's `--log`.
#[test]
fn cli_log_lines_are_for_people_and_the_log_file_for_machines() {
    let etcd = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: false,
    })
    .expect("start etcd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = format!("--dir={}", tmp.path().join("snaps").display());
    let (ok, _, err) = run(cli()
        .args([
            "save",
            "--node-name=n",
            "--log-level=etcd_snapshot=info",
            &dir,
        ])
        .args(etcd_flags(&etcd)));
    assert!(ok, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("snapshot stored"))
        .unwrap_or_else(|| panic!("no log line in {err}"));
    assert!(
        line.starts_with("info: snapshot stored (name=on-demand-n-"),
        "{line}"
    );
    let log = tmp.path().join("save.log");
    let (ok, _, err) = run(cli()
        .args(["save", "--node-name=n", "--debug", &dir])
        .arg(format!("--log={}", log.display()))
        .args(etcd_flags(&etcd)));
    assert!(ok, "{err}");
    assert!(err.is_empty(), "the logs went to the file: {err}");
    let text = std::fs::read_to_string(&log).expect("log file");
    let stored = text
        .lines()
        .find(|l| l.contains("snapshot stored"))
        .unwrap_or_else(|| panic!("no log line in {text}"));
    assert!(
        stored.contains(" INFO ") && stored.chars().take(4).all(|c| c.is_ascii_digit()),
        "timestamped: {stored}"
    );
}
