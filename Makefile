# Every workflow of the project. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
CLUSTER := e2e/cluster/cluster.sh
include e2e/cluster/versions.env
BIN := $(CURDIR)/.cache/bin
KUBECTL := $(BIN)/kubernetes-$(KUBERNETES_VERSION)/kubectl
HELM := $(BIN)/helm-$(HELM_VERSION)/helm
CRD_DIRS := crds charts/x0tta6bl4/crds

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the operator and the node agent (release)
	$(CARGO) build --release --locked -p x0tta6bl4-operator -p x0tta6bl4-node-agent

.PHONY: fmt
fmt: ## Format the Rust code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	# The agent's production build, without its test faults (its tests always have them).
	$(CARGO) clippy -p x0tta6bl4-node-agent --lib --bins --locked -- -D warnings

.PHONY: unit
unit: ## Unit tests of every crate (no cluster needed)
	$(CARGO) test --workspace --locked

.PHONY: crds
crds: ## Regenerate the CRD YAML from the Rust types into crds/ and the chart
	$(CARGO) run --quiet --locked -p x0tta6bl4-operator --bin crdgen -- $(CRD_DIRS)

.PHONY: check-generated
check-generated: ## Fail if the checked-in CRDs differ from the Rust types
	$(CARGO) run --quiet --locked -p x0tta6bl4-operator --bin crdgen -- --check $(CRD_DIRS)
	diff -r crds charts/x0tta6bl4/crds

.PHONY: binaries
binaries: ## Build (or reuse) the pinned upstream control plane, etcd, kwok, helm, Jaeger and SPIRE
	e2e/cluster/build-binaries.sh all

.PHONY: helm-lint
helm-lint: binaries ## Lint the Helm chart
	$(HELM) lint --strict charts/x0tta6bl4

.PHONY: e2e
e2e: binaries ## End-to-end tests against a real local control plane
	e2e/run.sh

.PHONY: netns
netns: ## Agents in rings of network namespaces: convergence, kill, reroute, rejoin; eBPF counts and injected loss; a link-telemetry federated job (root)
	X0_NETNS_TESTS=1 $(CARGO) test --locked -p x0tta6bl4-node-agent --test netns_ring --test netns_ebpf --test netns_link_telemetry -- --ignored --nocapture

.PHONY: ebpf-test
ebpf-test: ## eBPF datapath in the real kernel: programs, veth pairs in network namespaces (root)
	X0_NETNS_TESTS=1 $(CARGO) test --locked -p x0tta6bl4-datapath --test kernel -- --ignored --test-threads=1

.PHONY: ebpf-bench
ebpf-bench: ## Per-packet cost of the eBPF classifiers vs an empty one (root; figures in docs/BENCHMARKS.md)
	$(CARGO) run --release --locked -p x0tta6bl4-datapath --bin x0-datapath -- bench

.PHONY: argocd-test
argocd-test: ## Argo CD health checks against fixtures of every phase and condition (lua5.4, lua5.1)
	deploy/argocd/test.sh

.PHONY: alerts-test
alerts-test: ## The chart's alert rules: promtool check and unit tests of every alert (test/alerts), a runbook each
	e2e/cluster/build-binaries.sh helm
	HELM=$(HELM) e2e/alerts-test.sh

.PHONY: test
test: argocd-test alerts-test lint unit check-generated helm-lint netns ebpf-test e2e demo-check demo-spire ## Everything CI runs

.PHONY: demo
demo: binaries ## Local cluster, CRDs, operator and examples; shows them progressing
	e2e/demo.sh up

.PHONY: demo-failover
demo-failover: ## On the running demo: kill an agent, show the measured reroute, restart it (root)
	e2e/demo-agents.sh failover 0

.PHONY: demo-ebpf
demo-ebpf: ## On the running demo: per-peer eBPF counts in the MeshNodes, 30% loss by hand raises a link's cost (root)
	e2e/demo-agents.sh ebpf 0 1

.PHONY: demo-fl
demo-fl: ## On the running demo: the FLTrainingRound runs its rounds on the agents to Completed (root)
	e2e/demo-agents.sh fl demo-round

.PHONY: demo-traces
demo-traces: ## On the running demo: the FLTrainingRound is one trace in Jaeger, with the operator's root span and spans from every participant (root)
	e2e/demo-traces.sh fl demo-round

.PHONY: demo-chaos
demo-chaos: ## On the running demo: the example partition and the chaos revert guarantees, checked on every agent (root)
	e2e/demo-chaos.sh run

.PHONY: bench-chaos
bench-chaos: ## On the running demo: TTD/TTR p50/p99 over 20 experiments per network and node fault (root; figures in docs/CHAOS.md)
	e2e/demo-chaos.sh bench 20

.PHONY: demo-prometheus
demo-prometheus: ## On the running demo: a real Prometheus scrapes it; every dashboard query returns data; a killed agent fires X0AgentDown (root)
	HELM=$(HELM) e2e/demo-prometheus.sh run

.PHONY: demo-check
demo-check: ## The demo end to end, then gone: up, Prometheus, federated rounds, their trace, eBPF, failover, chaos, dashboards and alert, down (root)
	$(MAKE) demo && HELM=$(HELM) e2e/demo-prometheus.sh up && $(MAKE) demo-fl && $(MAKE) demo-traces && $(MAKE) demo-ebpf && $(MAKE) demo-failover && $(MAKE) demo-chaos && $(MAKE) demo-prometheus; rc=$$?; $(MAKE) demo-down; exit $$rc

.PHONY: demo-spire
demo-spire: ## The demo with SVIDs from a real SPIRE (40 s TTL), then gone: convergence, rotation under pings, mismatched and foreign SVIDs refused, SPIRE outage, SVID expiry (root)
	X0_SPIRE=1 X0_SPIRE_SVID_TTL=40 $(MAKE) demo && e2e/demo-spire.sh check; rc=$$?; $(MAKE) demo-down; exit $$rc

.PHONY: demo-down
demo-down: ## Stop the demo and remove everything it created
	-e2e/demo-prometheus.sh down
	e2e/demo.sh down

.PHONY: cluster-up cluster-down
cluster-up: binaries ## Start a bare local cluster (X0_NODES fake nodes)
	$(CLUSTER) up
cluster-down: ## Stop the bare local cluster
	$(CLUSTER) down

.PHONY: bench
bench: ## Benchmarks (figures go to docs/BENCHMARKS.md)
	$(CARGO) bench --workspace --locked

.PHONY: docker
docker: ## Build the images (needs a Docker engine)
	docker build --target operator -t ghcr.io/x0tta6bl4/operator:dev .
	docker build --target node-agent -t ghcr.io/x0tta6bl4/node-agent:dev .
