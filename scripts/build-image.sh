#!/usr/bin/env bash
# Builds the operator image without a registry or a container engine: assembles its root file system
# and packs it with scripts/docker-archive.sh into a docker-archive tar (manifest.json,
# repositories, the config JSON and one layer.tar, named by their sha256), which
# `ctr images import`, `docker load` and `podman load` accept.
#
# The image's root file system (one layer):
#   /usr/local/bin/etcd-snapshot      the binary given with --bin
#   /usr/local/bin/etcdutl            the binary given with --etcdutl (`etcd-snapshot restore/verify`)
#   the shared libraries `ldd` lists for both, at the paths it prints (libc, libm, libgcc_s, ld.so)
#   /etc/ssl/certs/ca-certificates.crt   the machine's CA bundle (S3 over TLS with public CAs)
#   /etc/passwd, /etc/group, /etc/nsswitch.conf   root and nonroot (65532)
#   /tmp (mode 1777)                  the chart mounts an emptyDir over it (read-only root fs)
# Config: ENTRYPOINT ["/usr/local/bin/etcd-snapshot"], CMD ["--help"], USER 65532:65532 (the chart
# runs the agent as root), PATH in Env. Reproducible: fixed mtimes (SOURCE_DATE_EPOCH, default 0),
# sorted entries, numeric root ownership, fixed modes: the same inputs give the same digests.
#
#   scripts/build-image.sh [--bin FILE] [--etcdutl FILE] [--out DIR] [--repository NAME] [--tag TAG]
#   scripts/build-image.sh --rootfs DIR [--bin FILE] [--etcdutl FILE]   only assemble the root fs
#                                                                        (the Dockerfile does this)
# Defaults: --bin $CARGO_TARGET_DIR/release/etcd-snapshot (`make image` builds it first),
# --etcdutl $ESO_CACHE/bin/etcdutl-3.5.30, --out $CARGO_TARGET_DIR/image, --repository the chart's
# image.repository, --tag Cargo.toml's version. Prints the archive's path on stdout.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
target=${CARGO_TARGET_DIR:-$here/target}

BIN=$target/release/etcd-snapshot
# Where etcdutl comes from: one variable (the Dockerfile's ETCD_VERSION must name the same version;
# tests/it/image.rs checks it).
ETCDUTL=$cache/bin/etcdutl-3.5.30
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
OUT=$target/image
ROOTFS_ONLY=
REPOSITORY=
TAG=
EPOCH=${SOURCE_DATE_EPOCH:-0}
# The image config; the Dockerfile's final stage says the same (tests/it/image.rs checks it).
IMAGE_USER=65532:65532
ENTRYPOINT=/usr/local/bin/etcd-snapshot

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --etcdutl) ETCDUTL=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rootfs) ROOTFS_ONLY=$2; shift 2 ;;
    --repository) REPOSITORY=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done

[ -x "$BIN" ] || die "no etcd-snapshot binary at $BIN (make build, or pass --bin)"
[ -x "$ETCDUTL" ] || die "no etcdutl at $ETCDUTL (scripts/install-test-deps.sh, or pass --etcdutl)"
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)"
for tool in ldd tar sha256sum; do  # tar, sha256sum: scripts/docker-archive.sh
  command -v "$tool" >/dev/null || die "$tool is missing"
done

# --- the root file system -----------------------------------------------------------------------
if [ -n "$ROOTFS_ONLY" ]; then
  rootfs=$ROOTFS_ONLY
  [ ! -e "$rootfs" ] || [ -z "$(ls -A "$rootfs")" ] || die "$rootfs exists and is not empty"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rootfs=$work/rootfs
fi
mkdir -p "$rootfs"

install -D -m 0755 "$BIN" "$rootfs/usr/local/bin/etcd-snapshot"
install -D -m 0755 "$ETCDUTL" "$rootfs/usr/local/bin/etcdutl"
install -D -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"

# Shared libraries: every absolute path `ldd` prints ("libc.so.6 => /lib/.../libc.so.6 (0x…)" and
# the loader "/lib64/ld-linux-x86-64.so.2 (0x…)"), copied as files to the same paths. A static
# binary has none (ldd exits 1 with "not a dynamic executable").
libs() {
  local out
  if ! out=$(LC_ALL=C ldd "$1" 2>&1); then
    case "$out" in
      *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
      *) die "ldd $1: $out" ;;
    esac
  fi
  case "$out" in *"not found"*) die "ldd $1: a library is missing: $out" ;; esac
  printf '%s\n' "$out" | sed -n -e 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p'
}
for lib in $({ libs "$BIN"; libs "$ETCDUTL"; } | sort -u); do
  install -D -m 0755 "$lib" "$rootfs$lib"
done

install -d -m 0755 "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/root"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
install -d -m 1777 "$rootfs/tmp"
# Fixed modes for every directory (umask-independent); /tmp keeps its sticky bit.
find "$rootfs" -type d ! -path "$rootfs/tmp" -exec chmod 0755 {} +
chmod 0755 "$rootfs"

if [ -n "$ROOTFS_ONLY" ]; then
  log "root file system in $rootfs"
  exit 0
fi

# --- the archive --------------------------------------------------------------------------------
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no version in Cargo.toml"
if [ -z "$REPOSITORY" ]; then
  REPOSITORY=$(sed -n 's/^  repository: *\([^ #]*\).*$/\1/p' "$here/charts/etcd-snapshot-operator/values.yaml" | head -n1)
  [ -n "$REPOSITORY" ] || die "no image.repository in the chart's values.yaml"
fi
TAG=${TAG:-$version}
mkdir -p "$OUT"
out=$OUT/etcd-snapshot-$TAG.tar
"$here/scripts/docker-archive.sh" --user "$IMAGE_USER" --cmd --help --epoch "$EPOCH" \
  --created-by scripts/build-image.sh "$rootfs" "$REPOSITORY:$TAG" "$out" "$ENTRYPOINT" >/dev/null
log "$REPOSITORY:$TAG ($(du -h "$out" | cut -f1)) in $out"
echo "$out"
