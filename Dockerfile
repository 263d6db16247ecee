# syntax=docker/dockerfile:1
# Image of etcd-snapshot-operator: `etcd-snapshot` (controller, agent and CLI) and `etcdutl` (used by
# `etcd-snapshot restore`), on debian:bookworm-slim.
#   docker build -t ghcr.io/etcd-snapshot-operator/etcd-snapshot:0.1.0 .

# etcdutl from etcd's own release image (pinned; v3.5 images keep the binaries in /usr/local/bin).
ARG ETCD_VERSION=v3.5.21
FROM gcr.io/etcd-development/etcd:${ETCD_VERSION} AS etcd

# Build: the toolchain the repository is tested with; etcd-client needs protoc and the well-known
# .proto files (libprotobuf-dev); the C parts of zstd, ring and aws-lc need gcc (in the rust image).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin etcd-snapshot \
 && install -m 0755 target/release/etcd-snapshot /usr/local/bin/etcd-snapshot

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/etcd-snapshot /usr/local/bin/etcd-snapshot
COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcdutl
# Non-root by default (the controller); the chart runs the agent as root, see its values.yaml.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd-snapshot"]
CMD ["--help"]
