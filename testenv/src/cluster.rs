//! A real single-node Kubernetes v1.20 cluster (the end-to-end tier), started and stopped by
//! `scripts/e2e-cluster.sh`: etcd 3.5 with kubeadm's certificate layout, a stock kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd, kubelet and kube-proxy, all in a network
//! namespace of their own. Needs root; one cluster per machine (a second `start` waits for the
//! first to go).
//!
//! Teardown never depends on this process surviving: a guard process (`e2e-cluster.sh guard`)
//! reads a pipe from this process and runs `down` when the pipe closes — when the handle is
//! dropped, or when the test process dies in any way.

use crate::{Error, Result, cache_dir, io_err, keep_temp};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The running cluster; dropping it tears it down and leaves the machine as it was.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    vars: HashMap<String, String>,
    guard: Option<(Child, ChildStdin)>,
}

/// `scripts/e2e-cluster.sh` in this source tree.
pub fn cluster_script() -> PathBuf {
    repo_root().join("scripts").join("e2e-cluster.sh")
}

/// `scripts/docker-archive.sh ROOTFS REF OUT [ENTRYPOINT...]`: pack a root-fs folder into a
/// one-layer docker-archive image tar that [`Cluster::import_image`] loads.
pub fn docker_archive(
    rootfs: &Path,
    reference: &str,
    out: &Path,
    entrypoint: &[&str],
) -> Result<()> {
    let script = repo_root().join("scripts").join("docker-archive.sh");
    let output = Command::new(&script)
        .arg(rootfs)
        .arg(reference)
        .arg(out)
        .args(entrypoint)
        .output()
        .map_err(io_err(format!("running {}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Start(format!(
            "packing {reference} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

use crate::repo_root;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// Claim the machine for a new cluster: wait while another e2e cluster is up (a stale one,
    /// whose test process is gone, is torn down), then hold the claim until this handle is
    /// dropped. Nothing is created yet, so the caller can record the machine's state now.
    /// `Ok(None)`, after a loud `SKIPPED: not root` on stderr, when not running as root.
    pub fn claim() -> Result<Option<Cluster>> {
        if !is_root() {
            eprintln!("SKIPPED: not root (the e2e cluster needs root: netns, cgroups, mounts)");
            return Ok(None);
        }
        // Short, under /tmp: containerd's socket path must stay below 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("eso-e2e.")
            .tempdir_in("/tmp")
            .map_err(io_err("creating the cluster directory"))?
            .keep();
        let script = cluster_script();
        std::fs::create_dir_all(dir.join("logs")).map_err(io_err("creating the logs directory"))?;
        let guard_log = std::fs::File::create(dir.join("logs").join("guard.log"))
            .map_err(io_err("creating the guard log"))?;
        let guard_err = guard_log
            .try_clone()
            .map_err(io_err("creating the guard log"))?;
        let spawned = Command::new(&script)
            .arg("guard")
            .arg(&dir)
            .env("ESO_CACHE", cache_dir())
            .stdin(Stdio::piped())
            .stdout(guard_log)
            .stderr(guard_err)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // Nothing was claimed yet: leave no directory behind.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(io_err(format!("starting {} guard", script.display()))(e));
            }
        };
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Start("the guard process has no stdin".into()))?;
        let cluster = Cluster {
            dir,
            vars: HashMap::new(),
            guard: Some((child, stdin)),
        };
        cluster.script("claim", false)?;
        Ok(Some(cluster))
    }

    /// [`Cluster::claim`] then [`Cluster::up`].
    pub fn start() -> Result<Option<Cluster>> {
        let Some(mut cluster) = Cluster::claim()? else {
            return Ok(None);
        };
        cluster.up()?;
        Ok(Some(cluster))
    }

    /// Bring the cluster up (~1 min with the binaries built) and wait for the node to be Ready
    /// and the default ServiceAccount to have its token.
    pub fn up(&mut self) -> Result<()> {
        let stdout = self.script("up", false)?;
        for line in stdout.lines() {
            if let Some((k, v)) = line.split_once('=') {
                self.vars.insert(k.to_string(), v.to_string());
            }
        }
        for key in [
            "KUBECONFIG",
            "NODE_NAME",
            "NODE_IP",
            "ETCD_PKI",
            "CONTAINERD_SOCK",
            "NETNS",
        ] {
            if !self.vars.contains_key(key) {
                return Err(Error::Start(format!("e2e-cluster.sh up printed no {key}")));
            }
        }
        Ok(())
    }

    /// Tear the cluster down now, keeping the machine claimed (so the caller can check the
    /// machine is as it was before another cluster starts); fails when anything is left.
    pub fn down(&mut self) -> Result<()> {
        self.script("down", true).map(|_| ())
    }

    /// Run `e2e-cluster.sh CMD DIR`; its stderr (progress) is echoed; fails with its tail when
    /// the script fails or warns.
    fn script(&self, cmd: &str, keep_claim: bool) -> Result<String> {
        let script = cluster_script();
        let output = Command::new(&script)
            .arg(cmd)
            .arg(&self.dir)
            .env("ESO_E2E_OWNER_PID", std::process::id().to_string())
            .env("ESO_E2E_KEEP_CLAIM", if keep_claim { "1" } else { "0" })
            .env("ESO_CACHE", cache_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running {} {cmd}", script.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprint!("{stderr}");
        if !output.status.success() || stderr.contains("WARNING") {
            let mut tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            tail.reverse();
            return Err(Error::Start(format!(
                "e2e-cluster.sh {cmd} failed ({}; logs in {}):\n{}",
                output.status,
                self.dir.join("logs").display(),
                tail.join("\n")
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn var(&self, key: &str) -> &str {
        self.vars.get(key).map_or("", String::as_str)
    }

    /// The cluster's working directory (kubeadm-style `etc/kubernetes`, `logs/`, data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin kubeconfig (`system:masters`); it reaches the API server over the veth, so it works
    /// from the host and from inside the node's network namespace.
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    /// The node's name (it carries kubeadm's control-plane labels and master taint).
    pub fn node_name(&self) -> &str {
        self.var("NODE_NAME")
    }

    /// The node's address (inside end of the veth pair; API server on port 6443, etcd on 2379).
    pub fn node_ip(&self) -> &str {
        self.var("NODE_IP")
    }

    /// The host's end of the veth pair: a server a test starts on this address (e.g. S3) is
    /// reachable from every pod. The host reaches pod IPs and ClusterIPs directly.
    pub fn host_ip(&self) -> &str {
        self.var("HOST_IP")
    }

    /// kubeadm's etcd PKI directory of the node: `ca.crt`, `ca.key`, `server.*`, `peer.*`,
    /// `healthcheck-client.*`. Mount it with a hostPath volume (kubelet runs in the host's mount
    /// namespace). etcd listens on `https://127.0.0.1:2379` inside the node's network namespace
    /// (hostNetwork pods) and on `https://NODE_IP:2379`.
    pub fn etcd_pki_dir(&self) -> PathBuf {
        PathBuf::from(self.var("ETCD_PKI"))
    }

    /// containerd's socket (for `ctr -a SOCK -n k8s.io ...`).
    pub fn containerd_socket(&self) -> PathBuf {
        PathBuf::from(self.var("CONTAINERD_SOCK"))
    }

    /// Directory of every cluster process's log.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Import a docker-archive image tar into the node (pods use it with
    /// `imagePullPolicy: Never` or `IfNotPresent`).
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        let output = Command::new("ctr")
            .arg("-a")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar)
            .output()
            .map_err(io_err("running ctr images import"))?;
        if !output.status.success() {
            return Err(Error::Start(format!(
                "importing {} failed: {}",
                tar.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// A command that runs `program` in the node's network namespace (like a hostNetwork pod).
    pub fn node_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.var("NETNS")))
            .arg("--")
            .arg(program);
        cmd
    }

    fn teardown(&mut self) -> Result<()> {
        let Some((mut child, mut stdin)) = self.guard.take() else {
            return Ok(());
        };
        // Closing the guard's stdin makes it run `e2e-cluster.sh down DIR`, remove DIR when all
        // went and nothing is to be kept, and exit.
        let _ = stdin.flush();
        drop(stdin);
        let status = child.wait().map_err(io_err("waiting for the teardown"))?;
        let log =
            std::fs::read_to_string(self.dir.join("logs").join("guard.log")).unwrap_or_default();
        if !status.success() || log.contains("WARNING") {
            return Err(Error::Start(format!(
                "e2e cluster teardown incomplete ({status}):\n{}",
                log.trim()
            )));
        }
        self.remove_dir()
    }

    fn remove_dir(&self) -> Result<()> {
        if keep_temp() {
            eprintln!("testenv: keeping {}", self.dir.display());
            return Ok(());
        }
        // Never delete through a mount (a container rootfs may bind-mount host paths).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        if let Some(m) = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .find(|m| m.starts_with(&prefix))
        {
            return Err(Error::Start(format!(
                "{m} is still mounted: keeping {}",
                self.dir.display()
            )));
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", self.dir.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("e2e cluster: {e}");
        }
    }
}
