#!/usr/bin/env bash
# A real trace collector for the demo: Jaeger's v2 backend (cmd/jaeger, built from source by
# e2e/cluster/build-binaries.sh jaeger), a plain process on this machine with in-memory storage,
# receiving OTLP/HTTP from the operator (on the host) and from the agents (each in its network
# namespace x0demo-<i>, reaching the host over its management veth), and what it received:
#
#   demo-traces.sh up       (re)start it with a generated config; waits (at most 60s) until its
#                           query API answers and its OTLP/HTTP receiver accepts a request
#   demo-traces.sh endpoint [i]
#                           the OTLP/HTTP base URL agent i exports to
#                           (http://198.19.252.<4i+1>:<port>, the host side of its veth), or,
#                           without i, the one for a process on the host (http://127.0.0.1:<port>)
#   demo-traces.sh trace <trace-id>
#                           the trace as Jaeger's query API returns it (/api/traces/<id>, JSON)
#   demo-traces.sh check <trace-id> <instance>...
#                           wait (at most X0_TRACE_TIMEOUT seconds, default 60) until Jaeger has
#                           that trace with at least one span from each named instance (a span's
#                           instance is its process's service.instance.id tag), then print one
#                           summary line (spans, processes, each instance's spans and operations)
#                           and the span tree (roots, depth); on a timeout print which instances
#                           have no span and what the trace had, and exit 1
#   demo-traces.sh fl [job] the FLTrainingRound's trace (default demo-round; its UID is the
#                           trace id): `check` with the operator's root span and every
#                           participant (`make demo-traces`)
#   demo-traces.sh running  exit 0 while it runs (the demo then points the operator and the
#                           agents at it)
#   demo-traces.sh down     stop it and delete its state (idempotent)
#
# Listeners (all TCP; Jaeger's other receivers, its gRPC OTLP receiver, health check, zpages,
# expvar, pprof, remote sampling and its own metrics endpoint are not configured, so not opened):
#
#   0.0.0.0:$X0_OTLP_PORT (default 47318)                 OTLP/HTTP receiver (/v1/traces); on
#                                                         every address so the agents' namespaces
#                                                         reach it through their veths
#   127.0.0.1:$X0_JAEGER_QUERY_PORT (default 47686)       query API and UI (/api/traces/<id>)
#   127.0.0.1:$X0_JAEGER_QUERY_GRPC_PORT (default 47685)  query gRPC API (jaeger_query always
#                                                         opens one)
#
# Jaeger's own tracing of its query service is off (it would export to localhost:4317).
#
# State (generated config jaeger.yaml, jaeger.log, jaeger.pid, the ports) in .cache/demo-traces/.
# Needs the Jaeger binary (.cache/bin/jaeger-$JAEGER_VERSION/jaeger, or $JAEGER), curl, python3,
# ss (iproute2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
JAEGER="${JAEGER:-$ROOT/.cache/bin/jaeger-$JAEGER_VERSION/jaeger}"
STATE="$ROOT/.cache/demo-traces"
OTLP_PORT="${X0_OTLP_PORT:-47318}"
QUERY_PORT="${X0_JAEGER_QUERY_PORT:-47686}"
QUERY_GRPC_PORT="${X0_JAEGER_QUERY_GRPC_PORT:-47685}"
MAX_TRACES="${X0_JAEGER_MAX_TRACES:-10000}"
UP_TIMEOUT=60
TRACE_TIMEOUT="${X0_TRACE_TIMEOUT:-60}"
MAX_NODES=250

log() { printf '[demo-traces %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

need() {
  [[ -x $JAEGER ]] || die "jaeger not found at $JAEGER (build it: e2e/cluster/build-binaries.sh jaeger)"
  command -v curl >/dev/null || die "curl not found"
  command -v python3 >/dev/null || die "python3 not found"
  command -v ss >/dev/null || die "ss not found (iproute2)"
}

valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 > 0 && $1 < 65536)); }

# own_pid <pidfile> <cmdline substring>: the pid, if that process runs and is ours.
own_pid() {
  local pid cmdline
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ $cmdline == *"$2"* ]] || return 1
  echo "$pid"
}
jaeger_pid() { own_pid "$STATE/jaeger.pid" "--config=$STATE/jaeger.yaml"; }
running() { jaeger_pid >/dev/null; }

# The ports of the running Jaeger (written by up), else those of the environment.
otlp_port() { cat "$STATE/otlp-port" 2>/dev/null || echo "$OTLP_PORT"; }
query_port() { cat "$STATE/query-port" 2>/dev/null || echo "$QUERY_PORT"; }
query_url() { printf 'http://127.0.0.1:%s' "$(query_port)"; }

# stop <pid>: SIGTERM, SIGKILL after 10s.
stop() {
  local deadline=$((SECONDS + 10))
  kill -TERM "$1" 2>/dev/null || return 0
  while kill -0 "$1" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

down() {
  local pid
  if pid="$(jaeger_pid)"; then
    stop "$pid"
    log "jaeger $pid stopped"
  fi
  rm -rf "$STATE"
}

# The TCP ports process <pid> listens on, as "address:port" words.
listening() { ss -Hltnp 2>/dev/null | grep -F "pid=$1," | awk '{print $4}' | sort -u | tr '\n' ' '; }

write_config() {
  cat >"$STATE/jaeger.yaml" <<YAML
# Generated by e2e/demo-traces.sh: Jaeger v2 ($JAEGER_VERSION) for the demo. Only what is listed
# here runs; see the header of e2e/demo-traces.sh for the listeners.
extensions:
  jaeger_storage:
    backends:
      demo_memory:
        memory:
          max_traces: $MAX_TRACES
  jaeger_query:
    storage:
      traces: demo_memory
    # On by default in v2: Jaeger would trace its own queries to localhost:4317.
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$QUERY_GRPC_PORT

receivers:
  otlp:
    protocols:
      # No grpc: entry, so no OTLP/gRPC listener.
      http:
        endpoint: 0.0.0.0:$OTLP_PORT

processors:
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: demo_memory

service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    # Level none: no internal metrics, so no Prometheus endpoint (the default is localhost:8888).
    metrics:
      level: none
    logs:
      level: info
YAML
}

# Ready: our process listens on both ports, the query API answers and the OTLP/HTTP receiver
# accepts an (empty) export request.
ready() {
  local pid="$1" socks
  socks="$(listening "$pid")"
  [[ " $socks" == *":$OTLP_PORT "* && " $socks" == *"127.0.0.1:$QUERY_PORT "* ]] || return 1
  curl -fsS --max-time 2 "http://127.0.0.1:$QUERY_PORT/api/services" >/dev/null 2>&1 || return 1
  curl -fsS --max-time 2 -X POST -H 'Content-Type: application/json' -d '{"resourceSpans":[]}' \
    "http://127.0.0.1:$OTLP_PORT/v1/traces" >/dev/null 2>&1
}

up() {
  need
  local p
  for p in "$OTLP_PORT" "$QUERY_PORT" "$QUERY_GRPC_PORT"; do valid_port "$p" || die "invalid port '$p'"; done
  down 2>/dev/null
  mkdir -p "$STATE"
  for p in "$OTLP_PORT" "$QUERY_PORT" "$QUERY_GRPC_PORT"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      die "port $p is already in use: $(ss -Hltnp "sport = :$p" 2>/dev/null | awk '{print $4, $6}' | tr '\n' ' ')"
    fi
  done
  write_config
  echo "$OTLP_PORT" >"$STATE/otlp-port"
  echo "$QUERY_PORT" >"$STATE/query-port"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the child shell
  setsid bash -c 'echo $$ >"$0" && exec "$@"' "$STATE/jaeger.pid" "$JAEGER" --config="$STATE/jaeger.yaml" \
    </dev/null >>"$STATE/jaeger.log" 2>&1 &
  local started=$SECONDS deadline=$((SECONDS + UP_TIMEOUT)) pid=""
  while :; do
    if pid="$(jaeger_pid)" && ready "$pid"; then break; fi
    if [[ -z $pid ]] && ((SECONDS - started > 2)); then
      tail -n 30 "$STATE/jaeger.log" >&2
      die "jaeger exited (log $STATE/jaeger.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$STATE/jaeger.log" >&2
      [[ -n $pid ]] && log "jaeger $pid listens on: $(listening "$pid")"
      die "jaeger not ready within ${UP_TIMEOUT}s (query API on 127.0.0.1:$QUERY_PORT, OTLP/HTTP on :$OTLP_PORT; log $STATE/jaeger.log)"
    fi
    sleep 0.2
  done
  log "jaeger $pid ($JAEGER_VERSION) ready in $((SECONDS - started))s: OTLP/HTTP $(endpoint) (agent i: $(endpoint 0 | sed 's/198\.19\.252\.1:/198.19.252.<4i+1>:/')), query $(query_url); listening on: $(listening "$pid")(log $STATE/jaeger.log; demo-traces.sh down stops it)"
}

# endpoint [i]: see the header. The host side of agent i's management veth, as demo-agents.sh
# numbers it (198.19.252.0/22, host 4i+1).
endpoint() {
  if (($# == 0)) || [[ -z $1 ]]; then
    printf 'http://127.0.0.1:%s\n' "$(otlp_port)"
    return
  fi
  [[ $1 =~ ^[0-9]+$ ]] && (($1 < MAX_NODES)) || die "agent index must be 0..$((MAX_NODES - 1)), not '$1'"
  local off=$((4 * $1 + 1))
  printf 'http://198.19.%d.%d:%s\n' $((252 + off / 256)) $((off % 256)) "$(otlp_port)"
}

trace_id() {
  local id="${1,,}"
  [[ $id =~ ^[0-9a-f]{1,32}$ ]] || die "not a trace id (1 to 32 hex digits): '$1'"
  echo "$id"
}

# fetch_trace <id>: Jaeger's JSON for it on stdout (also a 404's body: {"data":null,"errors":...}).
fetch_trace() { curl -sS --max-time 10 "$(query_url)/api/traces/$1"; }

trace() {
  local id json
  id="$(trace_id "${1:-}")"
  running || die "jaeger is not running (demo-traces.sh up)"
  json="$(fetch_trace "$id")" || die "query API $(query_url) did not answer"
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("data") else 1)' <<<"$json" ||
    die "jaeger has no trace $id: $json"
  printf '%s\n' "$json"
}

# The analysis of check: stdin Jaeger's /api/traces/<id> JSON, argv the trace id and the
# instances. Exit 0 with the summary when every instance has a span, 3 with what is missing
# and what the trace had otherwise (anything else is a failure of the analysis itself).
ANALYSE="$(
  cat <<'PY'
import collections, json, sys

tid, want = sys.argv[1], sys.argv[2:]
try:
    doc = json.load(sys.stdin)
except ValueError as e:
    print(f"trace {tid}: the query API returned no JSON ({e})")
    sys.exit(3)
traces = doc.get("data") or []
if not traces:
    errs = "; ".join(str(e.get("msg", e)) for e in (doc.get("errors") or []))
    print(f"trace {tid}: not in jaeger ({errs or 'no data'}); no spans from {' '.join(want)}")
    sys.exit(3)
spans = [s for t in traces for s in t.get("spans", [])]
procs = {k: v for t in traces for k, v in t.get("processes", {}).items()}

def instance(pid):
    for tag in procs.get(pid, {}).get("tags", []):
        if tag.get("key") == "service.instance.id":
            return str(tag.get("value"))
    return None

def who(pid):
    p = procs.get(pid, {})
    return instance(pid) or "(service %s, no service.instance.id)" % p.get("serviceName", "?")

by_inst = collections.OrderedDict()
for s in sorted(spans, key=lambda s: s.get("startTime", 0)):
    by_inst.setdefault(who(s.get("processID")), []).append(s["operationName"])

def describe(name):
    ops = by_inst[name]
    uniq = list(collections.OrderedDict.fromkeys(ops))
    return f"{name}: {len(ops)} spans ({', '.join(uniq)})"

# The span tree: a span whose CHILD_OF parent is not in the trace counts as a root.
ids = {s["spanID"]: s for s in spans}
parent = {}
for s in spans:
    for r in s.get("references") or []:
        if r.get("refType") == "CHILD_OF" and r.get("spanID") in ids and r.get("traceID", "").lstrip("0") == s.get("traceID", "").lstrip("0"):
            parent[s["spanID"]] = r["spanID"]
            break
roots = [s for s in spans if s["spanID"] not in parent]

def depth(sid, seen=()):
    return 1 if sid not in parent or sid in seen else 1 + depth(parent[sid], seen + (sid,))

max_depth = max((depth(s["spanID"]) for s in spans), default=0)
root_desc = ", ".join(f"{r['operationName']} ({who(r['processID'])})" for r in sorted(roots, key=lambda s: s.get("startTime", 0)))

missing = [w for w in want if w not in by_inst]
head = f"trace {tid}: {len(spans)} spans from {len({s.get('processID') for s in spans})} processes"
tree = f"trace {tid}: {len(roots)} root span(s): {root_desc or 'none (a reference cycle)'}; span tree depth {max_depth}"
if missing:
    print(f"trace {tid}: no spans from {' '.join(missing)}")
    print(f"{head}; it had: " + "; ".join(describe(n) for n in by_inst))
    print(tree)
    sys.exit(3)
print(f"{head}; " + "; ".join(describe(w) for w in want)
      + "".join(f"; (also) {describe(n)}" for n in by_inst if n not in want))
print(tree)
PY
)"

check() {
  local id out="" deadline rc
  id="$(trace_id "${1:-}")"
  shift
  (($# > 0)) || die "usage: $0 check <trace-id> <instance>..."
  [[ $TRACE_TIMEOUT =~ ^[0-9]+$ ]] || die "X0_TRACE_TIMEOUT must be a number of seconds, not '$TRACE_TIMEOUT'"
  running || die "jaeger is not running (demo-traces.sh up)"
  deadline=$((SECONDS + TRACE_TIMEOUT))
  while :; do
    rc=0
    out="$(fetch_trace "$id" 2>&1 | python3 -c "$ANALYSE" "$id" "$@" 2>&1)" || rc=$?
    case $rc in
      0) printf '%s\n' "$out" && return 0 ;;
      3) ;;
      *) printf '%s\n' "$out" >&2 && die "trace $id: the analysis of jaeger's answer failed (status $rc)" ;;
    esac
    if ((SECONDS >= deadline)); then
      running || log "jaeger is no longer running (log $STATE/jaeger.log)"
      printf '%s\n' "$out" >&2
      die "trace $id: not every instance of [$*] has a span in jaeger after ${TRACE_TIMEOUT}s"
    fi
    sleep 1
  done
}

# fl <job>: the FLTrainingRound's trace (its UID is the trace id) has the operator's root span
# and spans from the aggregator and every participant.
fl() {
  local job=${1:-demo-round} kubectl uid participants aggregator operator
  kubectl="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
  local k=("$kubectl" --kubeconfig="$ROOT/.cache/clusters/${X0_CLUSTER:-demo}/kubeconfig" --namespace="${X0_MESH_NAMESPACE:-default}")
  uid="$("${k[@]}" get flround "$job" -o jsonpath='{.metadata.uid}')" || die "no FLTrainingRound $job"
  participants="$("${k[@]}" get flround "$job" -o jsonpath='{.status.participants[*]}')"
  aggregator="$("${k[@]}" get flround "$job" -o jsonpath='{.status.aggregator}')"
  [[ -n $participants ]] || die "FLTrainingRound $job has no participants in its status"
  operator="demo-$(hostname)"
  log "FLTrainingRound $job (uid $uid): its trace must hold the operator's root ($operator) and spans from the aggregator $aggregator and every participant: $participants"
  # shellcheck disable=SC2086 # one instance per word
  check "${uid//-/}" "$operator" $participants
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  running) running ;;
  endpoint) endpoint "${2:-}" ;;
  trace) trace "${2:-}" ;;
  check) shift && check "$@" ;;
  fl) fl "${2:-}" ;;
  *)
    echo "usage: $0 up|running|endpoint [i]|trace <trace-id>|check <trace-id> <instance>...|fl [job]|down" >&2
    exit 2
    ;;
esac
