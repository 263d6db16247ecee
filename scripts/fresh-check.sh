#!/usr/bin/env bash
# `make fresh-check`: the README's two commands (`make demo`, then `make test`) in a clean Debian
# bookworm root, as on a fresh machine of this project's kind where nothing was installed by hand.
#
# A green `make test` on a developer's machine proves nothing about a fresh one: packages installed
# by hand (or by another project) hide what our scripts forget to install. This check debootstraps
# a minimal bookworm (cached), gives it only what every fresh machine of this kind has and the
# project may assume, clones the committed HEAD into it and runs the two commands there.
#
# What the clean root gets, and why:
#   - debootstrap --variant=minbase bookworm: Debian's essential packages and apt;
#   - git, gcc, make, libc6-dev, python3: on every machine of this kind (the machine description
#     lists "gcc for crates that build C", CPython 3.11 and git), and the README assumes them;
#   - ca-certificates plus this machine's own extra CAs (/usr/local/share/ca-certificates) and the
#     CA environment variables: every machine of this kind reaches the registries through the same
#     TLS egress, so without its CA nothing downloads at all;
#   - the Rust toolchain (rustup's ~/.rustup and ~/.cargo/bin), bind-mounted read-only: the one
#     toolchain of the machine, which no registry here can supply;
#   - Node.js and npm (from the machine, read-only): every machine of this kind has them, and the
#     npm registry is one of its registries;
#   - the machine's Debian apt source entries, its apt Acquire:: settings (the archive it reaches
#     is a frozen snapshot: Check-Valid-Until is off on every machine of this kind) and DNS
#     settings (copied).
# Everything else (protoc, etcd, Go, containerd, ...) must come from the project's own scripts.
#
#   scripts/fresh-check.sh            run the check; the run dir is removed afterwards
#   scripts/fresh-check.sh --keep     keep the run dir (its root fs and logs) for inspection
#   scripts/fresh-check.sh --demo-only    only `make demo` (a quicker look at the build prerequisites)
#
# Cached in $ESO_CACHE/fresh-root (default ~/.cache/etcd-snapshot-operator/fresh-root): base/ (the
# debootstrap result, reused while this script's recipe is unchanged) and run/ (this run's copy).
# Mounts live in a private mount namespace (unshare), so they vanish with it, also on failure; the
# run's processes live in a private PID namespace and die with it.
set -euo pipefail

keep=0
demo_only=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    --demo-only) demo_only=1 ;;
    -h | --help)
      sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "fresh-check: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

log() { printf '[fresh-check] %s\n' "$*" >&2; }
die() {
  printf '[fresh-check] error: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount namespaces)"

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
top=$cache/fresh-root
base=$top/base
run=$top/run
mkdir -p "$top"

# One check at a time on a machine.
exec 9>"$top/lock"
flock -n 9 || die "another fresh-check is running ($top/lock)"

INCLUDE=ca-certificates,python3,git,gcc,make,libc6-dev
SUITE=bookworm
RECIPE=$( { echo "$INCLUDE $SUITE"; sed -n '/^# --- base recipe ---$/,/^# --- end of base recipe ---$/p' "$0"; } | sha256sum | cut -d' ' -f1)

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(command -v cargo || true)")
[ -x "$cargo_bin/cargo" ] || die "no cargo on PATH (the Rust toolchain is bind-mounted from this machine)"
[ -d "$rustup_home/toolchains" ] || die "no rustup toolchains in $rustup_home"
node_bin=$(command -v node || true)
npm_dir=/usr/lib/node_modules/npm

# A mirror for debootstrap: the machine's own Debian entry (never a host name written here).
debian_mirror() {
  python3 - <<'PY'
import glob, re, sys
def stanzas(text):
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        yield fields
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for f in stanzas(open(path).read()):
        if "deb" in f.get("types", "").split() and "bookworm" in f.get("suites", "").split():
            print(f["uris"].split()[0]); sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        parts = re.sub(r"\[[^]]*\]", "", line).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
            print(parts[1]); sys.exit(0)
sys.exit("no Debian bookworm apt entry on this machine")
PY
}

# Refuses to delete a directory that has anything mounted under it in this namespace.
remove_tree() {
  local dir=$1
  [ -e "$dir" ] || return 0
  if findmnt -rn -o TARGET | grep "^$dir\(/\|$\)" >/dev/null; then
    die "$dir has mounts under it; not removing it (umount them first)"
  fi
  rm -rf --one-file-system "$dir"
}

# --- base recipe ---
if [ ! -f "$base/.eso-recipe" ] || [ "$(cat "$base/.eso-recipe")" != "$RECIPE" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "apt-get install debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends debootstrap >/dev/null ||
      { apt-get -o DPkg::Lock::Timeout=900 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends debootstrap >/dev/null; }
  fi
  mirror=$(debian_mirror)
  log "debootstrap --variant=minbase --include=$INCLUDE $SUITE (from $mirror; cached afterwards)"
  t0=$(date +%s)
  remove_tree "$base.tmp"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$base.tmp" "$mirror" >"$top/debootstrap.log" 2>&1 ||
    { tail -n 20 "$top/debootstrap.log" >&2; die "debootstrap failed (log: $top/debootstrap.log)"; }
  # The machine's Debian apt entries (the bookworm ones: the clean root is a bookworm machine).
  rm -f "$base.tmp/etc/apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    grep -q bookworm "$f" && grep -q -i debian "$f" || continue
    grep -q -i 'nodesource\|google' "$f" && continue
    mkdir -p "$base.tmp/$(dirname "$f")"
    cp "$f" "$base.tmp/$f"
  done
  mkdir -p "$base.tmp/opt/rustup" "$base.tmp/opt/cargo-bin" "$base.tmp/usr/lib/node_modules/npm"
  echo "$RECIPE" >"$base.tmp/.eso-recipe"
  remove_tree "$base"
  mv "$base.tmp" "$base"
  log "base ready in $(($(date +%s) - t0))s"
fi
# --- end of base recipe ---

remove_tree "$run"
log "copying the base into $run"
root=$run/root-fs
mkdir -p "$run"
cp -a "$base" "$root"

# Machine identity a fresh machine of this kind has: its extra CAs, DNS settings, host name.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
# apt settings of the machine that concern how it reaches the archive (e.g. its frozen mirror's
# Check-Valid-Until), not package hooks.
for f in /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
done
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hostname "$root/etc/hostname" 2>/dev/null || true
chroot "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the clean root"

# The project: a clone of the committed HEAD (what CI would see), not the working tree.
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  log "note: uncommitted changes in $repo are not part of the check (it clones HEAD)"
fi
head=$(git -C "$repo" rev-parse HEAD)
git clone -q --no-hardlinks "$repo" "$root/root/etcd-snapshot-operator"
git -C "$root/root/etcd-snapshot-operator" checkout -q "$head"
log "checking $head in a clean $SUITE root"

commands='make demo'
[ "$demo_only" = 1 ] || commands='make demo && make test'

inner=$(
  cat <<'INNER'
set -euo pipefail
root=$1 rustup_home=$2 cargo_bin=$3 node_bin=$4 npm_dir=$5 demo_only=$6
# The root must be a mount point, as / is on a machine: kubelet looks its root directory's mount
# up in /proc/self/mountinfo and exits with "cannot find mount point" otherwise (recursive, so the
# new /proc stays).
mount --rbind "$root" "$root"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount --bind "$rustup_home" "$root/opt/rustup"
mount -o remount,bind,ro "$root/opt/rustup"
mount --bind "$cargo_bin" "$root/opt/cargo-bin"
mount -o remount,bind,ro "$root/opt/cargo-bin"
if [ -n "$node_bin" ] && [ -d "$npm_dir" ]; then
  touch "$root/usr/bin/node"
  mount --bind "$node_bin" "$root/usr/bin/node"
  mount -o remount,bind,ro "$root/usr/bin/node"
  mount --bind "$npm_dir" "$root/usr/lib/node_modules/npm"
  mount -o remount,bind,ro "$root/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
fi
status=0
chroot "$root" /usr/bin/env -i \
  HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8 \
  PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo RUSTUP_AUTO_INSTALL=0 \
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt SSL_CERT_DIR=/etc/ssl/certs \
  CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
  DEMO_ONLY="$demo_only" \
  /bin/bash -c '
    set -uo pipefail
    cd /root/etcd-snapshot-operator
    t0=$(date +%s)
    make demo; rc=$?
    t1=$(date +%s)
    echo "[fresh-check] make demo: exit $rc, $((t1 - t0))s"
    [ "$rc" = 0 ] || exit "$rc"
    [ "$DEMO_ONLY" = 1 ] && exit 0
    make test; rc=$?
    t2=$(date +%s)
    echo "[fresh-check] make test: exit $rc, $((t2 - t1))s"
    exit "$rc"
  ' || status=$?
# Everything this run started dies with the PID namespace; the mounts go with the mount namespace.
umount -R "$root/dev" "$root/sys" "$root/run" 2>/dev/null || true
exit "$status"
INNER
)

t0=$(date +%s)
status=0
unshare --mount --propagation private --pid --fork --mount-proc="$root/proc" \
  bash -c "$inner" fresh-check "$root" "$rustup_home" "$cargo_bin" "$node_bin" "$npm_dir" "$demo_only" \
  2>&1 | tee "$top/run.log" || status=$?
elapsed=$(($(date +%s) - t0))

if findmnt -rn -o TARGET | grep "^$root\(/\|$\)" >/dev/null; then
  log "warning: mounts left under $root in this namespace; not removing it"
  keep=1
fi
if [ "$keep" = 1 ]; then
  log "kept $root (log: $top/run.log)"
else
  cp "$top/run.log" "$top/last-run.log"
  remove_tree "$run"
fi
if [ "$status" = 0 ]; then
  log "PASSED: '$commands' in a clean $SUITE root, ${elapsed}s in all (log: $top/last-run.log)"
else
  log "FAILED (exit $status) after ${elapsed}s: see $top/run.log"
fi
exit "$status"
