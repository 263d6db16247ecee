# syntax=docker/dockerfile:1
# Image of etcd-snapshot-operator: `etcd-snapshot` (controller, agent and CLI) and `etcdutl` (used by
# `etcd-snapshot restore` and `verify`), with the shared libraries they need and a CA bundle: the
# same root file system and config as `make image` (scripts/build-image.sh, which assembles the
# root file system here too; tests/image.rs checks that this file and the script agree).
#   docker build -t ghcr.io/etcd-snapshot-operator/etcd-snapshot:0.1.0 .

# etcdutl from etcd's own release image (v3.5 images keep the binaries in /usr/local/bin). The same
# version as the etcdutl `make image` puts in (tests/image.rs checks it).
ARG ETCD_VERSION=v3.5.30
FROM gcr.io/etcd-development/etcd:${ETCD_VERSION} AS etcd

# Build: the toolchain the repository is tested with; etcd-client needs protoc and the well-known
# .proto files (libprotobuf-dev); the C parts of zstd, ring and aws-lc need gcc (in the rust image).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin etcd-snapshot \
 && install -m 0755 target/release/etcd-snapshot /usr/local/bin/etcd-snapshot
COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcdutl
# The root file system, assembled by the script `make image` uses.
RUN scripts/build-image.sh --rootfs /rootfs --bin /usr/local/bin/etcd-snapshot --etcdutl /usr/local/bin/etcdutl

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Non-root by default (the controller); the chart runs the agent as root, see its values.yaml.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd-snapshot"]
CMD ["--help"]
