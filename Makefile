# etcd-snapshot-operator — developer entry points.
#   make test       install the test environment if missing, then fmt, clippy and every test
#   make test-deps  only install the test environment (etcd 3.4/3.5, SeaweedFS, kube-apiserver)
#   make crds       regenerate crds/ from the Rust types (and the chart's copy, and deploy/)
#   make chart      render the chart with default values into deploy/etcd-snapshot-operator.yaml
#   make build      release build of the etcd-snapshot binary
#   make bench-controller
#                   the controller at scale (10,000 snapshot records, 50 schedules) in a real
#                   kube-apiserver; results in BENCHMARKS.md's format under target/bench/
#   make demo       the operator end to end on this machine (kube-apiserver, etcd, SeaweedFS);
#                   `make demo DEMO_FLAGS=--keep` keeps it running until Ctrl-C

CARGO ?= cargo

.PHONY: test test-deps lint crds chart build demo bench-controller

test: test-deps lint
	$(CARGO) test --workspace --all-targets --locked

test-deps:
	scripts/install-test-deps.sh

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

demo:
	scripts/demo.sh $(DEMO_FLAGS)

bench-controller: test-deps
	$(CARGO) build --release --locked -p etcd-snapshot-operator -p eso-bench
	$(CARGO) run --release --locked -p eso-bench --bin eso-bench-controller
