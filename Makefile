# etcd-snapshot-operator — developer entry points.
#   make test       install the test environment if missing, then fmt, clippy and every test
#   make test-deps  only install the test environment (etcd 3.4/3.5, SeaweedFS, kube-apiserver,
#                   the e2e cluster's kubelet/containerd/... )
#   make e2e        only the end-to-end tier (tests/it/e2e*.rs): a real single-node Kubernetes in a
#                   network namespace (scripts/e2e-cluster.sh); root; `make test` runs it too
#   make crds       regenerate crds/ from the Rust types (and the chart's copy, and deploy/)
#   make chart      render the chart with default values into deploy/etcd-snapshot-operator.yaml
#                   (`helm template` with real Helm, installed into the cache if missing)
#   make build      release build of the etcd-snapshot binary
#   make image      the operator image from that build, without a registry or a container engine:
#                   a docker-archive in target/image/ for `ctr images import`, `docker load` or
#                   `podman load` (scripts/build-image.sh; the Dockerfile builds the same image)
#   make demo       the operator end to end on this machine (kube-apiserver, etcd, SeaweedFS);
#                   `make demo DEMO_FLAGS=--keep` keeps it running until Ctrl-C
#   make fresh-check  `make demo` then `make test` in a clean debootstrapped Debian bookworm root
#                   (slow: a cold build of everything; before a release and after changing
#                   dependencies or install scripts). FRESH_FLAGS=--keep keeps the root fs
#   make outage-drill  a 10-minute S3 outage against the real controller and agent
#                   (tests/it/outage.rs with ESO_OUTAGE_SECONDS=600; `make test` runs it for 75 s):
#                   prints the events and log lines it caused (recorded in RELIABILITY.md)
#   make bench      every benchmark (results in target/bench/, pasted into BENCHMARKS.md)
#   make bench-snapshot  the snapshot pipeline against etcdctl and the k3s-style pipeline on a
#                   real etcd filled to BENCH_SIZE (256MiB; 1GiB optional), BENCH_RUNS rounds (5)
#   make bench-controller  the controller and the agent at scale (10,000 snapshot records of one
#                   node, 50 schedules) in a real kube-apiserver with audit logging: start-up,
#                   RSS (controller <= 150 MiB, agent <= 64 MiB), idle requests, pruning
#                   (BENCH_FILES, BENCH_SCHEDULES, BENCH_IDLE_SECONDS, BENCH_PRUNE; ESO_BIN)

CARGO ?= cargo
BENCH_SIZE ?= 256MiB
BENCH_RUNS ?= 5
TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)

.PHONY: test test-deps e2e e2e-restore lint crds chart build image demo fresh-check outage-drill bench bench-snapshot bench-controller

# The integration tests are one binary (tests/it/, one module per suite). The end-to-end tier
# runs after the rest, alone (a whole node, its pods and image builds; as when it was a binary of
# its own), one scenario at a time (one cluster per machine).
E2E_SUITES = e2e:: e2e_restore::

test: test-deps lint
	$(CARGO) test --workspace --all-targets --locked -- $(addprefix --skip ,$(E2E_SUITES))
	$(CARGO) test --locked --test it -- --test-threads=1 $(E2E_SUITES)

test-deps:
	scripts/install-test-deps.sh

e2e: test-deps
	$(CARGO) test --locked --test it -- --nocapture --test-threads=1 $(E2E_SUITES)

# Only the disaster-recovery drill (tests/it/e2e_restore.rs; `make test` and `make e2e` run it too).
e2e-restore: test-deps
	$(CARGO) test --locked --test it -- --nocapture e2e_restore::

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

crds:
	$(CARGO) run --quiet --locked -- crd > crds/etcdsnapshot.io.yaml
	cp crds/etcdsnapshot.io.yaml charts/etcd-snapshot-operator/crds/
	scripts/render-chart.sh

chart:
	scripts/render-chart.sh

build:
	$(CARGO) build --release --locked

image: build
	scripts/build-image.sh --bin $(TARGET_DIR)/release/etcd-snapshot --out $(TARGET_DIR)/image

demo:
	scripts/demo.sh $(DEMO_FLAGS)

fresh-check:
	scripts/fresh-check.sh $(FRESH_FLAGS)

outage-drill: test-deps
	ESO_OUTAGE_SECONDS=$(or $(OUTAGE_SECONDS),600) $(CARGO) test --locked --test it -- --nocapture outage::

bench: bench-snapshot bench-controller

# One build of both binaries (the same feature set as `make build`, so nothing is compiled twice),
# then the harness from the target dir: it finds etcd-snapshot beside itself.
bench-snapshot: test-deps
	$(CARGO) build --release --locked -p etcd-snapshot-operator --bin etcd-snapshot -p eso-bench --bin eso-bench-snapshot
	$(TARGET_DIR)/release/eso-bench-snapshot --size $(BENCH_SIZE) --runs $(BENCH_RUNS)

bench-controller: test-deps
	$(CARGO) build --release --locked -p etcd-snapshot-operator --bin etcd-snapshot -p eso-bench --bin eso-bench-controller
	$(TARGET_DIR)/release/eso-bench-controller
