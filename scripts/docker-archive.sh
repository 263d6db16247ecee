#!/usr/bin/env bash
# Pack a root-fs folder into a one-layer docker-archive image tar (what `docker save` writes:
# manifest.json, repositories, the config JSON and one layer.tar, named by their sha256), which
# `ctr -n k8s.io images import`, `docker load` and `podman load` accept without a registry:
#
#   scripts/docker-archive.sh [--user UID:GID] [--cmd ARG]... [--epoch SECONDS] [--created-by TEXT]
#                             ROOTFS REPO:TAG OUT.tar [ENTRYPOINT...]
#
# The one packer of the project: `scripts/build-image.sh` (the operator image) and the e2e tier's
# helper images (`eso_testenv::cluster::docker_archive`) both use it. Reproducible: sorted entries,
# numeric root ownership, mtimes and `created` at --epoch (default $SOURCE_DATE_EPOCH, else 0), no
# atime/ctime, fixed modes of the archive's own files: the same folder gives the same image ID.
# The config names this machine's architecture, linux, a PATH, and the given user, entrypoint
# and command. Prints OUT.tar on stdout.
set -euo pipefail
export LC_ALL=C

die() { printf '[docker-archive] ERROR: %s\n' "$*" >&2; exit 1; }

user=
cmd=()
epoch=${SOURCE_DATE_EPOCH:-0}
created_by=scripts/docker-archive.sh
while [[ $# -gt 0 ]]; do
  case "$1" in
    --user) user=$2; shift 2 ;;
    --cmd) cmd+=("$2"); shift 2 ;;
    --epoch) epoch=$2; shift 2 ;;
    --created-by) created_by=$2; shift 2 ;;
    --) shift; break ;;
    --*) die "unknown option $1 (see the header of $0)" ;;
    *) break ;;
  esac
done
[[ $# -ge 3 ]] || die "usage: $0 [--user U] [--cmd ARG]... [--epoch N] [--created-by T] ROOTFS REPO:TAG OUT.tar [ENTRYPOINT...]"
rootfs=$1 ref=$2 out=$3
shift 3
[[ -d $rootfs ]] || die "$rootfs is not a directory"
[[ $ref == *:* ]] || die "image reference '$ref' has no tag"
repository=${ref%:*} tag=${ref##*:}
[[ $epoch =~ ^[0-9]+$ ]] || die "--epoch must be whole seconds, got '$epoch'"
for tool in tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done

json_str() { # one JSON string literal (names and paths here have no control characters)
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}
json_array() {
  local first=1
  printf '['
  for a in "$@"; do
    [[ $first -eq 1 ]] || printf ','
    json_str "$a"
    first=0
  done
  printf ']'
}

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

# Reproducible tar: sorted names, fixed mtime, numeric root ownership, no atime/ctime.
det_tar() {
  local dir=$1 file=$2
  shift 2
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$dir" -cf "$file" "$@"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive=$work/archive
mkdir -p "$archive"

mapfile -t entries < <(cd "$rootfs" && ls -A | sort)
[[ ${#entries[@]} -gt 0 ]] || die "$rootfs is empty"
det_tar "$rootfs" "$work/layer.tar" "${entries[@]}"
layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$archive/$layer"
mv "$work/layer.tar" "$archive/$layer/layer.tar"

config='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
[[ -n $user ]] && config="\"User\":$(json_str "$user"),$config"
[[ $# -gt 0 ]] && config="$config,\"Entrypoint\":$(json_array "$@")"
[[ ${#cmd[@]} -gt 0 ]] && config="$config,\"Cmd\":$(json_array "${cmd[@]}")"
printf '{"architecture":"%s","os":"linux","created":"%s","config":{%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":%s}]}' \
  "$arch" "$created" "$config" "$layer" "$created" "$(json_str "$created_by")" >"$work/config.json"
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$archive/$config_sha.json"

printf '[{"Config":"%s.json","RepoTags":[%s],"Layers":["%s/layer.tar"]}]' \
  "$config_sha" "$(json_str "$ref")" "$layer" >"$archive/manifest.json"
printf '{%s:{%s:"%s"}}' "$(json_str "$repository")" "$(json_str "$tag")" "$layer" >"$archive/repositories"
find "$archive" -type d -exec chmod 0755 {} +
find "$archive" -type f -exec chmod 0644 {} +

mkdir -p "$(dirname "$out")"
det_tar "$archive" "$out.tmp.$$" manifest.json repositories "$config_sha.json" "$layer"
mv -f "$out.tmp.$$" "$out"
printf '[docker-archive] %s (config sha256:%s) in %s\n' "$ref" "$config_sha" "$out" >&2
echo "$out"
