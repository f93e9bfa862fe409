# shellcheck shell=bash
# What the scripts that check the running demo share. Sourced; the caller sets ROOT, and for
# kctl KUBECTL_BIN, CLUSTER_STATE and NS, and defines log and die.

# kubectl on the demo's cluster, in the mesh's namespace.
kctl() {
  "$KUBECTL_BIN" --kubeconfig="$CLUSTER_STATE/kubeconfig" --cache-dir="$CLUSTER_STATE/kube-cache" \
    --namespace="$NS" "$@"
}

# load_nodes <agents state dir>: NODES, the demo agents' node names by index (from demo-agents.sh).
NODES=()
load_nodes() {
  local i
  NODES=()
  for ((i = 0; i < 250; i++)); do
    [[ -f $1/node-$i ]] || break
    NODES+=("$(cat "$1/node-$i")")
  done
  ((${#NODES[@]} >= 4)) || die "the demo agents are not up (run: make demo)"
}

# wait_for <seconds> <what> <command...>: polls the command until it succeeds; on a timeout logs
# what it waited for (and whatever on_wait_timeout, if the caller defines it, says of the command).
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s%N) + limit * 1000000000))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s%N) >= deadline)); then
      log "timed out after ${limit}s waiting for: $what"
      if declare -F on_wait_timeout >/dev/null; then on_wait_timeout "$@"; fi
      return 1
    fi
    sleep 0.1
  done
}
