#!/usr/bin/env bash
# `make e2e`: builds (or reuses) the control plane, starts a local cluster on loopback, installs
# the CRDs, and runs the e2e suite against it; the cluster is torn down afterwards. Prints how
# long each stage took.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
export X0_CLUSTER="${X0_CLUSTER:-e2e}"
export X0_NODES="${X0_NODES:-3}"
CLUSTER=e2e/cluster/cluster.sh

stage_start=$SECONDS
stage() {
  printf '[e2e] %-28s %4ss\n' "$1" "$((SECONDS - stage_start))" >&2
  stage_start=$SECONDS
}

e2e/cluster/build-binaries.sh all
stage "control-plane binaries"

# The agents of these tests are a test build: some tests set faults by hand (--test-fault,
# POST /chaos/forged-update; node-agent/src/test_faults.rs). The demo builds without them.
# (`--features test-faults`, not `x0tta6bl4-node-agent/test-faults`: the agent's dev-dependency
# on itself would take that spelling for the dependency's feature, off outside its tests.)
cargo build --locked -p x0tta6bl4-operator
cargo build --locked -p x0tta6bl4-node-agent --features test-faults
cargo test --locked -p x0tta6bl4-e2e --features e2e --no-run
stage "operator and test build"

cleanup() {
  if [[ "${X0_KEEP_CLUSTER:-0}" != 1 ]]; then
    "$CLUSTER" down || true
  fi
}
trap cleanup EXIT
"$CLUSTER" up
stage "cluster up ($X0_NODES nodes)"

eval "$("$CLUSTER" env)"
export X0_KUBECTL="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
export X0_HELM="$ROOT/.cache/bin/helm-$HELM_VERSION/helm"
export X0_OPERATOR_BIN="$ROOT/target/debug/x0tta6bl4-operator"
export X0_NODE_AGENT_BIN="$ROOT/target/debug/x0tta6bl4-node-agent"
"$X0_KUBECTL" apply --server-side -f crds/
"$X0_KUBECTL" wait --for=condition=Established --timeout=60s -f crds/
# The admission policy that binds MeshNode records to their node ships in the chart; the
# operator runs as a local process here, so only that template is applied.
"$X0_HELM" template e2e charts/x0tta6bl4 --show-only templates/meshnode-admission.yaml | "$X0_KUBECTL" apply -f -
stage "CRDs and admission policy installed"

# One test at a time: each test runs its own operator, and two operators on one cluster would
# both reconcile every namespace.
# X0_E2E_TESTS narrows the run, e.g. X0_E2E_TESTS="--test agent_key_rotation".
# shellcheck disable=SC2086 # one cargo argument per word
cargo test --locked -p x0tta6bl4-e2e --features e2e --no-fail-fast ${X0_E2E_TESTS:-} -- --test-threads=1 --nocapture
stage "e2e suite"
