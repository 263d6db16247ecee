//! What an e2e cluster could leave behind on the machine, recorded before and after, so a test can
//! prove the machine is as it was: network namespaces and links, mounts in the places kubelet,
//! containerd and iproute2 use, sysctls kubelet and kube-proxy set, the host's iptables rules,
//! cgroups, the fixed host directories of kubelet, containerd and CNI, and kubectl's and Helm's
//! directories in `$HOME`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Machine-wide sysctls kubelet sets, and the host namespace's networking ones the cluster sets in
/// its own namespace only.
pub const WATCHED_SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
];

/// Host directories whose existence and entries are watched.
pub const WATCHED_DIRS: &[&str] = &[
    "/run/netns",
    "/run/containerd",
    "/run/containerd/s",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
    "/etc/cni",
];

/// Directories under `$HOME` whose existence and entries are watched: where kubectl and Helm keep
/// their caches and settings unless told otherwise.
pub const WATCHED_HOME_DIRS: &[&str] = &[
    ".kube",
    ".kube/cache",
    ".cache/helm",
    ".config/helm",
    ".local/share/helm",
];

/// Mount points in these places are watched (others belong to other tests of the machine).
const WATCHED_MOUNT_PREFIXES: &[&str] = &[
    "/run/netns",
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/sys/fs/cgroup",
    "/tmp/eso-e2e.",
];

/// A snapshot of the watched state: category -> items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState(pub BTreeMap<String, BTreeSet<String>>);

impl HostState {
    /// Record the machine's state now.
    pub fn capture() -> HostState {
        let mut s = HostState::default();
        s.put("netns", list_dir(Path::new("/run/netns")));
        s.put(
            "links",
            command_lines("ip", &["-o", "link", "show"])
                .iter()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n).to_string()),
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        s.put(
            "mounts",
            mountinfo
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| WATCHED_MOUNT_PREFIXES.iter().any(|p| m.starts_with(p)))
                .map(str::to_string),
        );
        s.put(
            "sysctls",
            WATCHED_SYSCTLS.iter().map(|k| {
                let v = command_lines("sysctl", &["-n", k]).join(" ");
                format!("{k}={v}")
            }),
        );
        s.put(
            "iptables",
            command_lines("iptables-save", &[])
                .into_iter()
                .filter(|l| !l.starts_with('#'))
                .map(|l| strip_counters(&l)),
        );
        let mut cgroups = Vec::new();
        for hierarchy in list_dir(Path::new("/sys/fs/cgroup")) {
            let path = Path::new("/sys/fs/cgroup").join(&hierarchy);
            for entry in list_dir(&path) {
                if path.join(&entry).is_dir() {
                    cgroups.push(format!("{hierarchy}/{entry}"));
                }
            }
        }
        s.put("cgroups", cgroups);
        for dir in WATCHED_DIRS {
            s.put_dir(Path::new(dir));
        }
        if let Some(home) = std::env::var_os("HOME") {
            for dir in WATCHED_HOME_DIRS {
                s.put_dir(&Path::new(&home).join(dir));
            }
        }
        s
    }

    /// A watched directory: whether it exists, and its entries.
    fn put_dir(&mut self, path: &Path) {
        let items = if path.is_dir() {
            let mut v = vec!["(exists)".to_string()];
            v.extend(list_dir(path));
            v
        } else {
            Vec::new()
        };
        self.put(&format!("dir {}", path.display()), items);
    }

    fn put(&mut self, category: &str, items: impl IntoIterator<Item = String>) {
        self.0
            .insert(category.to_string(), items.into_iter().collect());
    }

    /// What differs from `before`, one line per item: `category: +item` (new) or `-item` (gone).
    pub fn diff(&self, before: &HostState) -> Vec<String> {
        let empty = BTreeSet::new();
        let categories: BTreeSet<&String> = self.0.keys().chain(before.0.keys()).collect();
        let mut out = Vec::new();
        for c in categories {
            let now = self.0.get(c).unwrap_or(&empty);
            let was = before.0.get(c).unwrap_or(&empty);
            out.extend(now.difference(was).map(|i| format!("{c}: +{i}")));
            out.extend(was.difference(now).map(|i| format!("{c}: -{i}")));
        }
        out
    }
}

fn list_dir(path: &Path) -> Vec<String> {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn command_lines(program: &str, args: &[&str]) -> Vec<String> {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `:INPUT ACCEPT [12:345]` -> `:INPUT ACCEPT` (packet counters change on their own).
fn strip_counters(line: &str) -> String {
    match line.rfind(" [") {
        Some(i) if line.starts_with(':') && line.ends_with(']') => line[..i].to_string(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(items: &[(&str, &[&str])]) -> HostState {
        let mut s = HostState::default();
        for (c, v) in items {
            s.put(c, v.iter().map(|i| i.to_string()));
        }
        s
    }

    #[test]
    fn diff_names_new_and_gone_items_per_category() {
        let before = state(&[("netns", &[]), ("sysctls", &["kernel.panic=0"])]);
        let after = state(&[("netns", &["eso-e2e"]), ("sysctls", &["kernel.panic=10"])]);
        assert_eq!(
            after.diff(&before),
            vec![
                "netns: +eso-e2e",
                "sysctls: +kernel.panic=10",
                "sysctls: -kernel.panic=0"
            ]
        );
        assert!(before.diff(&before.clone()).is_empty());
    }

    #[test]
    fn iptables_counters_are_ignored() {
        assert_eq!(strip_counters(":INPUT ACCEPT [12:345]"), ":INPUT ACCEPT");
        assert_eq!(strip_counters("-A INPUT -j X"), "-A INPUT -j X");
    }
}
