//! A real kube-apiserver (v1.20.2, built from Debian's `kubernetes` source package by
//! `scripts/build-kube-apiserver.sh`) on its own etcd, with static-token users and RBAC.

use crate::etcd::{EtcdCluster, EtcdOptions, EtcdVersion};
use crate::process::{Proc, free_port, wait_until};
use crate::tls::{TlsFiles, write};
use crate::{Error, Result, bin, io_err, kubectl, temp_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The administrator user (group `system:masters`), always present.
pub const ADMIN: &str = "eso-admin";

/// A static-token user of the API server. RBAC matches on the user name and groups, so a user
/// named `system:serviceaccount:NS:NAME` in group `system:serviceaccounts` stands in for that
/// ServiceAccount.
#[derive(Debug, Clone)]
pub struct ApiUser {
    /// User name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl ApiUser {
    /// A user that RBAC sees as the ServiceAccount `namespace/name`.
    pub fn service_account(namespace: &str, name: &str) -> ApiUser {
        ApiUser {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// How to start the API server.
#[derive(Debug, Clone, Default)]
pub struct ApiServerOptions {
    /// Users besides the administrator.
    pub users: Vec<ApiUser>,
}

/// A running kube-apiserver with its own etcd; both stop when this is dropped.
#[derive(Debug)]
pub struct ApiServer {
    proc: Proc,
    args: Vec<String>,
    port: u16,
    kubeconfigs: BTreeMap<String, PathBuf>,
    dir: tempfile::TempDir,
    _etcd: EtcdCluster,
}

impl ApiServer {
    /// Start etcd and kube-apiserver and wait until `/readyz` answers and `default` exists.
    pub fn start(options: ApiServerOptions) -> Result<ApiServer> {
        Self::start_with_args(options, &[])
    }

    /// [`ApiServer::start`] with extra kube-apiserver flags (e.g. audit logging for the
    /// benchmarks).
    pub fn start_with_args(options: ApiServerOptions, extra_args: &[String]) -> Result<ApiServer> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&options, extra_args) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Start("kube-apiserver did not start".into())))
    }

    fn try_start(options: &ApiServerOptions, extra_args: &[String]) -> Result<ApiServer> {
        let apiserver = bin("kube-apiserver")?;
        let etcd = EtcdCluster::start(EtcdOptions {
            version: EtcdVersion::V3_5,
            members: 1,
            tls: false,
        })?;
        let dir = temp_dir("eso-apiserver-")?;
        let tls = TlsFiles::generate(&dir.path().join("tls"))?;
        let sa_key = dir.path().join("sa.key");
        let sa_pub = dir.path().join("sa.pub");
        let sa = rcgen::KeyPair::generate()?;
        write(&sa_key, &sa.serialize_pem())?;
        write(&sa_pub, &sa.public_key_pem())?;

        let mut users = vec![ApiUser {
            name: ADMIN.into(),
            groups: vec!["system:masters".into()],
        }];
        users.extend(options.users.iter().cloned());
        let mut tokens = String::new();
        let mut user_tokens = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let token = random_token()?;
            tokens.push_str(&format!(
                "{token},{},uid-{i},\"{}\"\n",
                user.name,
                user.groups.join(",")
            ));
            user_tokens.push((user.name.clone(), token));
        }
        let token_file = dir.path().join("tokens.csv");
        write(&token_file, &tokens)?;

        let port = free_port();
        let cert_dir = dir.path().join("certs");
        let mut args = vec![
            format!("--etcd-servers={}", etcd.endpoint(0)),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            "--insecure-port=0".to_string(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--tls-cert-file={}", tls.server_cert.display()),
            format!("--tls-private-key-file={}", tls.server_key.display()),
            format!("--token-auth-file={}", token_file.display()),
            "--authorization-mode=RBAC".to_string(),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc".to_string(),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            "--profiling=false".to_string(),
            "--v=1".to_string(),
        ];
        args.extend(extra_args.iter().cloned());
        let log = dir.path().join("kube-apiserver.log");
        let proc = Proc::spawn("kube-apiserver", &apiserver, &args, &log)?;

        let mut kubeconfigs = BTreeMap::new();
        for (name, token) in &user_tokens {
            let path = dir.path().join(format!("kubeconfig-{}", sanitize(name)));
            write(&path, &kubeconfig(port, &tls.ca, name, token))?;
            kubeconfigs.insert(name.clone(), path);
        }
        let mut server = ApiServer {
            proc,
            args,
            port,
            kubeconfigs,
            dir,
            _etcd: etcd,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Stop the API server (SIGKILL) and start it again on the same port, data and
    /// credentials; waits until it is ready. `down` is how long it stays stopped.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        self.proc.kill();
        std::thread::sleep(down);
        let log = self.dir.path().join("kube-apiserver.log");
        self.proc = Proc::spawn("kube-apiserver", &bin("kube-apiserver")?, &self.args, &log)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let admin = self
            .kubeconfigs
            .get(ADMIN)
            .cloned()
            .ok_or_else(|| Error::Start("no admin kubeconfig".into()))?;
        let kubectl = kubectl()?;
        let cache_dir = format!(
            "--cache-dir={}",
            self.dir.path().join("kubectl-cache").display()
        );
        wait_until(
            &mut self.proc,
            "kube-apiserver",
            Duration::from_secs(90),
            || {
                let ready = Command::new(&kubectl)
                    .arg(format!("--kubeconfig={}", admin.display()))
                    .arg(&cache_dir)
                    .args(["get", "--raw=/readyz"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                ready
                    && Command::new(&kubectl)
                        .arg(format!("--kubeconfig={}", admin.display()))
                        .arg(&cache_dir)
                        .args(["get", "namespace", "default", "-o", "name"])
                        .output()
                        .map(|o| o.status.success())
                        .unwrap_or(false)
            },
        )
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The administrator's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        self.kubeconfig(ADMIN)
            .unwrap_or_else(|| Path::new("/nonexistent-admin-kubeconfig"))
    }

    /// The kubeconfig of a user given in [`ApiServerOptions::users`] (or [`ADMIN`]).
    pub fn kubeconfig(&self, user: &str) -> Option<&Path> {
        self.kubeconfigs.get(user).map(PathBuf::as_path)
    }

    /// `kubectl --kubeconfig=<admin> --cache-dir=<scratch>/kubectl-cache`: a discovery cache of
    /// this server's own, so a cache written for an earlier server on the same port (without the
    /// CRDs) never hides a resource, and nothing is written to `~/.kube`.
    pub fn kubectl(&self) -> Result<Command> {
        let mut cmd = Command::new(kubectl()?);
        cmd.arg(format!(
            "--kubeconfig={}",
            self.admin_kubeconfig().display()
        ));
        cmd.arg(format!(
            "--cache-dir={}",
            self.dir.path().join("kubectl-cache").display()
        ));
        Ok(cmd)
    }

    /// The API server's log file.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Scratch directory owned by the server (removed with it).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

fn kubeconfig(port: u16, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: eso-test
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: {user:?}
  user:
    token: {token}
contexts:
- name: eso-test
  context:
    cluster: eso-test
    user: {user:?}
current-context: eso-test
",
        ca = ca.display()
    )
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn random_token() -> Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
