#!/usr/bin/env bash
# Build the rest of a real Kubernetes v1.20.2 node for the end-to-end tier (scripts/e2e-cluster.sh)
# from the same Debian `kubernetes` source package and GOPATH-mode recipe as
# scripts/build-kube-apiserver.sh, and cache the results outside the repository:
#
#   $CACHE/bin/kubelet                   static (KUBE_STATIC_OVERRIDES=kubelet)
#   $CACHE/bin/kube-controller-manager
#   $CACHE/bin/kube-scheduler
#   $CACHE/bin/kube-proxy
#   $CACHE/bin/kube-apiserver-stock      WITHOUT kube-apiserver-events.patch: behaves like a user's
#                                        1.20 cluster (events.k8s.io Events about cluster-scoped
#                                        objects only in kube-system)
#   $CACHE/images/pause.tar              docker-archive of build/pause/linux/pause.c (gcc -static),
#                                        image localhost/eso-e2e/pause:3.4 (containerd sandbox_image)
#   $CACHE/bin/kube-cluster.stamp        recipe hash; a changed recipe rebuilds
#
# CACHE defaults to ${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}. The source download (and the
# deb-src entries and build packages) come from build-kube-apiserver.sh, run first if needed. The Go
# build cache is kept in $CACHE/build/kube-cluster/gocache, so a recipe change rebuilds in minutes
# (cold: ~12 min on a busy 2-core machine, most of it kubelet). Idempotent.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
BIN_DIR=$CACHE/bin
IMAGE_DIR=$CACHE/images
WORK=$CACHE/build/kube-cluster
DOWNLOAD=$CACHE/build/kube-apiserver/download
STAMP=$BIN_DIR/kube-cluster.stamp
PREFERRED_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
PAUSE_REF=localhost/eso-e2e/pause:3.4
BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy kube-apiserver-stock)

log() { printf '[build-kube-cluster] %s\n' "$*" >&2; }
die() { printf '[build-kube-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

RECIPE_HASH=$( { cat "${BASH_SOURCE[0]}" "$SCRIPT_DIR/docker-archive.sh"; echo "$PREFERRED_VERSION"; } \
  | sha256sum | cut -d' ' -f1)

up_to_date() {
  [[ -f $STAMP ]] && grep -q "^recipe=$RECIPE_HASH\$" "$STAMP" && [[ -f $IMAGE_DIR/pause.tar ]] || return 1
  for b in "${BINARIES[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}
if up_to_date; then
  echo "kube cluster binaries already built: $BIN_DIR ($(grep '^version=' "$STAMP" | cut -d= -f2-))"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root"
START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# 1. Source: the .dsc build-kube-apiserver.sh downloaded (it also installs Go and dpkg-dev).
# ---------------------------------------------------------------------------------------------
find_dsc() {
  local d
  for d in "$DOWNLOAD/kubernetes_${PREFERRED_VERSION}.dsc" "$DOWNLOAD"/kubernetes_*really1.20.2*.dsc; do
    [[ -f $d ]] && { echo "$d"; return 0; }
  done
  return 1
}
if ! DSC=$(find_dsc); then
  log "no downloaded source in $DOWNLOAD: running build-kube-apiserver.sh first"
  "$SCRIPT_DIR/build-kube-apiserver.sh"
  DSC=$(find_dsc) || die "no kubernetes .dsc in $DOWNLOAD after build-kube-apiserver.sh"
fi
command -v go >/dev/null || die "no go on PATH (build-kube-apiserver.sh installs golang-go)"
command -v gcc >/dev/null || die "no gcc on PATH (install-test-deps.sh installs gcc and libc6-dev)"

export GOPATH=$WORK/gopath
TREE=$GOPATH/src/k8s.io/kubernetes
rm -rf "$GOPATH"
mkdir -p "$(dirname "$TREE")" "$WORK/gocache"
log "extracting $(basename "$DSC")"
dpkg-source --no-check -x "$DSC" "$TREE" >/dev/null

# Same source fix as build-kube-apiserver.sh: the vendored reflect2 1.0.1 / json-iterator 1.1.10
# crash under Go >= 1.18; swap in Debian's packaged newer versions. No events patch here.
for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  src=/usr/share/gocode/src/$pkg
  [[ -d $src && -d $TREE/vendor/$pkg ]] || die "cannot replace vendored $pkg ($src or vendor copy missing)"
  rsync -a --delete --exclude='*_test.go' "$src/" "$TREE/vendor/$pkg/"
done

# hack/lib/golang.sh pins GOCACHE to _output/local/go/cache: point that at a cache kept across
# builds (the tree itself is extracted afresh each time).
mkdir -p "$TREE/_output/local/go"
ln -sfn "$WORK/gocache" "$TREE/_output/local/go/cache"

# ---------------------------------------------------------------------------------------------
# 2. Go binaries.
# ---------------------------------------------------------------------------------------------
log "building kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kube-apiserver (stock) with $(go version | cut -d' ' -f3) (cold: ~12 min)"
build_start=$(date +%s)
(
  cd "$TREE"
  export GOPROXY=off GOFLAGS= GO111MODULE=off CGO_ENABLED=0 GOTOOLCHAIN=local
  make WHAT="cmd/kubelet cmd/kube-controller-manager cmd/kube-scheduler cmd/kube-proxy cmd/kube-apiserver" \
    KUBE_STATIC_OVERRIDES=kubelet
) >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; die "build failed (full log: $WORK/build.log)"; }
log "go build took $(( $(date +%s) - build_start ))s"

OUT=$TREE/_output/bin
for b in kubelet kube-controller-manager kube-scheduler kube-proxy kube-apiserver; do
  [[ -x $OUT/$b ]] || die "build produced no $OUT/$b"
done
VERSION=$("$OUT/kubelet" --version | awk '{print $2}')
[[ $VERSION == v1.20.2* ]] || die "unexpected kubelet version: $VERSION"
if ldd "$OUT/kubelet" >/dev/null 2>&1; then die "kubelet is not statically linked"; fi

# ---------------------------------------------------------------------------------------------
# 3. The pause (sandbox) image.
# ---------------------------------------------------------------------------------------------
rootfs=$WORK/pause-rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
gcc -Os -Wall -Werror -static -DVERSION=v3.4-eso -o "$rootfs/pause" "$TREE/build/pause/linux/pause.c"
"$rootfs/pause" -v | grep 'v3.4-eso' >/dev/null || die "the pause binary does not run"
mkdir -p "$IMAGE_DIR"
"$SCRIPT_DIR/docker-archive.sh" "$rootfs" "$PAUSE_REF" "$IMAGE_DIR/pause.tar" /pause >/dev/null

# ---------------------------------------------------------------------------------------------
# 4. Install.
# ---------------------------------------------------------------------------------------------
mkdir -p "$BIN_DIR"
for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
  install -m 0755 "$OUT/$b" "$BIN_DIR/$b.new"
  mv -f "$BIN_DIR/$b.new" "$BIN_DIR/$b"
done
install -m 0755 "$OUT/kube-apiserver" "$BIN_DIR/kube-apiserver-stock.new"
mv -f "$BIN_DIR/kube-apiserver-stock.new" "$BIN_DIR/kube-apiserver-stock"
{
  echo "recipe=$RECIPE_HASH"
  echo "version=$VERSION"
  echo "source=$(basename "$DSC" .dsc)"
  echo "go=$(go version | cut -d' ' -f3)"
  echo "pause=$PAUSE_REF"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$STAMP"

# Keep the Go cache (warm rebuilds), drop the extracted tree.
rm -rf "$GOPATH"
log "done in $(( $(date +%s) - START ))s: $VERSION in $BIN_DIR, $IMAGE_DIR/pause.tar"
