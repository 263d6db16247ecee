#!/usr/bin/env bash
# Pack a root-fs folder into a one-layer docker-archive image tar (what `docker save` writes), which
# `ctr -n k8s.io images import FILE` loads without a registry or a daemon:
#
#   scripts/docker-archive.sh ROOTFS REPO:TAG OUT.tar [ENTRYPOINT...]
#
# The layer is reproducible (sorted names, owner root, mtime 0), so the same folder gives the same
# image ID. The config names linux/amd64, the given entrypoint and a PATH.
set -euo pipefail

die() { printf '[docker-archive] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -ge 3 ]] || die "usage: $0 ROOTFS REPO:TAG OUT.tar [ENTRYPOINT...]"
rootfs=$1 ref=$2 out=$3
shift 3
[[ -d $rootfs ]] || die "$rootfs is not a directory"
[[ $ref == *:* ]] || die "image reference '$ref' has no tag"

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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir "$work/$layer_sha"
mv "$work/layer.tar" "$work/$layer_sha/layer.tar"

entrypoint=null
[[ $# -gt 0 ]] && entrypoint=$(json_array "$@")
printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/docker-archive.sh"}]}' \
  "$entrypoint" "$layer_sha" >"$work/config.json"
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":[%s],"Layers":["%s/layer.tar"]}]' \
  "$config_sha" "$(json_str "$ref")" "$layer_sha" >"$work/manifest.json"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$work" -cf "$out.tmp" manifest.json "$config_sha.json" "$layer_sha"
mv -f "$out.tmp" "$out"
echo "$out: $ref sha256:$config_sha"
