#!/usr/bin/env bash
# The SPIFFE identity chain on the demo mesh, with a real SPIRE (SPIRE → X.509-SVID → endorsement
# → session), checked on every agent. Run on a demo started with SPIRE:
#
#   X0_SPIRE=1 X0_SPIRE_SVID_TTL=40 make demo && e2e/demo-spire.sh check   (make demo-spire)
#
#   demo-spire.sh check [step...]
#       svids      every MeshNode shows SvidValid=True, its SPIFFE ID and SVID expiry, and every
#                  agent's sessions were established with SVIDs
#       rotation   pings across the ring while SPIRE rotates every SVID (half its TTL): no ping
#                  lost, every agent accepted its peers' rotated SVIDs, no session closed
#       mismatch   node 0's SPIRE agent issues node 1's SPIFFE ID to node 0's mesh agent: its
#                  peers refuse every session with it (svid_endorsement_mismatch, wrong_spiffe_id)
#       foreign    node 0's mesh agent takes an SVID of another trust domain (a second SPIRE):
#                  refused and counted (foreign_trust_domain)
#       outage     spire-server stopped for a quarter of the SVID TTL (at most 30s): no session
#                  lost, no new session needed
#       expiry     node 0's SPIRE agent stopped: its SVID runs out, its sessions end at the SVID's
#                  notAfter (+ the margin stated in docs/IDENTITY.md), closed by whichever end's
#                  timer fires first, and
#                  its MeshNode says SvidExpired; started again, it rejoins
#       removed    node 0's registration entry deleted: SPIRE withdraws its SVID, its sessions end
#                  at its last SVID's notAfter; registered again, it rejoins
#     Ends with "N passed, M failed"; after each step the mesh is converged again.
#
# Environment: X0_CLUSTER (default demo), X0_MESH (default demo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
CLUSTER_NAME="${X0_CLUSTER:-demo}"
MESH="${X0_MESH:-demo}"
NS=default
CLUSTER_STATE="$ROOT/.cache/clusters/$CLUSTER_NAME"
KUBECTL_BIN="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
AGENTS_STATE="$ROOT/.cache/demo-agents"
AGENTS=e2e/demo-agents.sh
SPIRE=e2e/spire.sh
# The margin after an SVID's notAfter within which its peers must have closed their sessions: the
# session timer fires at notAfter; the rest is scheduling and the metrics scrape of this check.
EXPIRY_MARGIN=3

log() { printf '[demo-spire %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
# shellcheck source=lib/demo.sh
source e2e/lib/demo.sh

load_spire_nodes() {
  load_nodes "$AGENTS_STATE"
  [[ -f $AGENTS_STATE/spire ]] || die "the demo runs without SPIRE (run: make demo-spire)"
  TRUST_DOMAIN="$(cat "$AGENTS_STATE/spire")"
}
spiffe_id_of() { printf 'spiffe://%s/ns/%s/mesh/%s/node/%s' "$TRUST_DOMAIN" "$NS" "$MESH" "$1"; }
status_addr() { $AGENTS status-addr "$1"; }

# metric_of <i> <name> [label filter]: agent i's metric summed over its label sets (0 if absent).
metric_of() {
  curl -fsS --max-time 5 "http://$(status_addr "$1")/metrics" |
    awk -v name="$2" -v filter="${3:-}" '
      $1 ~ ("^" name "({|$)") && index($1, filter) { sum += $NF }
      END { printf "%d\n", sum }'
}
# total <name> [filter] [skip index]: summed over every agent (but one).
total() {
  local i sum=0
  for ((i = 0; i < ${#NODES[@]}; i++)); do
    [[ $i == "${3:-}" ]] && continue
    sum=$((sum + $(metric_of "$i" "$1" "${2:-}")))
  done
  echo "$sum"
}

condition_of() {
  kctl get meshnode "$MESH-$1" -o jsonpath="{.status.conditions[?(@.type==\"SvidValid\")].$2}" 2>/dev/null
}
svid_reason_is() { [[ "$(condition_of "$1" reason)" == "$2" ]]; }
converged() { kctl wait --for=condition=Converged --timeout=2s "meshnetwork/$MESH" >/dev/null; }
wait_converged() { wait_for 120 "MeshNetwork $MESH Converged=True" converged; }
above() { (($("${@:2}") > $1)); }
past() { (($(date +%s) >= $1)); }

# restart_agent <i> [env...]: the agent of node i killed and started again (with env, if given).
restart_agent() {
  local i=$1
  shift
  $AGENTS kill "$i" >/dev/null 2>&1 || true
  env "$@" "$ROOT/$AGENTS" start "$i" >/dev/null
}

# ---------------------------------------------------------------------------------------------

step_svids() {
  local i node expiry
  kctl get meshnodes -o wide >&2
  for ((i = 0; i < ${#NODES[@]}; i++)); do
    node=${NODES[$i]}
    wait_for 30 "$node SvidValid=True" svid_reason_is "$node" SvidInUse
    [[ "$(kctl get meshnode "$MESH-$node" -o jsonpath='{.status.spiffeId}')" == "$(spiffe_id_of "$node")" ]]
    expiry="$(kctl get meshnode "$MESH-$node" -o jsonpath='{.status.svidExpiry}')"
    [[ -n $expiry ]]
    (($(metric_of "$i" x0_agent_svid_updates_total 'outcome="received"') >= 1))
    (($(metric_of "$i" x0_agent_sessions_established_total) >= 1))
    # Hybrid post-quantum sessions only: the SVID authenticates, X25519MLKEM768 keys them.
    local pq classical
    pq="$(kctl get meshnode "$MESH-$node" -o jsonpath='{.status.pqSessions}')"
    classical="$(kctl get meshnode "$MESH-$node" -o jsonpath='{.status.classicalSessions}')"
    ((${pq:-0} >= 1 && ${classical:-0} == 0))
    log "$node: $(condition_of "$node" message), expires $expiry; $pq X25519MLKEM768 sessions, ${classical:-0} classical"
  done
  log "refusals so far: $(total x0_agent_session_refusals_total)"
}

step_rotation() {
  local before_accepted before_closed sent=0 lost=0 answer deadline far=$((${#NODES[@]} / 2)) expiry
  before_accepted="$(total x0_agent_svid_updates_total 'outcome="peer_accepted"')"
  before_closed="$(total x0_agent_svid_session_closes_total)"
  # Past the latest SVID expiry seen now: every SVID in use at the start was replaced meanwhile.
  expiry="$(kctl get meshnodes -o jsonpath='{range .items[*]}{.status.svidExpiry}{"\n"}{end}' | sort | tail -n 1)"
  deadline=$(($(date -d "$expiry" +%s) + 5))
  log "pinging ${NODES[$far]} from ${NODES[0]} until $(date -d "@$deadline" +%T) (the last SVID in use now expires at $expiry)"
  while (($(date +%s) < deadline)); do
    answer="$(curl -sS --max-time 5 "http://$(status_addr 0)/ping?to=${NODES[$far]}&count=5" || true)"
    sent=$((sent + 5))
    lost=$((lost + 5 - $(grep -o '"rtt_ms"' <<<"$answer" | wc -l)))
  done
  local accepted=$(($(total x0_agent_svid_updates_total 'outcome="peer_accepted"') - before_accepted))
  local closed=$(($(total x0_agent_svid_session_closes_total) - before_closed))
  log "rotation under traffic: $sent pings, $lost lost; $accepted rotated SVIDs accepted by peers; $closed sessions closed by an SVID's expiry"
  ((lost == 0 && closed == 0 && accepted >= ${#NODES[@]}))
}

step_mismatch() {
  local node=${NODES[0]} other=${NODES[1]} before
  before="$(total x0_agent_session_refusals_total '' 0)"
  # node 0's SPIRE agent now issues node 1's SPIFFE ID (and no longer node 0's) to uid 0.
  $SPIRE entry-delete "$(spiffe_id_of "$node")" "$node" >/dev/null
  $SPIRE entry "$node" "$(spiffe_id_of "$other")" 60 >/dev/null
  wait_for 60 "node 0's Workload API serves $other's ID" \
    sh -c "'$ROOT/$SPIRE' fetch '$node' 2>/dev/null | grep -q 'node/$other\$'"
  # Started on that socket as it is (a plain start would register node 0's own ID again).
  restart_agent 0 X0_SVID_SOCKET="$($SPIRE agent-socket "$node")"
  # Both ways: node 0 dials them (they see an SVID and an endorsement of two nodes), they dial
  # node 0's address (the SVID is not of the node the records place there).
  mismatched() {
    (($(total x0_agent_session_refusals_total 'reason="svid_endorsement_mismatch"' 0) > 0 &&
      $(total x0_agent_session_refusals_total 'reason="wrong_spiffe_id"' 0) > 0))
  }
  wait_for 30 "peers refuse $node's SVID for $other, both ways" mismatched
  log "$node presenting $other's SVID: refused by its peers ($(total x0_agent_session_refusals_total 'reason="svid_endorsement_mismatch"' 0) svid_endorsement_mismatch, $(total x0_agent_session_refusals_total 'reason="wrong_spiffe_id"' 0) wrong_spiffe_id; $(($(total x0_agent_session_refusals_total '' 0) - before)) refusals in all)"
  (($(metric_of 0 x0_agent_sessions '' ) == 0)) || { log "node 0 still has sessions"; return 1; }
  # Back to its own ID.
  $SPIRE entry-delete "$(spiffe_id_of "$other")" "$node" >/dev/null
  $SPIRE entry "$node" "$(spiffe_id_of "$node")" "$(cat "$AGENTS_STATE/spire-svid-ttl" 2>/dev/null || echo 60)" >/dev/null
  wait_for 60 "node 0's Workload API serves its own ID again" \
    sh -c "'$ROOT/$SPIRE' fetch '$node' 2>/dev/null | grep -q 'node/$node\$'"
  restart_agent 0
  wait_converged
}

step_foreign() {
  local node=${NODES[0]} socket before
  before="$(total x0_agent_session_refusals_total 'reason="foreign_trust_domain"' 0)"
  X0_SPIRE_NAME=foreign X0_SPIRE_PORT=47483 $SPIRE up evil.example
  socket="$(X0_SPIRE_NAME=foreign X0_SPIRE_PORT=47483 $SPIRE agent-start "$node")"
  X0_SPIRE_NAME=foreign X0_SPIRE_PORT=47483 $SPIRE entry "$node" \
    "spiffe://evil.example/ns/$NS/mesh/$MESH/node/$node" 300 >/dev/null
  restart_agent 0 X0_SVID_SOCKET="$socket"
  foreign_refused() { above "$before" total x0_agent_session_refusals_total 'reason="foreign_trust_domain"' 0; }
  wait_for 30 "peers refuse $node's SVID of evil.example" foreign_refused
  log "$node with an SVID of evil.example: $(($(total x0_agent_session_refusals_total 'reason="foreign_trust_domain"' 0) - before)) foreign_trust_domain refusals by its peers, $(metric_of 0 x0_agent_sessions) sessions"
  (($(metric_of 0 x0_agent_sessions) == 0))
  X0_SPIRE_NAME=foreign $SPIRE down >/dev/null 2>&1
  restart_agent 0
  wait_converged
}

step_outage() {
  local established closed
  established="$(total x0_agent_sessions_established_total)"
  closed="$(total x0_agent_svid_session_closes_total)"
  # A quarter of the SVID TTL: SPIRE renews at half-life, so every SVID outlives the outage.
  local ttl outage
  ttl="$(cat "$AGENTS_STATE/spire-svid-ttl" 2>/dev/null || echo 3600)"
  outage=$((ttl / 4 < 30 ? ttl / 4 : 30))
  $SPIRE server-stop
  log "spire-server stopped for ${outage}s (SVID TTL ${ttl}s)"
  wait_for $((outage + 5)) "${outage}s of outage" past "$(($(date +%s) + outage))"
  $SPIRE server-start
  converged
  log "after the outage: $(($(total x0_agent_sessions_established_total) - established)) new sessions, $(($(total x0_agent_svid_session_closes_total) - closed)) closed by SVID expiry"
  (($(total x0_agent_sessions_established_total) == established))
  (($(total x0_agent_svid_session_closes_total) == closed))
}

# cut_off <node> <how> <command...>: runs the command that stops the node's SVID from being
# renewed, then checks that its sessions end at its SVID's notAfter (within EXPIRY_MARGIN) and
# that its MeshNode says SvidExpired.
cut_off() {
  local node=$1 how=$2 expiry_s closed_at
  shift 2
  "$@" >/dev/null
  # The agent's own gauge, not its MeshNode (written every few seconds: a renewal just before the
  # cut would not be there yet).
  expiry_s="$(metric_of 0 x0_agent_svid_expiry_timestamp_seconds)"
  log "$node: $how; the SVID it holds expires at $(date -d "@$expiry_s" +%T)"
  out_of_mesh() { (($(metric_of 0 x0_agent_sessions) == 0)); }
  wait_for $((expiry_s - $(date +%s) + 60)) "$node has no session" out_of_mesh
  closed_at="$(date +%s)"
  # The last SVID it held (one renewed while the cut took effect is the one that counts).
  expiry_s="$(metric_of 0 x0_agent_svid_expiry_timestamp_seconds)"
  # Both ends' timers fire at the notAfter: whichever closes first counts it (its peers:
  # peer_svid_expired, the node itself: own_svid_expired), the other end sees the session end.
  log "$node's last session ended at $(date -d "@$closed_at" +%T), $((closed_at - expiry_s))s after its SVID's notAfter (margin ${EXPIRY_MARGIN}s); SVID expiry closes so far: by peers $(total x0_agent_svid_session_closes_total 'reason="peer_svid_expired"' 0), by itself $(metric_of 0 x0_agent_svid_session_closes_total 'reason="own_svid_expired"')"
  ((closed_at - expiry_s <= EXPIRY_MARGIN && closed_at - expiry_s >= -1))
  wait_for 40 "$node's MeshNode says SvidExpired" svid_reason_is "$node" SvidExpired
  log "$node: $(condition_of "$node" message)"
}

# rejoins <node> <command...>: runs the command that lets SPIRE issue the node's SVID again, then
# checks that node 0 forms sessions again with a new SVID and the mesh converges.
rejoins() {
  local node=$1
  shift
  "$@" >/dev/null
  in_mesh() { (($(metric_of 0 x0_agent_sessions) > 0)); }
  wait_for 60 "$node has sessions again" in_mesh
  wait_for 40 "$node SvidValid=True again" svid_reason_is "$node" SvidInUse
  wait_converged
  log "$node rejoined with a new SVID (expires $(kctl get meshnode "$MESH-$node" -o jsonpath='{.status.svidExpiry}'))"
}

step_expiry() {
  local node=${NODES[0]}
  cut_off "$node" "its SPIRE agent stopped" $SPIRE agent-stop "$node"
  rejoins "$node" $SPIRE agent-start "$node"
}

step_removed() {
  local node=${NODES[0]}
  cut_off "$node" "its registration entry deleted" $SPIRE entry-delete "$(spiffe_id_of "$node")" "$node"
  rejoins "$node" $SPIRE entry "$node" "$(spiffe_id_of "$node")" "$(cat "$AGENTS_STATE/spire-svid-ttl" 2>/dev/null || echo 60)"
}

PASSED=0
FAILED=0
FAILURES=()
step() {
  local name=$1 rc
  log "----- $name"
  (set -e; "step_$name")
  rc=$?
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    wait_converged || true
  fi
}

check() {
  load_spire_nodes
  # The foreign trust domain's SPIRE goes, whatever happened to the step that started it.
  trap 'X0_SPIRE_NAME=foreign "$ROOT/$SPIRE" down >/dev/null 2>&1 || true' EXIT
  local steps=("$@")
  ((${#steps[@]})) || steps=(svids rotation mismatch foreign outage expiry removed)
  for s in "${steps[@]}"; do
    declare -F "step_$s" >/dev/null || die "no step '$s'"
    set +e
    step "$s"
    set -e
  done
  log "$PASSED passed, $FAILED failed${FAILURES[*]:+: ${FAILURES[*]}}"
  ((FAILED == 0))
}

case "${1:-}" in
  check) shift && check "$@" ;;
  *)
    echo "usage: $0 check [svids|rotation|mismatch|foreign|outage|expiry|removed...]" >&2
    exit 2
    ;;
esac
