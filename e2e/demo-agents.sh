#!/usr/bin/env bash
# Real node agents for the demo's fake (kwok) nodes: one x0tta6bl4-node-agent process per node,
# each in its own network namespace, authenticating to the demo's API server as the DaemonSet pod
# kwok "runs" on its node, so the agents publish their keys, get them endorsed by the operator,
# find each other through their MeshNode records and form the mesh for real.
#
#   demo-agents.sh up     (re)start the agents, wait until the MeshNetwork reports Converged=True
#                         (on a timeout the agents keep running for inspection; logs, pids,
#                         kubeconfigs and node keys are in .cache/demo-agents/)
#   demo-agents.sh failover [i]
#                         kill the i-th agent (default 0), show the reroute time its ring neighbours
#                         measured (MeshNode and MeshNetwork status), check that traffic goes the
#                         long way round, restart it and wait for Converged=True again
#   demo-agents.sh ebpf [i] [j]
#                         the eBPF datapath on the running demo: every agent runs it, every
#                         MeshNode record shows its neighbours' traffic counted by eBPF (kubectl
#                         get meshnodes -o wide), then 30% loss injected by hand on agent i
#                         (default 0) towards its ring neighbour j (default 1) raises that link's
#                         cost in i's record, and removing the fault brings it back down
#   demo-agents.sh inject-loss <i> <j> <percent> <seconds>
#                         drop that share of the mesh packets between agent i and its neighbour j,
#                         both ways, in agent i's eBPF datapath (its fault map, through its fault
#                         endpoint); the fault ends by itself after <seconds>, even if the agent dies
#   demo-agents.sh clear-fault <i> <j>
#                         remove that fault now
#   demo-agents.sh datapath <i>
#                         agent i's eBPF view: interfaces, per-peer counters, faults (JSON)
#   demo-agents.sh fl [job]
#                         wait for the FLTrainingRound (default demo-round) to complete on the
#                         agents, check its final accuracy and verify its hash chain
#   demo-agents.sh down   stop the agents and forwarders, delete the namespaces and the state
#                         (idempotent; works without the cluster)
#
# Environment: X0_CLUSTER (default demo), X0_MESH (default demo), X0_MESH_NAMESPACE (default
# default), X0_AGENTS_TIMEOUT (seconds to wait for convergence, default 120). X0_SPIRE=1 (at `up`):
# the agents take X.509-SVIDs from a real SPIRE (e2e/spire.sh: one server, one SPIRE agent per
# node, a registration entry per mesh agent with the SPIFFE ID the mesh expects; X0_SPIRE_SVID_TTL
# sets the entries' SVID lifetime in seconds).
#
# Topology, all in 198.18.0.0/15 and out of the way of node-agent/tests/netns_ring.rs (which uses
# 198.18.<1..250>.x inside its namespaces and 198.19.<1..250>.x on the host):
#
#   namespace x0demo-<i>     the agent of the i-th node (nodes sorted by name)
#   198.18.251.<i+1>/32      the agent's own address, on `lo`: its advertised endpoint
#   198.18.252.0/22          the ring: link i joins namespace i ("right") to namespace i+1 ("left"),
#                            the last back to the first, each link a /30 (4i+1 and 4i+2)
#   198.19.252.0/22          a management veth per namespace to the host (/30: host 4i+1,
#                            namespace 4i+2), where the agent reaches the API server (through a
#                            socat forwarder on the host side) and serves /metrics and /status
#
# Each namespace has a host route to the /32 of each ring neighbour, one hop over their link, and
# nothing else: there is no kernel route between non-adjacent namespaces and no default route, so
# the agents can dial only their two neighbours and the mesh has to route everything further.
#
# The agents run as root in their namespaces, so the MeshNetwork's `ebpf.mode: tc` loads their eBPF
# datapath: each attaches it to the interfaces its peers are routed through (`left` and `right`,
# not `lo` where its address is, nor `mgmt`) and serves its fault endpoint on 127.0.0.1:47191 of
# its namespace (reached with `ip netns exec x0demo-<i> curl ...`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
# shellcheck source=lib/processes.sh
source e2e/lib/processes.sh
CLUSTER_NAME="${X0_CLUSTER:-demo}"
MESH="${X0_MESH:-demo}"
NS="${X0_MESH_NAMESPACE:-default}"
TIMEOUT="${X0_AGENTS_TIMEOUT:-120}"
CLUSTER_STATE="$ROOT/.cache/clusters/$CLUSTER_NAME"
KUBECTL_BIN="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
AGENT_BIN="$ROOT/target/debug/x0tta6bl4-node-agent"
SPIRE="$ROOT/e2e/spire.sh"
STATE="$ROOT/.cache/demo-agents"
NETNS_PREFIX="x0demo-"
HOST_LINK_PREFIX="x0demo-m"
MAX_NODES=250

log() { printf '[demo-agents %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

kctl() {
  "$KUBECTL_BIN" --kubeconfig="$CLUSTER_STATE/kubeconfig" --cache-dir="$CLUSTER_STATE/kube-cache" \
    --namespace="$NS" "$@"
}

# ---------------------------------------------------------------------------------------------
# Addresses (see the header)
# ---------------------------------------------------------------------------------------------

# quad <second octets base> <offset>: 198.1<x>.<base + offset/256>.<offset%256>
addr() { printf '198.%d.%d.%d' "$1" $(($2 + $3 / 256)) $(($3 % 256)); }
node_addr() { printf '198.18.251.%d' $(($1 + 1)); }
# Link i: namespace i has .4i+1 ("right"), namespace i+1 has .4i+2 ("left").
link_right() { addr 18 252 $((4 * $1 + 1)); }
link_left() { addr 18 252 $((4 * $1 + 2)); }
mgmt_host() { addr 19 252 $((4 * $1 + 1)); }
mgmt_ns() { addr 19 252 $((4 * $1 + 2)); }
netns() { printf '%s%d' "$NETNS_PREFIX" "$1"; }

# ---------------------------------------------------------------------------------------------
# Processes: each started in its own session (process group) with its pid in a file; a pid is
# only trusted while its command line still names our state directory or forwarder address.
# ---------------------------------------------------------------------------------------------

# spawn <pidfile> <logfile> <command...>
spawn() {
  local pidfile=$1 logfile=$2 deadline=$((SECONDS + 10))
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the child shell
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$logfile" 2>&1 &
  until [[ -s $pidfile ]]; do
    ((SECONDS < deadline)) || die "no $pidfile 10s after starting $*"
    sleep 0.05
  done
}

# stop_pids <pid>...: SIGTERM to each process group, SIGKILL whatever is left after 5s.
stop_pids() {
  local p left deadline=$((SECONDS + 5))
  (($#)) || return 0
  for p in "$@"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  while :; do
    left=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    ((${#left[@]})) || return 0
    ((SECONDS < deadline)) || break
    sleep 0.1
  done
  for p in "${left[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  deadline=$((SECONDS + 5))
  for p in "${left[@]}"; do
    while kill -0 "$p" 2>/dev/null; do
      ((SECONDS < deadline)) || die "process $p survived SIGKILL"
      sleep 0.1
    done
  done
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------

down() {
  local f pid pids=() ns
  # Agents and forwarders by their pid files.
  for f in "$STATE"/agent-*.pid; do
    [[ -f $f ]] || continue
    pid="$(own_pid "$f" "$STATE/")" && pids+=("$pid")
  done
  for f in "$STATE"/supervisor.pid; do
    [[ -f $f ]] || continue
    pid="$(own_pid "$f" "demo-agents.sh supervise")" && pids+=("$pid")
  done
  for f in "$STATE"/forwarder-*.pid; do
    [[ -f $f ]] || continue
    pid="$(own_pid "$f" "bind=198.19.25")" && pids+=("$pid")
  done
  stop_pids "${pids[@]}"
  # Anything else still inside one of our namespaces (a lost pid file): the namespaces are ours.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NETNS_PREFIX}[0-9]*$" || true); do
    # shellcheck disable=SC2046 # one pid per word
    stop_pids $(ip netns pids "$ns" 2>/dev/null)
    ip netns del "$ns" 2>/dev/null || true
  done
  # Deleting a namespace deletes the veth ends inside it, and with them their host ends; remove
  # any host end left over from a half-built namespace.
  for f in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep "^${HOST_LINK_PREFIX}[0-9]*$" || true); do
    ip link del "$f" 2>/dev/null || true
  done
  # SPIRE of an X0_SPIRE run (even one whose state here is gone).
  if [[ -f $STATE/spire || -d $ROOT/.cache/spire/demo ]]; then "$SPIRE" down || true; fi
  rm -rf "$STATE"
  # The MeshNode records of the stopped agents would go on claiming their routes: remove them
  # while the cluster is there (best effort: `make demo-down` removes the cluster next anyway).
  if [[ -f $CLUSTER_STATE/kubeconfig && -x $KUBECTL_BIN ]]; then
    kctl delete meshnodes -l "x0tta6bl4.io/mesh=$MESH" --ignore-not-found --wait=false \
      --request-timeout=5s >/dev/null 2>&1 || true
  fi
  log "down"
}

# Converged=True in the mesh status must come from the agents started now: drop records left by
# earlier agents and wait (bounded) until the operator no longer reports them as converged.
forget_old_records() {
  local deadline=$((SECONDS + 30))
  kctl delete meshnodes -l "x0tta6bl4.io/mesh=$MESH" --ignore-not-found --wait=true --timeout=30s >/dev/null
  while [[ "$(kctl get meshnetwork "$MESH" \
    -o jsonpath='{.status.conditions[?(@.type=="Converged")].status}' 2>/dev/null)" == True ]]; do
    ((SECONDS < deadline)) || die "MeshNetwork $MESH still reports Converged=True 30s after its MeshNode records were deleted"
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------

need() {
  [[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
  local t
  for t in ip setsid curl base64; do command -v "$t" >/dev/null || die "'$t' is required"; done
  if ! command -v socat >/dev/null; then
    log "installing socat (the API server forwarders)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null; } ||
      die "could not install socat"
  fi
  [[ -x $KUBECTL_BIN ]] || die "no $KUBECTL_BIN (run: make binaries)"
  [[ -x $AGENT_BIN ]] || die "no $AGENT_BIN (run: cargo build -p x0tta6bl4-node-agent)"
  [[ -f $CLUSTER_STATE/kubeconfig && -f $CLUSTER_STATE/ports.env ]] ||
    die "cluster '$CLUSTER_NAME' is not up (no $CLUSTER_STATE/kubeconfig); run: make demo"
}

# Fills NODES (sorted) and POD[node] with the DaemonSet's pods, once there is one on every node
# the DaemonSet wants.
declare -a NODES=()
declare -A POD=()
wait_pods() {
  local deadline=$((SECONDS + 120)) desired lines node pod
  log "waiting for the agent pods of mesh $MESH on every node"
  while :; do
    desired="$(kctl get daemonset "$MESH-agent" -o jsonpath='{.status.desiredNumberScheduled}' 2>/dev/null || true)"
    lines="$(kctl get pods -l "app.kubernetes.io/instance=$MESH" \
      -o jsonpath='{range .items[?(@.spec.nodeName)]}{.spec.nodeName}{" "}{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' 2>/dev/null || true)"
    NODES=()
    POD=()
    while read -r node pod deleting; do
      [[ -n $node && -z ${deleting:-} ]] || continue
      POD[$node]=$pod
    done <<<"$lines"
    if [[ $desired =~ ^[1-9][0-9]*$ ]] && ((${#POD[@]} == desired)); then
      mapfile -t NODES < <(printf '%s\n' "${!POD[@]}" | sort -V)
      break
    fi
    ((SECONDS < deadline)) || die "after 120s: ${#POD[@]} agent pod(s) for ${desired:-?} node(s) of DaemonSet $MESH-agent"
    sleep 0.5
  done
  ((${#NODES[@]} <= MAX_NODES)) || die "${#NODES[@]} nodes: this address plan holds at most $MAX_NODES"
  for node in "${NODES[@]}"; do log "  $node: pod ${POD[$node]}"; done
}

# The ring: link i joins namespace i and namespace (i+1) mod n. Two nodes share one link; one
# node has none.
build_namespaces() {
  local n=${#NODES[@]} i next links
  links=$n
  ((n > 2)) || links=$((n - 1))
  for ((i = 0; i < n; i++)); do
    ip netns add "$(netns "$i")"
    ip -n "$(netns "$i")" link set lo up
    ip -n "$(netns "$i")" addr add "$(node_addr "$i")/32" dev lo
    # Management link to the host.
    ip link add "$HOST_LINK_PREFIX$i" type veth peer name mgmt netns "$(netns "$i")"
    ip addr add "$(mgmt_host "$i")/30" dev "$HOST_LINK_PREFIX$i"
    ip -n "$(netns "$i")" addr add "$(mgmt_ns "$i")/30" dev mgmt
    ip link set "$HOST_LINK_PREFIX$i" up
    ip -n "$(netns "$i")" link set mgmt up
  done
  for ((i = 0; i < links; i++)); do
    next=$(((i + 1) % n))
    ip -n "$(netns "$i")" link add right type veth peer name left netns "$(netns "$next")"
    ip -n "$(netns "$i")" addr add "$(link_right "$i")/30" dev right
    ip -n "$(netns "$next")" addr add "$(link_left "$i")/30" dev left
    ip -n "$(netns "$i")" link set right up
    ip -n "$(netns "$next")" link set left up
    # One hop each way to the neighbour's own address, sourced from our own, so sessions run
    # between the advertised endpoints.
    ip -n "$(netns "$i")" route replace "$(node_addr "$next")/32" via "$(link_left "$i")" dev right \
      src "$(node_addr "$i")"
    ip -n "$(netns "$next")" route replace "$(node_addr "$i")/32" via "$(link_right "$i")" dev left \
      src "$(node_addr "$next")"
  done
  log "$n namespace(s) ${NETNS_PREFIX}0..$((n - 1)) in a ring of $links link(s)"
}

# A forwarder per namespace: the host side of its management link to the API server, which
# listens on 127.0.0.1 only.
start_forwarders() {
  local n=${#NODES[@]} i deadline
  for ((i = 0; i < n; i++)); do
    spawn "$STATE/forwarder-$i.pid" "$STATE/forwarder-$i.log" \
      socat "TCP-LISTEN:$API_PORT,bind=$(mgmt_host "$i"),fork,reuseaddr" "TCP:127.0.0.1:$API_PORT"
  done
  # Ready once the API server answers through it, from inside the namespace.
  for ((i = 0; i < n; i++)); do
    deadline=$((SECONDS + 20))
    until ip netns exec "$(netns "$i")" curl -sS --max-time 2 -o /dev/null \
      --cacert "$CLUSTER_STATE/pki/ca.crt" --resolve "localhost:$API_PORT:$(mgmt_host "$i")" \
      "https://localhost:$API_PORT/readyz" 2>/dev/null; do
      own_pid "$STATE/forwarder-$i.pid" "bind=198.19.25" >/dev/null ||
        die "the forwarder of $(netns "$i") exited: $(tail -n 5 "$STATE/forwarder-$i.log")"
      ((SECONDS < deadline)) || die "the API server is not reachable from $(netns "$i") after 20s"
      sleep 0.2
    done
  done
  log "API server forwarded into every namespace (https://<host side>:$API_PORT, TLS name localhost)"
}

# A kubeconfig (0600) with a token bound to the node's pod: the token carries the node claim the
# MeshNode admission policy checks.
write_kubeconfigs() {
  local n=${#NODES[@]} i
  for ((i = 0; i < n; i++)); do
    write_kubeconfig "$i" "${POD[${NODES[$i]}]}"
  done
  # The credentials work from inside a namespace, as that pod's service account.
  ip netns exec "$(netns 0)" "$KUBECTL_BIN" --kubeconfig="$STATE/kubeconfig-0" --cache-dir="$STATE/kube-cache-0" \
    auth whoami -o jsonpath='{.status.userInfo.username}{" node="}{.status.userInfo.extra.authentication\.kubernetes\.io/node-name[0]}{"\n"}' |
    sed "s/^/[demo-agents] ${NETNS_PREFIX}0 authenticates as /" >&2 ||
    die "the token of ${POD[${NODES[0]}]} does not authenticate from ${NETNS_PREFIX}0"
}

# write_kubeconfig <i> <pod>: agent i's kubeconfig, with a token bound to <pod> (a deleted pod's
# token stops working, as it does for a real pod).
write_kubeconfig() {
  local i=$1 pod=$2 token file
  # shellcheck source=/dev/null
  source "$CLUSTER_STATE/ports.env"
  token="$(kctl create token "$MESH-agent" --bound-object-kind Pod \
    --bound-object-name "$pod" --duration 24h)" ||
    die "could not create a token for pod $pod"
  printf '%s\n' "$pod" >"$STATE/pod-$i"
  {
    file="$STATE/kubeconfig-$i"
    (
      umask 077
      cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: https://$(mgmt_host "$i"):$API_PORT
    tls-server-name: localhost
    certificate-authority-data: $(base64 <"$CLUSTER_STATE/pki/ca.crt" | tr -d '\n')
users:
- name: $MESH-agent-${NODES[$i]}
  user:
    token: $token
contexts:
- name: $CLUSTER_NAME
  context:
    cluster: $CLUSTER_NAME
    user: $MESH-agent-${NODES[$i]}
    namespace: $NS
current-context: $CLUSTER_NAME
EOF
    )
    chmod 600 "$file"
  }
}

# supervise: what a kubelet does for the DaemonSet here. When the pod of a node is replaced
# (deleted, by hand or by a nodeKill experiment; the DaemonSet controller makes a new one), the
# node's agent is killed and started again with a token bound to the new pod. Runs until
# `down`; one kubectl call every half second.
supervise() {
  load_nodes
  METRICS_PORT="$(config_port metricsPort)"
  METRICS_PORT="${METRICS_PORT:-47102}"
  local lines node pod deleting i old pid
  while :; do
    lines="$(kctl get pods -l "app.kubernetes.io/instance=$MESH" \
      -o jsonpath='{range .items[?(@.spec.nodeName)]}{.spec.nodeName}{" "}{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' 2>/dev/null || true)"
    while read -r node pod deleting; do
      [[ -n $node && -z ${deleting:-} ]] || continue
      for ((i = 0; i < ${#NODES[@]}; i++)); do
        [[ ${NODES[$i]} == "$node" ]] || continue
        old="$(cat "$STATE/pod-$i" 2>/dev/null || true)"
        [[ -n $old && $old != "$pod" ]] || continue
        log "pod $old of $node was replaced by $pod: restarting its agent"
        if pid="$(own_pid "$STATE/agent-$i.pid" "$STATE/")"; then
          kill -KILL "$pid" 2>/dev/null || true
          while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        fi
        write_kubeconfig "$i" "$pod"
        start_agent "$i"
      done
    done <<<"$lines"
    sleep 0.5
  done
}

start_supervisor() {
  spawn "$STATE/supervisor.pid" "$STATE/supervisor.log" "$ROOT/e2e/demo-agents.sh" supervise
  log "supervisor started: agents follow their pods (log $STATE/supervisor.log)"
}

METRICS_PORT=47102
# The agents' fault endpoints, each on the loopback of its own namespace.
FAULT_PORT=47191
# config_port <name>: a port of the agent configuration (YAML, keys quoted or not).
config_port() { grep -oE "\"?$1\"?: *\"?[0-9]{1,5}" "$STATE/agent.yaml" | grep -oE '[0-9]+$' | head -n 1; }
config_text() { sed -nE "s/^ *\"?$1\"?: *\"?([^\"]*)\"?.*$/\1/p" "$STATE/agent.yaml" | head -n 1; }

# With SPIRE (X0_SPIRE=1 at `up`, remembered in $STATE/spire for restarts): the SPIFFE ID the mesh
# expects for a node.
spire_on() { [[ -f $STATE/spire ]]; }
spiffe_id_of() { printf 'spiffe://%s/ns/%s/mesh/%s/node/%s' "$(cat "$STATE/spire")" "$NS" "$MESH" "$1"; }
# spire_socket <node>: the node's SPIRE agent (started if it is not) with the registration entry of
# its mesh agent; prints its Workload API socket.
spire_socket() {
  local node=$1 socket
  socket="$("$SPIRE" agent-start "$node")"
  local ttl="${X0_SPIRE_SVID_TTL:-$(cat "$STATE/spire-svid-ttl" 2>/dev/null || true)}"
  "$SPIRE" entry "$node" "$(spiffe_id_of "$node")" ${ttl:+"$ttl"} >/dev/null
  printf '%s' "$socket"
}

start_agents() {
  local n=${#NODES[@]} i node
  kctl get configmap "$MESH-agent-config" -o jsonpath='{.data.agent\.yaml}' >"$STATE/agent.yaml" ||
    die "no ConfigMap $MESH-agent-config"
  [[ -s $STATE/agent.yaml ]] || die "ConfigMap $MESH-agent-config has no agent.yaml"
  METRICS_PORT="$(config_port metricsPort)"
  METRICS_PORT="${METRICS_PORT:-47102}"
  if [[ ${X0_SPIRE:-} == 1 ]]; then
    local trust_domain
    trust_domain="$(config_text trustDomain)"
    "$SPIRE" up "${trust_domain:-x0tta6bl4.local}"
    printf '%s\n' "${trust_domain:-x0tta6bl4.local}" >"$STATE/spire"
    [[ -z ${X0_SPIRE_SVID_TTL:-} ]] || printf '%s\n' "$X0_SPIRE_SVID_TTL" >"$STATE/spire-svid-ttl"
  fi
  for ((i = 0; i < n; i++)); do
    start_agent "$i"
  done
}

# start_agent <i>: the agent of the i-th node in its namespace (config and ports from start_agents).
start_agent() {
  local i=$1 node="${NODES[$1]}" otlp="" svid_socket=""
  mkdir -p "$STATE/state-$i"
  # X0_SVID_SOCKET: another Workload API for this start (e2e/demo-spire.sh: a foreign trust domain).
  if [[ -n ${X0_SVID_SOCKET:-} ]]; then
    svid_socket=$X0_SVID_SOCKET
  elif spire_on; then
    svid_socket="$(spire_socket "$node")"
  fi
  chmod 700 "$STATE/state-$i"
  # Spans to the demo's Jaeger, over the management veth, when it runs (e2e/demo-traces.sh).
  if "$ROOT/e2e/demo-traces.sh" running; then otlp="$("$ROOT/e2e/demo-traces.sh" endpoint "$i")"; fi
  spawn "$STATE/agent-$i.pid" "$STATE/agent-$i.log" \
    ip netns exec "$(netns "$i")" env KUBECONFIG="$STATE/kubeconfig-$i" NODE_NAME="$node" \
    OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" SPIFFE_ENDPOINT_SOCKET="$svid_socket" \
    RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1 NO_COLOR=1 \
    "$AGENT_BIN" --config "$STATE/agent.yaml" --node-name "$node" --state-dir "$STATE/state-$i" \
    --advertise-address "$(node_addr "$i")" --metrics-addr "$(mgmt_ns "$i"):$METRICS_PORT" \
    --fault-api "127.0.0.1:$FAULT_PORT" --log-format text
  printf '%s\n' "$node" >"$STATE/node-$i"
  log "  $node: agent in $(netns "$i") at $(node_addr "$i"), /status on http://$(mgmt_ns "$i"):$METRICS_PORT/status, log $STATE/agent-$i.log${svid_socket:+, SVID from $svid_socket}"
}

agent_tails() {
  local i
  for ((i = 0; i < ${#NODES[@]}; i++)); do
    printf -- '----- last 25 lines of %s (%s) -----\n' "$STATE/agent-$i.log" "${NODES[$i]}" >&2
    tail -n 25 "$STATE/agent-$i.log" >&2 || true
  done
  printf -- '-----\n' >&2
}

# Drops the AGE column, so a change of age alone is not a change.
without_age() { sed -E 's/[[:space:]]+[^[:space:]]+[[:space:]]*$//'; }

wait_converged() {
  local deadline=$((SECONDS + TIMEOUT)) last="" current converged i
  log "waiting (at most ${TIMEOUT}s) for MeshNetwork $MESH to report Converged=True"
  while :; do
    # The condition first, then the tables: what is printed last is never older than the verdict.
    converged="$(kctl get meshnetwork "$MESH" \
      -o jsonpath='{.status.conditions[?(@.type=="Converged")].status}' 2>/dev/null || true)"
    current="$(kctl get meshnetwork "$MESH" -o wide 2>&1; echo; kctl get meshnodes -o wide 2>&1)"
    if [[ "$(without_age <<<"$current")" != "$last" ]]; then
      printf '\n%s\n' "$current"
      last="$(without_age <<<"$current")"
    fi
    if [[ $converged == True ]]; then
      printf '\n'
      log "MeshNetwork $MESH converged: $(kctl get meshnetwork "$MESH" \
        -o jsonpath='{.status.conditions[?(@.type=="Converged")].message}')"
      return 0
    fi
    for ((i = 0; i < ${#NODES[@]}; i++)); do
      if ! own_pid "$STATE/agent-$i.pid" "$STATE/" >/dev/null; then
        agent_tails
        die "the agent of ${NODES[$i]} (${NETNS_PREFIX}$i) exited"
      fi
    done
    if ((SECONDS >= deadline)); then
      kctl get meshnetwork "$MESH" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
      agent_tails
      die "MeshNetwork $MESH did not converge within ${TIMEOUT}s"
    fi
    sleep 1
  done
}

up() {
  need
  # shellcheck source=/dev/null
  source "$CLUSTER_STATE/ports.env"
  [[ ${API_PORT:-} =~ ^[0-9]+$ ]] || die "no API_PORT in $CLUSTER_STATE/ports.env"
  # A fresh start every time: stale agents, namespaces or forwarders from an earlier run go first.
  down 2>/dev/null
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  printf '%s\n' "$CLUSTER_NAME" >"$STATE/cluster"
  wait_pods
  forget_old_records
  build_namespaces
  start_forwarders
  write_kubeconfigs
  start_agents
  start_supervisor
  wait_converged
  log "the agents run in namespaces ${NETNS_PREFIX}0..$((${#NODES[@]} - 1)); e.g. curl http://$(mgmt_ns 0):$METRICS_PORT/status"
}

# The reroute times the agents last reported in their MeshNode records, one "node=duration" a line.
reroute_records() {
  kctl get meshnodes -o jsonpath='{range .items[*]}{.spec.nodeName}={.status.lastRerouteDuration}{"\n"}{end}'
}

# failover [i]: the "done when" of the node-agent issue on the running demo. Kills the agent of
# the i-th node (SIGKILL: a crash, no goodbye), waits until its ring neighbours report a reroute
# measured after the kill and the MeshNetwork shows it (status.lastRerouteDuration), checks that
# traffic between its two neighbours now takes the long way round the ring, then starts the agent
# again and waits until the mesh reports Converged=True with it.
failover() {
  need
  local i=${1:-0} n pid before after deadline left right answer hops
  load_nodes
  n=${#NODES[@]}
  ((n >= 4)) || die "failover needs a ring of at least 4 agents (have $n)"
  ((i >= 0 && i < n)) || die "no agent $i (0..$((n - 1)))"
  METRICS_PORT="$(config_port metricsPort)"
  METRICS_PORT="${METRICS_PORT:-47102}"
  left=$(((i + n - 1) % n))
  right=$(((i + 1) % n))
  pid="$(own_pid "$STATE/agent-$i.pid" "$STATE/")" || die "the agent of ${NODES[$i]} is not running"
  before="$(reroute_records)"
  log "killing the agent of ${NODES[$i]} (pid $pid) with SIGKILL"
  kill -KILL "$pid"
  deadline=$((SECONDS + TIMEOUT))
  until after="$(reroute_records)" && [[ -n $(comm -13 <(sort <<<"$before") <(sort <<<"$after") | grep -E "^(${NODES[$left]}|${NODES[$right]})=.+") ]]; do
    ((SECONDS < deadline)) || die "no reroute reported by ${NODES[$left]} or ${NODES[$right]} within ${TIMEOUT}s"
    sleep 1
  done
  log "reroute times the agents measured (MeshNode status.lastRerouteDuration):"
  kctl get meshnodes -o custom-columns='NODE:.spec.nodeName,NEIGHBOURS:.status.neighbourCount,ROUTES:.status.routeCount,LAST REROUTE:.status.lastRerouteDuration' >&2
  deadline=$((SECONDS + 30))
  until [[ -n $(kctl get meshnetwork "$MESH" -o jsonpath='{.status.lastRerouteDuration}') ]]; do
    ((SECONDS < deadline)) || die "MeshNetwork $MESH shows no lastRerouteDuration 30s after the agents reported one"
    sleep 1
  done
  log "MeshNetwork $MESH: lastRerouteDuration=$(kctl get meshnetwork "$MESH" -o jsonpath='{.status.lastRerouteDuration}')"
  answer="$(curl -fsS --max-time 10 "http://$(mgmt_ns "$left"):$METRICS_PORT/ping?to=${NODES[$right]}&count=3")" ||
    die "the ping from ${NODES[$left]} to ${NODES[$right]} failed"
  hops="$(grep -o '"hops_there":[0-9]*' <<<"$answer" | head -n 1 | cut -d: -f2)"
  [[ $hops == $((n - 2)) ]] || die "${NODES[$left]} reaches ${NODES[$right]} in '${hops}' hops, expected $((n - 2)) (around the ring): $answer"
  log "${NODES[$left]} -> ${NODES[$right]} now takes $hops hops, the long way round the ring"
  log "restarting the agent of ${NODES[$i]}"
  start_agent "$i"
  wait_converged
}

# Fills NODES from the running demo's state (sorted as when it started).
load_nodes() {
  local n
  [[ -f $STATE/agent.yaml ]] || die "the demo agents are not up (run: make demo)"
  NODES=()
  for ((n = 0; n < MAX_NODES; n++)); do
    [[ -f $STATE/node-$n ]] || break
    NODES+=("$(cat "$STATE/node-$n")")
  done
}

# ---------------------------------------------------------------------------------------------
# eBPF: counters in the records, fault injection by hand
# ---------------------------------------------------------------------------------------------

# fault_api <i> <method> <path>: a request to agent i's fault endpoint, which listens on the
# loopback of its namespace only.
fault_api() {
  ip netns exec "$(netns "$1")" curl -sS --fail-with-body --max-time 5 -X "$2" \
    "http://127.0.0.1:$FAULT_PORT$3"
}

# check_neighbours <i> <j>: i and j are agents of the demo and ring neighbours.
check_neighbours() {
  local i=$1 j=$2 n=${#NODES[@]}
  [[ $i =~ ^[0-9]+$ && $j =~ ^[0-9]+$ ]] || die "agent indices are numbers, not '$i' and '$j'"
  ((i < n && j < n)) || die "the demo has agents 0..$((n - 1)), not $i and $j"
  if ((i == j || (j != (i + 1) % n && i != (j + 1) % n))); then
    die "agents $i and $j are not neighbours in the ring of $n"
  fi
}

inject_loss() {
  local i=$1 j=$2 percent=$3 seconds=$4 answer
  load_nodes
  check_neighbours "$i" "$j"
  if ! [[ $percent =~ ^[0-9]+$ ]] || ((percent < 1 || percent > 100)); then
    die "the loss is a whole percentage from 1 to 100, not '$percent'"
  fi
  if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    die "the duration is a number of seconds, not '$seconds'"
  fi
  # The agent answers once its chaos executor and eBPF datapath carry the fault, or says why not.
  answer="$(fault_api "$i" POST "/chaos/faults?peer=$(node_addr "$j")&action=loss&percent=$percent&seconds=$seconds")" ||
    die "agent $i (${NODES[$i]}) refused the fault: $answer (see: $0 datapath $i)"
  log "${NODES[$i]} drops $percent% of its mesh packets to and from ${NODES[$j]} ($(node_addr "$j")) for ${seconds}s (eBPF fault map)"
  # The executor reports a fault set by hand on the MeshNode record, as experiment by-hand.
  local deadline=$((SECONDS + 10)) reported
  until reported="$(kctl get meshnode "$MESH-${NODES[$i]}" -o jsonpath='{.status.chaos[?(@.experiment=="by-hand")].activeEntries}' 2>/dev/null)" &&
    [[ $reported == 1 ]]; do
    ((SECONDS < deadline)) || die "${NODES[$i]}'s MeshNode record does not report the fault set by hand (activeEntries '$reported')"
    sleep 0.5
  done
  log "${NODES[$i]}'s MeshNode record reports it: status.chaos[experiment=by-hand].activeEntries $reported"
}

clear_fault() {
  local i=$1 j=$2
  load_nodes
  check_neighbours "$i" "$j"
  fault_api "$i" DELETE "/chaos/faults?peer=$(node_addr "$j")" >/dev/null ||
    die "agent $i (${NODES[$i]}) could not remove the fault"
  log "${NODES[$i]}: fault towards ${NODES[$j]} removed"
}

# neighbour_field <i> <j> <field>: <field> of neighbour j in agent i's MeshNode record.
neighbour_field() {
  kctl get meshnode "$MESH-${NODES[$1]}" \
    -o jsonpath="{.status.neighbours[?(@.node==\"${NODES[$2]}\")].$3}" 2>/dev/null
}

show_ebpf_records() {
  kctl get meshnodes -o wide >&2
  printf '\n' >&2
  kctl get meshnodes -o custom-columns='NODE:.spec.nodeName,NEIGHBOURS:.status.neighbours[*].node,COST:.status.neighbours[*].cost,EBPF TX:.status.neighbours[*].ebpfTxPackets,EBPF RX:.status.neighbours[*].ebpfRxPackets,EBPF DROPS:.status.neighbours[*].ebpfDrops' >&2
}

# ebpf [i] [j]: the "done when" of the eBPF datapath issue, on the running demo.
ebpf() {
  need
  local i=${1:-0} j=${2:-1} n k deadline line node pairs pair counts missing unavailable
  local before after cost last="" threshold
  load_nodes
  n=${#NODES[@]}
  ((n >= 2)) || die "the eBPF check needs at least 2 agents (have $n)"
  check_neighbours "$i" "$j"

  # 1. Every agent runs the datapath: condition EbpfUnavailable=False on every record.
  deadline=$((SECONDS + 60))
  while :; do
    unavailable=""
    missing=""
    for ((k = 0; k < n; k++)); do
      line="$(kctl get meshnode "$MESH-${NODES[$k]}" -o jsonpath='{.status.conditions[?(@.type=="EbpfUnavailable")].status}|{.status.conditions[?(@.type=="EbpfUnavailable")].reason}|{.status.conditions[?(@.type=="EbpfUnavailable")].message}' 2>/dev/null || true)"
      case "${line%%|*}" in
        False) ;;
        True) unavailable+="  ${NODES[$k]}: ${line#*|}"$'\n' ;;
        *) missing+=" ${NODES[$k]}" ;;
      esac
    done
    [[ -z $unavailable ]] || die "eBPF IS UNAVAILABLE in the demo (condition EbpfUnavailable=True; reason|message):"$'\n'"$unavailable""The agents must run as root with BPF permitted, and the MeshNetwork must say ebpf.mode: tc (examples/meshnetwork.yaml)."
    [[ -n $missing ]] || break
    ((SECONDS < deadline)) || die "no EbpfUnavailable condition after 60s on:$missing (is the agent reporting?)"
    sleep 1
  done
  log "every agent runs the eBPF datapath:"
  kctl get meshnodes -o custom-columns='NODE:.spec.nodeName,EBPF UNAVAILABLE:.status.conditions[?(@.type=="EbpfUnavailable")].status,REASON:.status.conditions[?(@.type=="EbpfUnavailable")].reason,MESSAGE:.status.conditions[?(@.type=="EbpfUnavailable")].message' >&2

  # 2. Every record shows traffic counted by eBPF both ways for each of its ring neighbours.
  log "waiting (at most 60s) for every MeshNode to show its neighbours' traffic counted by eBPF"
  deadline=$((SECONDS + 60))
  while :; do
    counts="$(kctl get meshnodes -o jsonpath='{range .items[*]}{.spec.nodeName}{":"}{range .status.neighbours[*]}{" "}{.node}{"="}{.ebpfTxPackets}{"/"}{.ebpfRxPackets}{end}{"\n"}{end}' 2>/dev/null || true)"
    missing=""
    for ((k = 0; k < n; k++)); do
      line="$(grep "^${NODES[$k]}:" <<<"$counts" || true)"
      pairs="${line#*:}"
      # Two neighbours in a ring of three or more, one in a ring of two.
      (($(wc -w <<<"$pairs") == (n > 2 ? 2 : 1))) || { missing+=" ${NODES[$k]}(neighbours:${pairs:- none})"; continue; }
      for pair in $pairs; do
        [[ ${pair#*=} =~ ^[1-9][0-9]*/[1-9][0-9]*$ ]] || missing+=" ${NODES[$k]}->$pair"
      done
    done
    [[ -n $missing ]] || break
    ((SECONDS < deadline)) || {
      show_ebpf_records
      die "after 60s, no eBPF traffic (tx/rx) in the MeshNode records for:$missing"
    }
    sleep 1
  done
  show_ebpf_records
  log "per-peer traffic counted by eBPF is in every MeshNode record (status.neighbours[].ebpfTxPackets/ebpfRxPackets)"
  log "${NODES[$i]}'s datapath (GET /datapath on its fault endpoint):"
  fault_api "$i" GET /datapath >&2 && printf '\n' >&2

  # 3. The cost of link i -> j before any fault, once it has settled below two hops.
  deadline=$((SECONDS + 60))
  until before="$(neighbour_field "$i" "$j" cost)" && [[ $before =~ ^[0-9]+$ ]] && ((before < 512)); do
    ((SECONDS < deadline)) || die "${NODES[$i]}'s record shows no settled cost to ${NODES[$j]} after 60s ('$before')"
    sleep 1
  done
  threshold=$((before + 256))
  log "before: ${NODES[$i]} -> ${NODES[$j]} link cost $before in ${NODES[$i]}'s MeshNode (256 is a perfect link)"

  # 4. 30% loss by hand; the cost in the record must rise by at least a hop.
  inject_loss "$i" "$j" 30 120
  log "waiting (at most 90s) for the cost in ${NODES[$i]}'s record to reach $threshold or more"
  deadline=$((SECONDS + 90))
  while :; do
    cost="$(neighbour_field "$i" "$j" cost)"
    if [[ $cost != "$last" ]]; then
      log "  ${NODES[$i]} -> ${NODES[$j]}: cost ${cost:-(no live session)}, eBPF drops $(neighbour_field "$i" "$j" ebpfDrops)"
      last=$cost
    fi
    [[ $cost =~ ^[0-9]+$ ]] && ((cost >= threshold)) && break
    if ((SECONDS >= deadline)); then
      clear_fault "$i" "$j" || true
      die "the cost of ${NODES[$i]} -> ${NODES[$j]} did not rise to $threshold within 90s of 30% loss (last: '$cost', before: $before)"
    fi
    sleep 1
  done
  after=$cost
  show_ebpf_records
  log "with 30% loss: ${NODES[$i]} -> ${NODES[$j]} link cost $before -> $after"

  # 5. The fault removed: the cost comes back down.
  clear_fault "$i" "$j"
  deadline=$((SECONDS + 90))
  while :; do
    cost="$(neighbour_field "$i" "$j" cost)"
    if [[ $cost != "$last" ]]; then
      log "  ${NODES[$i]} -> ${NODES[$j]}: cost ${cost:-(no live session)}"
      last=$cost
    fi
    [[ $cost =~ ^[0-9]+$ ]] && ((cost <= before + 128)) && break
    ((SECONDS < deadline)) || die "the cost of ${NODES[$i]} -> ${NODES[$j]} did not come back to $((before + 128)) or less within 90s of removing the fault (last: '$cost')"
    sleep 1
  done
  log "fault removed: ${NODES[$i]} -> ${NODES[$j]} link cost $after -> $cost (before the fault: $before)"
  show_ebpf_records
}

# fl [name]: the "done when" of the federated-learning issue on the running demo. Waits for the
# FLTrainingRound (examples/flround.yaml, applied by make demo) to run its rounds on the agents
# and reach Completed, printing `kubectl get flrounds` as it advances; checks the final accuracy
# against FL_MIN_ACCURACY (default 75%) and verifies the rounds' hash chain.
fl() {
  need
  local job=${1:-demo-round} deadline=$((SECONDS + ${X0_FL_TIMEOUT:-300})) last="" current phase accuracy
  log "waiting (at most ${X0_FL_TIMEOUT:-300}s) for FLTrainingRound $job to complete"
  while :; do
    phase="$(kctl get flround "$job" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    current="$(kctl get flround "$job" 2>&1)"
    if [[ "$(without_age <<<"$current")" != "$last" ]]; then
      printf '%s\n' "$current"
      last="$(without_age <<<"$current")"
    fi
    [[ $phase == Completed ]] && break
    if [[ $phase == Failed ]] || ((SECONDS >= deadline)); then
      kctl get flround "$job" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
      agent_tails_existing
      die "FLTrainingRound $job did not complete (phase '${phase:-none}')"
    fi
    sleep 2
  done
  kctl get flround "$job" -o jsonpath='{range .status.records[*]}round {.round}: accuracy {.accuracy}%, accepted {.accepted}, rejected {.rejected}{"\n"}{end}' >&2
  accuracy="$(kctl get flround "$job" -o jsonpath='{.status.accuracy}')"
  accuracy="${accuracy%\%}"
  awk -v a="$accuracy" -v min="${FL_MIN_ACCURACY:-75}" 'BEGIN { exit !(a + 0 >= min + 0) }' ||
    die "final accuracy ${accuracy}% is below ${FL_MIN_ACCURACY:-75}%"
  log "FLTrainingRound $job completed: final accuracy ${accuracy}%"
  KUBECONFIG="$CLUSTER_STATE/kubeconfig" "$ROOT/target/debug/x0tta6bl4-operator" verify-chain -n "$NS" "$job" ||
    die "the hash chain of $job does not verify"
}

# The last lines of every agent log the state directory has.
agent_tails_existing() {
  local f
  for f in "$STATE"/agent-*.log; do
    [[ -f $f ]] || continue
    printf -- '----- last 15 lines of %s -----\n' "$f" >&2
    tail -n 15 "$f" >&2 || true
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  failover) failover "${2:-0}" ;;
  fl) fl "${2:-demo-round}" ;;
  ebpf) ebpf "${2:-0}" "${3:-1}" ;;
  inject-loss)
    (($# == 5)) || die "usage: $0 inject-loss <i> <j> <percent> <seconds>"
    inject_loss "$2" "$3" "$4" "$5"
    ;;
  clear-fault)
    (($# == 3)) || die "usage: $0 clear-fault <i> <j>"
    clear_fault "$2" "$3"
    ;;
  datapath)
    (($# == 2)) || die "usage: $0 datapath <i>"
    load_nodes
    if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 >= ${#NODES[@]})); then die "no agent '$2'"; fi
    fault_api "$2" GET /datapath && printf '\n'
    ;;
  supervise) supervise ;;
  kill)
    # kill <i>: the agent of the i-th node dies as in a crash (SIGKILL); its kernel fault
    # entries stay until their expiry, as they would on a real node.
    (($# == 2)) || die "usage: $0 kill <i>"
    load_nodes
    pid="$(own_pid "$STATE/agent-$2.pid" "$STATE/")" || die "the agent of node $2 is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    log "agent $2 (${NODES[$2]}, pid $pid) killed"
    ;;
  start)
    # start <i>: (re)start the agent of the i-th node, with the demo's configuration.
    (($# == 2)) || die "usage: $0 start <i>"
    need
    load_nodes
    METRICS_PORT="$(config_port metricsPort)"
    METRICS_PORT="${METRICS_PORT:-47102}"
    start_agent "$2"
    ;;
  status-addr)
    # status-addr <i>: host:port of the i-th agent's /metrics, /status and /ping.
    (($# == 2)) || die "usage: $0 status-addr <i>"
    load_nodes
    METRICS_PORT="$(config_port metricsPort)"
    printf '%s:%s\n' "$(mgmt_ns "$2")" "${METRICS_PORT:-47102}"
    ;;
  *)
    echo "usage: $0 up|down|failover [i]|fl [job]|ebpf [i] [j]|inject-loss <i> <j> <percent> <seconds>|clear-fault <i> <j>|datapath <i>|kill <i>|start <i>|status-addr <i>" >&2
    exit 2
    ;;
esac
