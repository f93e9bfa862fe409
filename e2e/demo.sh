#!/usr/bin/env bash
# `make demo` / `make demo-down`: a local cluster with fake nodes, the CRDs, the operator (a
# local process with the cluster's kubeconfig), and the examples, shown as they progress.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
export X0_CLUSTER="${X0_CLUSTER:-demo}"
# Five fake nodes: five agents in a ring, so routes are multi-hop and a failure has a way round.
export X0_NODES="${X0_NODES:-5}"
CLUSTER=e2e/cluster/cluster.sh
STATE="$ROOT/.cache/clusters/$X0_CLUSTER"
KUBECTL="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
OPERATOR_PID="$ROOT/.cache/demo-$X0_CLUSTER-operator.pid"
OPERATOR_LOG="$ROOT/.cache/demo-$X0_CLUSTER-operator.log"

log() { printf '[demo] %s\n' "$*" >&2; }

stop_operator() {
  if [[ -f "$OPERATOR_PID" ]]; then
    local pid
    pid="$(cat "$OPERATOR_PID")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      # Wait (bounded) for a clean shutdown, which releases the leader lease.
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$OPERATOR_PID"
  fi
}

start_operator() {
  log "starting the operator (log: $OPERATOR_LOG)"
  # Its spans go to the demo's Jaeger when that runs (e2e/demo-traces.sh).
  local otlp=""
  if e2e/demo-traces.sh running; then otlp="$(e2e/demo-traces.sh endpoint)"; fi
  POD_NAMESPACE=default OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" setsid "$ROOT/target/debug/x0tta6bl4-operator" run \
    --metrics-addr 127.0.0.1:0 --identity "demo-$(hostname)" \
    --agent-image x0tta6bl4/node-agent:dev >>"$OPERATOR_LOG" 2>&1 &
  echo $! >"$OPERATOR_PID"
}

# The operator dies as a crash would kill it: SIGKILL, no lease released, nothing cleaned up.
kill_operator() {
  [[ -f "$OPERATOR_PID" ]] || { log "no operator pid file"; return 1; }
  local pid
  pid="$(cat "$OPERATOR_PID")"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$OPERATOR_PID"
  log "operator $pid killed (SIGKILL)"
}

up() {
  e2e/cluster/build-binaries.sh all
  cargo build --locked -p x0tta6bl4-operator -p x0tta6bl4-node-agent
  "$CLUSTER" up
  eval "$("$CLUSTER" env)"
  "$KUBECTL" apply --server-side -f crds/
  "$KUBECTL" wait --for=condition=Established --timeout=60s -f crds/
  "$ROOT/.cache/bin/helm-$HELM_VERSION/helm" template demo charts/x0tta6bl4 --show-only templates/meshnode-admission.yaml |
    "$KUBECTL" apply -f -

  # A real trace collector (Jaeger, built from source) for the operator's and agents' spans.
  e2e/demo-traces.sh up
  stop_operator
  start_operator

  # The chaos examples run later, on the converged mesh (make demo-chaos).
  "$KUBECTL" apply -f examples/meshnetwork.yaml -f examples/flround.yaml
  log "waiting for the MeshNetwork to become Ready"
  local last="" current deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do
    current="$("$KUBECTL" get meshnetworks,flrounds,chaos -o wide 2>&1)"
    if [[ "$current" != "$last" ]]; then
      printf '\n%s\n' "$current"
      last="$current"
    fi
    if "$KUBECTL" wait --for=condition=Ready --timeout=2s meshnetwork/demo >/dev/null 2>&1; then
      printf '\n'
      "$KUBECTL" get meshnetworks,flrounds,chaos -o wide
      # A real agent per fake node, each in its own network namespace, the namespaces in a ring.
      log "starting a node agent per fake node (e2e/demo-agents.sh)"
      e2e/demo-agents.sh up
      log "the demo is up. KUBECONFIG=$STATE/kubeconfig; try: kubectl describe mesh demo; stop it with: make demo-down"
      return 0
    fi
  done
  log "the MeshNetwork did not become Ready within 120s; operator log tail:"
  tail -n 30 "$OPERATOR_LOG" >&2
  return 1
}

down() {
  e2e/demo-agents.sh down || log "stopping the agents failed; stopping the cluster anyway"
  stop_operator
  e2e/demo-traces.sh down || log "stopping the trace collector failed"
  "$CLUSTER" down
  rm -f "$OPERATOR_LOG"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  operator-kill) kill_operator ;;
  operator-start) eval "$("$CLUSTER" env)"; start_operator ;;
  *) echo "usage: $0 up|down|operator-kill|operator-start" >&2; exit 2 ;;
esac
