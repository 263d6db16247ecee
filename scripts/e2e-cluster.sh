#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 cluster for the end-to-end tier, in a network namespace of its
# own, laid out as kubeadm lays out a control-plane node (certificates under
# DIR/etc/kubernetes/pki). README.md (Development) says how the tests use it.
#
#   scripts/e2e-cluster.sh claim DIR   wait until no other e2e cluster is up, then claim the machine
#                                      for DIR (`up` claims too; a test claims first to record the
#                                      machine's state before anything is made)
#   scripts/e2e-cluster.sh up DIR      start it; prints KEY=VALUE lines (kubeconfig, node, ...)
#   scripts/e2e-cluster.sh down DIR    stop it, leave the machine as it was (safe to run twice), check
#                                      nothing of it is left, release the claim (kept with
#                                      ESO_E2E_KEEP_CLAIM=1, so a test can check the machine first)
#   scripts/e2e-cluster.sh release DIR release the claim
#   scripts/e2e-cluster.sh guard DIR   block until stdin closes (or SIGTERM), then run `down DIR`:
#                                      the watchdog a test feeds from a pipe
#   scripts/e2e-cluster.sh exec DIR CMD...   run CMD in the node's network namespace
#   scripts/e2e-cluster.sh import DIR FILE   import a docker-archive image tar into the node
#   scripts/e2e-cluster.sh stop-control-plane DIR   stop kube-apiserver, then etcd (SIGTERM, as
#                                      kubelet stops static pods when their manifests are moved
#                                      away); everything else keeps running (a restore drill)
#   scripts/e2e-cluster.sh start-control-plane DIR  start etcd, then kube-apiserver again with
#                                      the command lines `up` used, and wait until both answer
#
# Everything runs as root, started with `nsenter --net=/run/netns/eso-e2e` (so kubelet and
# containerd share the host's mount namespace, and hostNetwork pods share the node's network
# namespace): etcd 3.5 (TLS, client certificates, 127.0.0.1:2379 and NODE_IP:2379),
# kube-apiserver-stock, kube-controller-manager, kube-scheduler, containerd (own config, root,
# state, socket), kubelet (cgroupfs, pods under the cgroup /eso-e2e), kube-proxy (iptables) and a
# bridge CNI network. The host reaches the API server over a veth pair (HOST_IP <-> NODE_IP).
# One cluster per machine: `up` waits (ESO_E2E_WAIT seconds, default 1800) while another live one
# exists, and tears down one whose owner process (ESO_E2E_OWNER_PID, default the caller) is gone.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
BIN=$CACHE/bin
LOCK=$CACHE/e2e-cluster.lock
ACTIVE=$CACHE/e2e-cluster.active

NETNS=eso-e2e
VETH_HOST=eso-e2e-h
VETH_NODE=eso-e2e-n
SUBNET_CHECK=10.203.0.0/16 # every address below is inside it; `up` checks the host does not use it
HOST_IP=10.203.0.1
NODE_IP=10.203.0.2
SERVICE_CIDR=10.203.64.0/24
KUBERNETES_SVC_IP=10.203.64.1
POD_CIDR=10.203.128.0/24
POD_GW=10.203.128.1
CNI_BRIDGE=eso-cni0
CNI_NETWORK=eso-e2e
NODE_NAME=eso-e2e-node
CGROUP_ROOT=eso-e2e
PAUSE_IMAGE=localhost/eso-e2e/pause:3.4
# Machine-wide sysctls kubelet sets (saved before it starts, restored after it stops).
HOST_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Fixed host paths kubelet, containerd and iproute2 create when missing (removed again by `down`
# when they were absent before `up` and are empty after).
# kubelet 1.20's device-plugin directory is fixed (not under --root-dir).
HOST_DIRS=(/var/log/pods /var/log/containers /var/lib/cni/results /var/lib/cni /run/containerd/s
  /run/containerd /run/netns /var/lib/kubelet/device-plugins /var/lib/kubelet)
DEVICE_PLUGIN_FILES=(kubelet.sock DEPRECATION kubelet_internal_checkpoint)

log() { printf '[e2e-cluster] %s\n' "$*" >&2; }
die() { printf '[e2e-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 up|down|guard|stop-control-plane|start-control-plane DIR | exec DIR CMD... | import DIR FILE"; }
[[ $# -ge 2 ]] || usage
CMD=$1
[[ $2 == /* ]] || die "DIR must be an absolute path (got '$2')"
DIR=${2%/}
shift 2

PKI=$DIR/etc/kubernetes/pki
SOCK=$DIR/run/containerd/containerd.sock
STATE=$DIR/state
NSENTER=(nsenter "--net=/run/netns/$NETNS")

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

# Seconds since boot when PID started (field 22 of /proc/PID/stat), to tell a PID from its reuse.
proc_start() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true; }

owner_alive() { # pid start
  [[ -n $1 && -d /proc/$1 ]] && [[ $(proc_start "$1") == "$2" ]]
}

# wait_for WHAT TIMEOUT CMD...: poll CMD every 0.5 s.
wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      log "$what: not ready after ${timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

# start NAME CMD...: start CMD in the node's network namespace, in its own session, logging to
# DIR/logs/NAME.log; the PID (nsenter execs, so it is CMD's) goes to DIR/run/NAME.pid.
start() {
  local name=$1
  shift
  # fd 9 (the machine lock) must not outlive `up` in the daemons.
  setsid "${NSENTER[@]}" "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$DIR/run/$name.pid"
  # The command line, for `start-control-plane` (a restart after `stop-control-plane`).
  printf '%q ' "$@" >"$DIR/run/$name.cmd"
}

alive() { # PID -> success while it runs (a zombie waiting for init to reap it is dead)
  [[ -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

running() { # NAME -> success while its process lives
  local pid
  pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
  alive "$pid"
}

check_running() { # NAME -> die with its log tail if it has exited
  running "$1" && return 0
  log "$1 exited; last lines of $DIR/logs/$1.log:"
  tail -n 25 "$DIR/logs/$1.log" >&2 || true
  return 1
}

# stop NAME GRACE: SIGTERM, then SIGKILL after GRACE seconds. Only a process whose command line
# names DIR (every daemon here has a path under DIR among its arguments) is signalled, so a reused
# PID is left alone.
stop() {
  local name=$1 grace=$2 pid i
  pid=$(cat "$DIR/run/$name.pid" 2>/dev/null) || return 0
  if [[ -d /proc/$pid ]]; then
    if tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -F -- "$DIR" >/dev/null; then
      ((grace == 0)) || kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < grace * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
      done
    fi
  fi
  rm -f "$DIR/run/$name.pid"
}

kubeconfig() { # FILE USER-CERT-NAME SERVER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: eso-e2e
  cluster:
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
    server: $3
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: eso-e2e
  context:
    cluster: eso-e2e
    user: $2
current-context: eso-e2e
EOF
  chmod 0600 "$1"
}

# cert DIR/NAME CA-PREFIX CN O SANS USAGE: an RSA key and certificate signed by CA-PREFIX.{crt,key}.
cert() {
  local out=$1 ca=$2 cn=$3 o=$4 sans=$5 usage=$6 subj ext
  subj="/CN=$cn"
  [[ -n $o ]] && subj="/O=$o$subj"
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$out.key" -subj "$subj" -out "$out.csr" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 30 \
    -sha256 -extfile "$ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$ext"
  chmod 0600 "$out.key"
}

ca() { # PREFIX CN
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$1.key" -subj "/CN=$2" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment" \
    -out "$1.crt" 2>/dev/null
  chmod 0600 "$1.key"
}

api() { # METHOD PATH [CURL-ARGS...]: call the API server as the admin
  local method=$1 path=$2
  shift 2
  curl -sf --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    -X "$method" "https://$NODE_IP:6443$path" "$@"
}

default_sa_has_token() {
  api GET /api/v1/namespaces/default/serviceaccounts/default | grep '"secrets"' >/dev/null
}

node_ready() {
  api GET "/api/v1/nodes/$NODE_NAME" | tr -d ' \n' \
    | grep '"type":"Ready","status":"True"' >/dev/null
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------

cgroup_dirs() { # every cgroup directory of ours, deepest first
  local h
  for h in /sys/fs/cgroup/*/"$CGROUP_ROOT" /sys/fs/cgroup/"$CGROUP_ROOT"; do
    [[ -d $h ]] && find "$h" -depth -type d
  done
  return 0
}

kill_cgroup_procs() {
  local round d pids
  for ((round = 0; round < 50; round++)); do
    pids=$(for d in $(cgroup_dirs); do cat "$d/cgroup.procs" 2>/dev/null; done | sort -u)
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  log "WARNING: processes left in cgroup $CGROUP_ROOT: $(echo $pids)"
}

shim_pids() { # containerd shims started by our containerd (they outlive it)
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -- "containerd-shim.* -address $SOCK " >/dev/null && echo "${p#/proc/}"
  done
  return 0
}

our_mounts() { # mount points under DIR (or DIR itself), deepest first
  awk '{ print $5 }' /proc/self/mountinfo | while read -r m; do
    m=$(printf '%b' "${m//\\/\\0}") # mountinfo escapes space, tab, newline, backslash in octal
    [[ $m == "$DIR" || $m == "$DIR"/* ]] && echo "$m"
  done | sort -ru
}

unmount_all() {
  local round m left
  for ((round = 0; round < 5; round++)); do
    left=$(our_mounts)
    [[ -z $left ]] && return 0
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done <<<"$left"
  done
  left=$(our_mounts)
  [[ -z $left ]] || log "WARNING: still mounted: $left"
}

do_down() {
  local pid id f uid sock d k v i
  set +e # best effort: every step runs whatever failed before it
  [[ -d $DIR ]] || { log "$DIR does not exist: nothing to tear down there"; }

  # Nothing here needs a graceful stop (all state goes, and the API server takes seconds to
  # shut down gracefully): SIGKILL (grace 0).
  # 1. kubelet first (it would restart what we kill), then every pod process (our cgroups).
  stop kubelet 0
  kill_cgroup_procs
  # 2. Shims: note their sockets (under the fixed /run/containerd/s), kill them, remove the sockets.
  for f in "$DIR"/run/containerd/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f $f ]] || continue
    sock=$(sed 's#^unix://##' "$f")
    [[ $sock == /run/containerd/s/* ]] && echo "$sock" >>"$STATE/shim-sockets" 2>/dev/null
  done
  stop containerd 0
  for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do [[ -z $(shim_pids) ]] && break; sleep 0.1; done
  if [[ -f $STATE/shim-sockets ]]; then
    sort -u "$STATE/shim-sockets" | while read -r sock; do rm -f "$sock"; done
  fi
  # 3. The control plane.
  stop kube-proxy 0
  stop kube-scheduler 0
  stop kube-controller-manager 0
  stop kube-apiserver 0
  stop etcd 0
  kill_cgroup_procs

  # 4. Files kubelet and containerd wrote outside DIR: logs of our pods, CNI result caches.
  if [[ -d $DIR/var/lib/kubelet/pods ]]; then
    for d in "$DIR"/var/lib/kubelet/pods/*/; do
      [[ -d $d ]] || continue
      uid=$(basename "$d")
      rm -rf /var/log/pods/*_"$uid"
    done
  fi
  # A pod already deleted (its kubelet dir is gone, e.g. a finished Helm hook Job's pod) keeps
  # its log dir until kubelet's garbage collection: every pod this kubelet ran is named (UID) in
  # its log.
  for d in /var/log/pods/*_*/; do
    [[ -d $d ]] || continue
    uid=${d%/}
    uid=${uid##*_}
    [[ ${#uid} -eq 36 ]] && grep -qF "$uid" "$DIR/logs/kubelet.log" 2>/dev/null && rm -rf "$d"
  done
  # A pod the kubelet already removed (its dir under DIR is gone) may still have its logs, until
  # container GC: found by the container ID in the link's name, a container of our containerd.
  for f in /var/log/containers/*.log; do
    [[ -L $f ]] || continue
    id=${f%.log}
    id=${id##*-}
    if [[ $id =~ ^[0-9a-f]{64}$ && -d $DIR/var/lib/containerd/io.containerd.grpc.v1.cri/containers/$id ]]; then
      d=$(readlink "$f")
      d=${d%/*/*} # /var/log/pods/NS_NAME_UID/CONTAINER/N.log -> /var/log/pods/NS_NAME_UID
      [[ $d == /var/log/pods/?* ]] && rm -rf "$d"
    fi
  done
  for f in /var/log/containers/*.log; do
    [[ -L $f && ! -e $f ]] && rm -f "$f" # a link into a pod log dir just removed
  done
  if [[ -d $DIR/run/containerd/io.containerd.grpc.v1.cri/sandboxes ]]; then
    for d in "$DIR"/run/containerd/io.containerd.grpc.v1.cri/sandboxes/*/; do
      [[ -d $d ]] || continue
      id=$(basename "$d")
      rm -f /var/lib/cni/results/"$CNI_NETWORK-$id"-* /var/lib/cni/results/cni-loopback-"$id"-*
    done
  fi
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* # results of sandboxes whose state dir was lost

  # 5. Mounts under DIR (container rootfs, shm, pod netns files, secret volumes).
  unmount_all

  # 6. The network namespace (with it: the veth pair, the CNI bridge, every iptables chain
  #    kube-proxy, kubelet and portmap made there).
  if [[ -e /run/netns/$NETNS ]]; then
    ip netns delete "$NETNS" 2>/dev/null || true
  fi
  ip link show "$VETH_HOST" >/dev/null 2>&1 && ip link delete "$VETH_HOST" 2>/dev/null || true

  # 7. Our cgroups.
  for ((i = 0; i < 50; i++)); do
    for d in $(cgroup_dirs); do rmdir "$d" 2>/dev/null || true; done
    [[ -z $(cgroup_dirs) ]] && break
    kill_cgroup_procs
    sleep 0.1
  done
  [[ -z $(cgroup_dirs) ]] || log "WARNING: cgroups left: $(cgroup_dirs | tr '\n' ' ')"

  # 8. Machine-wide sysctls back to what they were.
  if [[ -f $STATE/sysctl.saved ]]; then
    while IFS='=' read -r k v; do
      [[ -n $k ]] && sysctl -qw "$k=$v" >/dev/null 2>&1 || log "WARNING: could not restore $k=$v"
    done <"$STATE/sysctl.saved"
    rm -f "$STATE/sysctl.saved"
  fi

  # 9. Host directories that did not exist before `up`, when empty now.
  if [[ -f $STATE/absent-dirs ]]; then
    while read -r d; do
      [[ -d $d ]] || continue
      if [[ $d == /run/netns ]]; then
        [[ -z $(ls -A /run/netns) ]] || continue
        while mountpoint -q /run/netns; do umount /run/netns 2>/dev/null || umount -l /run/netns || break; done
      fi
      if [[ $d == /var/lib/kubelet/device-plugins ]]; then
        for f in "${DEVICE_PLUGIN_FILES[@]}"; do rm -f "$d/$f"; done
      fi
      rmdir "$d" 2>/dev/null || true
    done <"$STATE/absent-dirs"
  fi
  set -e
  return 0
}

verify_clean() { # WARNING lines for anything of this cluster still on the machine
  local p cmd
  [[ -e /run/netns/$NETNS ]] && log "WARNING: network namespace $NETNS still exists"
  ip link show "$VETH_HOST" >/dev/null 2>&1 && log "WARNING: link $VETH_HOST still exists"
  [[ -n $(our_mounts) ]] && log "WARNING: still mounted: $(our_mounts | tr '\n' ' ')"
  [[ -n $(cgroup_dirs) ]] && log "WARNING: cgroups left: $(cgroup_dirs | tr '\n' ' ')"
  [[ -n $(shim_pids) ]] && log "WARNING: containerd shims left: $(shim_pids | tr '\n' ' ')"
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    if [[ $cmd == *"$DIR"* && $cmd != *e2e-cluster.sh* ]]; then
      log "WARNING: process left: ${p#/proc/} $cmd"
    fi
  done
  return 0
}

release_active() { # drop the machine-wide record when it names DIR
  if [[ -f $ACTIVE ]] && [[ $(sed -n 's/^dir=//p' "$ACTIVE") == "$DIR" ]]; then
    rm -f "$ACTIVE"
  fi
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------

take_machine() { # wait for / clean up another cluster, then record ours as the active one
  local waited=0 limit=${ESO_E2E_WAIT:-1800} odir opid ostart owner start
  owner=${ESO_E2E_OWNER_PID:-$PPID}
  start=$(proc_start "$owner")
  while :; do
    exec 9>"$LOCK"
    flock 9
    if [[ -f $ACTIVE ]]; then
      odir=$(sed -n 's/^dir=//p' "$ACTIVE")
      opid=$(sed -n 's/^owner=//p' "$ACTIVE")
      ostart=$(sed -n 's/^owner_start=//p' "$ACTIVE")
      if [[ $odir == "$DIR" ]]; then
        return 0 # claimed already
      fi
      if [[ $opid != "$owner" ]] && owner_alive "$opid" "$ostart"; then
        exec 9>&-
        ((waited == 0)) && log "another e2e cluster ($odir, owner PID $opid) is up: waiting up to ${limit}s"
        ((waited >= limit)) && die "another e2e cluster ($odir, owner PID $opid) is still up after ${limit}s"
        sleep 5
        waited=$((waited + 5))
        continue
      fi
      log "tearing down the stale e2e cluster $odir (its owner PID $opid is gone or is us)"
      (DIR=$odir PKI=$odir/etc/kubernetes/pki SOCK=$odir/run/containerd/containerd.sock STATE=$odir/state do_down)
      rm -f "$ACTIVE"
    fi
    # Not recorded here, but there: a cluster of another cache or chroot (`make fresh-check`
    # shares the network, not the cache), or a leftover whose record and guard are both gone.
    if [[ -e /run/netns/$NETNS ]] || ip link show "$VETH_HOST" >/dev/null 2>&1; then
      exec 9>&-
      ((waited == 0)) && log "link $VETH_HOST exists (an e2e cluster of another cache or chroot?): waiting up to ${limit}s"
      ((waited >= limit)) && die "link $VETH_HOST still exists after ${limit}s and no cluster of $CACHE is recorded: if it is a leftover, \`ip netns delete $NETNS; ip link delete $VETH_HOST\`"
      sleep 5
      waited=$((waited + 5))
      continue
    fi
    printf 'dir=%s\nowner=%s\nowner_start=%s\n' "$DIR" "$owner" "$start" >"$ACTIVE"
    return 0
  done
}

check_binaries() {
  local b
  for b in etcd-3.5 kube-apiserver-stock kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run scripts/install-test-deps.sh (make test-deps)"
  done
  [[ -f $CACHE/images/pause.tar ]] || die "$CACHE/images/pause.tar missing: run scripts/install-test-deps.sh"
  for b in containerd containerd-shim-runc-v2 runc ctr iptables conntrack ip nsenter setsid curl openssl; do
    command -v "$b" >/dev/null || die "$b not found: run scripts/install-test-deps.sh"
  done
  for b in bridge host-local loopback portmap; do
    [[ -x /usr/lib/cni/$b ]] || die "/usr/lib/cni/$b missing: apt-get install containernetworking-plugins"
  done
  [[ $(id -u) -eq 0 ]] || die "must run as root"
}

check_subnet() {
  # The addresses must be free on the host: no route into 10.203.0.0/16 but the default one.
  if ip -4 route show root "$SUBNET_CHECK" | grep . >/dev/null \
    || ip -4 route show match "$SUBNET_CHECK" | grep -v '^default' | grep . >/dev/null \
    || ip -4 -o addr show | grep ' 10\.203\.' >/dev/null; then
    die "$SUBNET_CHECK is in use on this machine (ip route / ip addr): the e2e cluster needs it"
  fi
}

write_pki() {
  mkdir -p "$PKI/etcd"
  ca "$PKI/ca" kubernetes
  ca "$PKI/etcd/ca" etcd-ca
  local etcd_sans="DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$NODE_IP,IP:::1"
  cert "$PKI/etcd/server" "$PKI/etcd/ca" "$NODE_NAME" "" "$etcd_sans" serverAuth,clientAuth
  cert "$PKI/etcd/peer" "$PKI/etcd/ca" "$NODE_NAME" "" "$etcd_sans" serverAuth,clientAuth
  cert "$PKI/etcd/healthcheck-client" "$PKI/etcd/ca" kube-etcd-healthcheck-client system:masters "" clientAuth
  cert "$PKI/apiserver-etcd-client" "$PKI/etcd/ca" kube-apiserver-etcd-client system:masters "" clientAuth
  cert "$PKI/apiserver" "$PKI/ca" kube-apiserver "" \
    "DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP,IP:127.0.0.1" \
    serverAuth
  cert "$PKI/apiserver-kubelet-client" "$PKI/ca" kube-apiserver-kubelet-client system:masters "" clientAuth
  cert "$PKI/admin" "$PKI/ca" kubernetes-admin system:masters "" clientAuth
  cert "$PKI/controller-manager" "$PKI/ca" system:kube-controller-manager "" "" clientAuth
  cert "$PKI/scheduler" "$PKI/ca" system:kube-scheduler "" "" clientAuth
  cert "$PKI/kubelet" "$PKI/ca" "system:node:$NODE_NAME" system:nodes "" clientAuth
  cert "$PKI/kube-proxy" "$PKI/ca" system:kube-proxy "" "" clientAuth
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 0600 "$PKI/sa.key"
  rm -f "$PKI"/*.srl "$PKI"/etcd/*.srl
  local k=$DIR/etc/kubernetes server=https://$NODE_IP:6443
  kubeconfig "$k/admin.conf" admin "$server"
  kubeconfig "$k/controller-manager.conf" controller-manager "$server"
  kubeconfig "$k/scheduler.conf" scheduler "$server"
  kubeconfig "$k/kubelet.conf" kubelet "$server"
  kubeconfig "$k/kube-proxy.conf" kube-proxy "$server"
}

write_configs() {
  mkdir -p "$DIR/etc/containerd" "$DIR/etc/cni/net.d" "$DIR/var/lib/kubelet" "$DIR/var/lib/cni/networks"
  cat >"$DIR/etc/containerd/config.toml" <<EOF
version = 2
root = "$DIR/var/lib/containerd"
state = "$DIR/run/containerd"
oom_score = 0
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/etc/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$DIR/etc/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/var/lib/cni/networks",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$POD_GW" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  printf '# resolv.conf for the pods of the e2e cluster (it has no DNS)\nnameserver 127.0.0.1\n' \
    >"$DIR/etc/resolv.conf"
  cat >"$DIR/etc/kubernetes/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $PKI/ca.crt }
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
cgroupsPerQOS: true
resolvConf: $DIR/etc/resolv.conf
failSwapOn: false
volumePluginDir: $DIR/var/lib/kubelet/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
EOF
  cat >"$DIR/etc/kubernetes/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
clientConnection:
  kubeconfig: $DIR/etc/kubernetes/kube-proxy.conf
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

setup_network() {
  ip netns add "$NETNS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NODE" netns "$NETNS"
  ip addr add "$HOST_IP/24" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  "${NSENTER[@]}" ip link set lo up
  "${NSENTER[@]}" ip addr add "$NODE_IP/24" dev "$VETH_NODE"
  "${NSENTER[@]}" ip link set "$VETH_NODE" up
  # No default route: hostNetwork pods reach ClusterIPs before kube-proxy's rules apply.
  "${NSENTER[@]}" ip route add "$SERVICE_CIDR" dev "$VETH_NODE"
  # Both are per network namespace on this kernel: set inside only.
  "${NSENTER[@]}" sysctl -qw net.ipv4.ip_forward=1
  "${NSENTER[@]}" sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The host reaches pods and ClusterIPs through the node (these routes go with the veth), and
  # pods reach servers a test runs on HOST_IP (e.g. S3).
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$VETH_HOST"
  ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$VETH_HOST"
}

setup_cgroups() { # kubelet requires its --cgroup-root to exist in every hierarchy
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f $h/cgroup.procs ]] || continue
    mkdir -p "$h$CGROUP_ROOT"
    if [[ -f $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
    fi
  done
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then # pure cgroup v2
    mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT"
  fi
}

do_up() {
  local t0 d k
  t0=$(date +%s)
  check_binaries
  take_machine
  # From here on every failure tears down what was made.
  trap 'rc=$?; if ((rc != 0)); then log "up failed: tearing down"; do_down; release_active; fi; exit $rc' EXIT
  check_subnet

  [[ ! -e $DIR/var/lib/etcd ]] || die "$DIR holds a previous cluster: use a fresh directory"
  mkdir -p "$DIR" "$DIR/logs" "$DIR/run" "$STATE"
  : >"$STATE/absent-dirs"
  for d in "${HOST_DIRS[@]}"; do [[ -e $d ]] || echo "$d" >>"$STATE/absent-dirs"; done
  if [[ ! -f $STATE/sysctl.saved ]]; then
    for k in "${HOST_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$STATE/sysctl.saved.tmp"
    mv "$STATE/sysctl.saved.tmp" "$STATE/sysctl.saved"
  fi

  write_pki
  write_configs
  setup_network
  setup_cgroups

  local e=$PKI/etcd
  start etcd "$BIN/etcd-3.5" --name "$NODE_NAME" --data-dir "$DIR/var/lib/etcd" \
    --listen-client-urls "https://127.0.0.1:2379,https://$NODE_IP:2379" \
    --advertise-client-urls "https://$NODE_IP:2379" \
    --listen-peer-urls "https://$NODE_IP:2380" --initial-advertise-peer-urls "https://$NODE_IP:2380" \
    --initial-cluster "$NODE_NAME=https://$NODE_IP:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --cert-file "$e/server.crt" --key-file "$e/server.key" --client-cert-auth --trusted-ca-file "$e/ca.crt" \
    --peer-cert-file "$e/peer.crt" --peer-key-file "$e/peer.key" --peer-client-cert-auth \
    --peer-trusted-ca-file "$e/ca.crt" --snapshot-count 10000
  start containerd containerd --config "$DIR/etc/containerd/config.toml"
  wait_for "etcd" 60 "${NSENTER[@]}" curl -sf --max-time 2 http://127.0.0.1:2381/health || { check_running etcd; false; }

  start kube-apiserver "$BIN/kube-apiserver-stock" --advertise-address "$NODE_IP" --bind-address "$NODE_IP" \
    --secure-port 6443 --insecure-port 0 --allow-privileged=true --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" --kubelet-preferred-address-types InternalIP \
    --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$e/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --cert-dir "$DIR/run/kube-apiserver-certs" --profiling=false
  wait_for "kube-apiserver" 120 api GET /readyz || { check_running kube-apiserver; false; }

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/etc/kubernetes/controller-manager.conf" \
    --authentication-kubeconfig "$DIR/etc/kubernetes/controller-manager.conf" \
    --authorization-kubeconfig "$DIR/etc/kubernetes/controller-manager.conf" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers '*,bootstrapsigner,tokencleaner' --cert-dir "$DIR/run/kube-controller-manager-certs" \
    --flex-volume-plugin-dir "$DIR/var/lib/kubelet/volume-plugins" \
    --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$DIR/etc/kubernetes/scheduler.conf" \
    --authentication-kubeconfig "$DIR/etc/kubernetes/scheduler.conf" \
    --authorization-kubeconfig "$DIR/etc/kubernetes/scheduler.conf" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false --cert-dir "$DIR/run/kube-scheduler-certs" \
    --profiling=false
  wait_for "containerd" 60 test -S "$SOCK" || { check_running containerd; false; }
  ctr -a "$SOCK" -n k8s.io images import "$CACHE/images/pause.tar" >/dev/null

  start kubelet "$BIN/kubelet" --config "$DIR/etc/kubernetes/kubelet.yaml" \
    --kubeconfig "$DIR/etc/kubernetes/kubelet.conf" --root-dir "$DIR/var/lib/kubelet" \
    --container-runtime remote --container-runtime-endpoint "unix://$SOCK" \
    --pod-infra-container-image "$PAUSE_IMAGE" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" \
    --register-with-taints node-role.kubernetes.io/master:NoSchedule \
    --cert-dir "$DIR/var/lib/kubelet/pki"
  start kube-proxy "$BIN/kube-proxy" --config "$DIR/etc/kubernetes/kube-proxy.yaml"

  # kubeadm's mark-control-plane labels (kubelet may not set node-role labels itself).
  wait_for "node registration" 120 api GET "/api/v1/nodes/$NODE_NAME" || { check_running kubelet; false; }
  api PATCH "/api/v1/nodes/$NODE_NAME" -H 'Content-Type: application/merge-patch+json' \
    -d '{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":"","node-role.kubernetes.io/master":""}}}' >/dev/null
  wait_for "node Ready" 180 node_ready || { check_running kubelet; check_running containerd; false; }
  # ServiceAccount tokens (1.20: Secret-based) for the default namespace.
  wait_for "default ServiceAccount token" 120 default_sa_has_token \
    || { check_running kube-controller-manager; false; }
  for k in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    check_running "$k"
  done

  trap - EXIT
  log "up in $(($(date +%s) - t0))s"
  cat <<EOF
KUBECONFIG=$DIR/etc/kubernetes/admin.conf
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
HOST_IP=$HOST_IP
NETNS=$NETNS
ETCD_ENDPOINT=https://127.0.0.1:2379
ETCD_PKI=$PKI/etcd
CONTAINERD_SOCK=$SOCK
EOF
}

case $CMD in
claim)
  check_binaries
  take_machine
  ;;
up) do_up ;;
down)
  exec 9>"$LOCK"
  flock 9
  t0=$(date +%s)
  do_down
  verify_clean
  [[ ${ESO_E2E_KEEP_CLAIM:-} == 1 ]] || release_active
  log "down in $(($(date +%s) - t0))s"
  ;;
release)
  exec 9>"$LOCK"
  flock 9
  release_active
  ;;
guard)
  # Started by a test with its stdin a pipe from the test process: when the pipe closes (the
  # handle is dropped, or the test process dies in any way), tear down. Ctrl-C reaches the whole
  # process group: ignore it here, the closing pipe follows.
  # A clean teardown also removes DIR (unless ESO_KEEP_TESTENV is set), as the test process that
  # would have removed it may be gone.
  guard_down() {
    local out rc=0
    out=$(ESO_E2E_KEEP_CLAIM=0 "$0" down "$DIR" 2>&1) || rc=$?
    printf '%s\n' "$out" >&2
    if [[ $rc -eq 0 && $out != *WARNING* && -z ${ESO_KEEP_TESTENV:-} && -z $(our_mounts) ]]; then
      rm -rf --one-file-system "$DIR"
    fi
    exit "$rc"
  }
  trap '' INT HUP
  trap guard_down TERM
  while read -r _; do :; done
  guard_down
  ;;
exec) exec "${NSENTER[@]}" "$@" ;;
stop-control-plane)
  # As kubelet does for a static pod whose manifest is moved away: SIGTERM, a grace period
  # (kube-apiserver 1.20 stops listening at once but lingers on its open watches: 15 s, not
  # kubelet's 30, then SIGKILL).
  stop kube-apiserver 15
  stop etcd 30
  log "kube-apiserver and etcd stopped"
  ;;
start-control-plane)
  t0=$(date +%s)
  for k in etcd kube-apiserver; do
    [[ -f $DIR/run/$k.cmd ]] || die "$DIR/run/$k.cmd missing: was the cluster started with \`up\`?"
    ! running "$k" || die "$k is running: stop-control-plane first"
  done
  eval "start etcd $(cat "$DIR/run/etcd.cmd")"
  wait_for "etcd" 60 "${NSENTER[@]}" curl -sf --max-time 2 http://127.0.0.1:2381/health || { check_running etcd; exit 1; }
  eval "start kube-apiserver $(cat "$DIR/run/kube-apiserver.cmd")"
  wait_for "kube-apiserver" 120 api GET /readyz || { check_running kube-apiserver; exit 1; }
  log "etcd and kube-apiserver started in $(($(date +%s) - t0))s"
  ;;
import)
  [[ $# -eq 1 && -f $1 ]] || die "usage: $0 import DIR FILE.tar"
  ctr -a "$SOCK" -n k8s.io images import "$1"
  ;;
*) usage ;;
esac
