#!/usr/bin/env bash
# A real SPIRE on this machine for our tests and the demo: spire-server and one spire-agent per
# mesh node, plain processes (built from source by e2e/cluster/build-binaries.sh spire), each
# agent serving a SPIFFE Workload API on its own unix socket. One instance per X0_SPIRE_NAME
# (default demo); everything below is for that instance.
#
#   spire.sh up [trust-domain]  start spire-server (trust domain default x0tta6bl4.local), wait
#                               (at most X0_SPIRE_TIMEOUT seconds, default 60) until healthy; if it
#                               already runs, say so (a different trust domain is an error: down
#                               first); if it was stopped (server-stop), start it on its state
#   spire.sh bundle             the trust bundle (the server's X.509 CAs), PEM, on stdout
#   spire.sh agent-start <node> start node's spire-agent (attesting with a join token whose node
#                               alias is spiffe://<td>/node/<node>, the first time or whenever its
#                               stored SVID is unusable), wait until healthy, print the absolute
#                               path of its Workload API socket; if it runs, just print the path.
#                               Needs the server: a SPIRE agent keeps no workload SVIDs on disk and
#                               exits when it cannot fetch its entries at start (a running agent
#                               keeps serving its cached SVIDs through a server outage)
#   spire.sh agent-stop <node>  SIGTERM, return once it is gone (SIGKILL after 10s); keeps its
#                               state, so agent-start resumes with the same agent SVID
#   spire.sh agent-kill <node>  SIGKILL, return once it is gone (a crash)
#   spire.sh agent-socket <node>
#                               the absolute path of node's Workload API socket
#   spire.sh entry <node> <spiffe-id> [x509-ttl-seconds]
#                               register <spiffe-id> for uid 0 (selector unix:uid:0) on node:
#                               parent spiffe://<td>/node/<node>, X509-SVID TTL as given (else
#                               the server's default, X0_SPIRE_X509_TTL); prints the entry id; if
#                               that spiffe-id already has an entry under that parent, prints its
#                               id and changes nothing
#   spire.sh entry-delete <spiffe-id> [node]
#                               delete every entry of that SPIFFE ID (only node's, with a node;
#                               prints their ids)
#   spire.sh fetch <node> [spire-agent api fetch x509 flags...]
#                               what node's Workload API serves to uid 0 (e.g. -write <dir>
#                               writes svid.0.pem, svid.0.key, bundle.0.pem); fails when it
#                               serves no SVID
#   spire.sh server-stop        stop spire-server (agents keep running and serving their cache)
#   spire.sh server-start       start it again on the same state (CA keys, datastore)
#   spire.sh status             server and agents: running or not, pids, health, ports, sockets
#   spire.sh down               stop every agent and the server, delete the state (idempotent)
#
# Node aliases are spiffe://<td>/node/<node>, not spiffe://<td>/spire/node/<node>: SPIRE reserves
# the /spire/ path of a trust domain for its own IDs and refuses it as a join token's alias.
#
# Listeners: spire-server's gRPC API on 127.0.0.1:$X0_SPIRE_PORT (default 47481; agents attest
# and sync there) and its local API unix socket (server/api.sock, used by this script's commands);
# each agent's Workload API unix socket. Nothing else (no health check, telemetry, admin or
# federation listener is configured). Nothing leaves the machine.
#
# State in .cache/spire/$X0_SPIRE_NAME/: trust-domain, port, server/{server.conf, api.sock, data/,
# keys.json (the CA keys, KeyManager disk), datastore.sqlite3, server.log, server.pid},
# agents/<node>/{agent.conf, bundle.pem, api.sock, data/ (agent SVID and keys), agent.log,
# agent.pid}. Unix socket paths are limited to 107 bytes, so a deep checkout may need a short
# X0_SPIRE_NAME.
#
# Environment: X0_SPIRE_NAME (demo), X0_SPIRE_PORT (47481), X0_SPIRE_X509_TTL (1h, the default
# X509-SVID TTL), X0_SPIRE_CA_TTL (24h), X0_SPIRE_TIMEOUT (60), SPIRE_SERVER and SPIRE_AGENT (the
# binaries; default .cache/bin/spire-$SPIRE_VERSION/, built when missing). Needs python3 and ss.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
# shellcheck source=lib/processes.sh
source e2e/lib/processes.sh

NAME="${X0_SPIRE_NAME:-demo}"
STATE="$ROOT/.cache/spire/$NAME"
SERVER_DIR="$STATE/server"
SERVER_CONF="$SERVER_DIR/server.conf"
SERVER_SOCK="$SERVER_DIR/api.sock"
PORT_ENV="${X0_SPIRE_PORT:-47481}"
X509_TTL="${X0_SPIRE_X509_TTL:-1h}"
CA_TTL="${X0_SPIRE_CA_TTL:-24h}"
TIMEOUT="${X0_SPIRE_TIMEOUT:-60}"
BIN_DIR="$ROOT/.cache/bin/spire-$SPIRE_VERSION"
SPIRE_SERVER="${SPIRE_SERVER:-$BIN_DIR/spire-server}"
SPIRE_AGENT="${SPIRE_AGENT:-$BIN_DIR/spire-agent}"
DEFAULT_TD=x0tta6bl4.local
# The lifetime of a join token: only long enough for the agent started with it to attest.
TOKEN_TTL=600

log() { printf '[spire %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

[[ $NAME =~ ^[a-zA-Z0-9][-_.a-zA-Z0-9]*$ ]] || die "X0_SPIRE_NAME must be letters, digits, '-', '_', '.', not '$NAME'"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "X0_SPIRE_TIMEOUT must be a number of seconds, not '$TIMEOUT'"
# The paths go into HCL strings.
[[ $STATE != *[\"\\\$]* ]] || die "the state directory $STATE has a quote, backslash or dollar sign"

binaries() {
  if [[ ! -x $SPIRE_SERVER || ! -x $SPIRE_AGENT ]]; then
    [[ $SPIRE_SERVER == "$BIN_DIR/spire-server" && $SPIRE_AGENT == "$BIN_DIR/spire-agent" ]] ||
      die "SPIRE_SERVER=$SPIRE_SERVER or SPIRE_AGENT=$SPIRE_AGENT is not an executable"
    log "SPIRE $SPIRE_VERSION is not built yet: e2e/cluster/build-binaries.sh spire"
    e2e/cluster/build-binaries.sh spire || die "could not build SPIRE $SPIRE_VERSION"
  fi
  command -v python3 >/dev/null || die "python3 not found"
}

# The trust domain and port of this instance (written by up), else the defaults.
trust_domain() { cat "$STATE/trust-domain" 2>/dev/null || echo "$DEFAULT_TD"; }
port() { cat "$STATE/port" 2>/dev/null || echo "$PORT_ENV"; }

node_name() {
  [[ ${1:-} =~ ^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$ ]] ||
    die "a node name is a DNS label or name (lower case letters, digits, '-', '.'; at most 63), not '${1:-}'"
  echo "$1"
}
node_alias() { printf 'spiffe://%s/node/%s' "$(trust_domain)" "$1"; }
agent_dir() { echo "$STATE/agents/$1"; }
agent_sock() { echo "$STATE/agents/$1/api.sock"; }

server_pid() { own_pid "$SERVER_DIR/server.pid" "run -config $SERVER_CONF"; }
agent_pid() { own_pid "$(agent_dir "$1")/agent.pid" "run -config $(agent_dir "$1")/agent.conf"; }

server_healthy() { "$SPIRE_SERVER" healthcheck -socketPath "$SERVER_SOCK" >/dev/null 2>&1; }
agent_healthy() { "$SPIRE_AGENT" healthcheck -socketPath "$(agent_sock "$1")" >/dev/null 2>&1; }

server_cli() { "$SPIRE_SERVER" "$@" -socketPath "$SERVER_SOCK"; }

need_server() {
  server_pid >/dev/null || die "spire-server ($NAME) is not running (spire.sh up, or server-start after server-stop)"
}

check_sock_path() {
  ((${#1} <= 107)) || die "unix socket path too long (${#1} bytes, at most 107): $1; use a shorter X0_SPIRE_NAME or checkout path"
}

# spawn <pidfile> <log> <cmd...>: a background process in its own session, its pid in pidfile.
spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the child shell
  setsid bash -c 'echo $$ >"$0" && exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
}

# wait_up <what> <log> <pid function> <health function> [arg]: poll until the process runs and is
# healthy (both functions called with arg); die (with its log) when it exits or the deadline passes.
wait_up() {
  local what="$1" logfile="$2" pidfn="$3" healthfn="$4" arg="${5:-}"
  local started=$SECONDS deadline=$((SECONDS + TIMEOUT)) pid=""
  while :; do
    if pid="$($pidfn "$arg")" && $healthfn "$arg"; then break; fi
    if [[ -z $pid ]] && ((SECONDS - started > 2)); then
      tail -n 30 "$logfile" >&2
      die "$what exited (log $logfile)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$logfile" >&2
      die "$what not healthy within ${TIMEOUT}s (log $logfile)"
    fi
    sleep 0.2
  done
  log "$what $pid healthy in $((SECONDS - started))s"
}

write_server_conf() {
  local td="$1" port="$2"
  cat >"$SERVER_CONF" <<HCL
# Generated by e2e/spire.sh for the instance "$NAME" (SPIRE $SPIRE_VERSION).
server {
    bind_address = "127.0.0.1"
    bind_port = "$port"
    socket_path = "$SERVER_SOCK"
    trust_domain = "$td"
    data_dir = "$SERVER_DIR/data"
    log_level = "INFO"
    ca_ttl = "$CA_TTL"
    default_x509_svid_ttl = "$X509_TTL"
    ca_subject {
        country = ["ZZ"]
        organization = ["x0tta6bl4 e2e"]
        common_name = "x0tta6bl4 SPIRE $NAME"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$SERVER_DIR/datastore.sqlite3"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {}
    }

    # On disk, so that a restarted server keeps its CA (server-stop, server-start).
    KeyManager "disk" {
        plugin_data {
            keys_path = "$SERVER_DIR/keys.json"
        }
    }

    # No UpstreamAuthority: the server's CA is self-signed.
}
HCL
}

start_server() {
  local td port
  td="$(trust_domain)"
  port="$(port)"
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    die "port $port is already in use: $(ss -Hltnp "sport = :$port" 2>/dev/null | awk '{print $4, $6}' | tr '\n' ' ')"
  fi
  rm -f "$SERVER_SOCK"
  spawn "$SERVER_DIR/server.pid" "$SERVER_DIR/server.log" "$SPIRE_SERVER" run -config "$SERVER_CONF"
  wait_up "spire-server ($NAME, $td, 127.0.0.1:$port)" "$SERVER_DIR/server.log" server_pid server_healthy
}

up() {
  local td="${1:-}" pid
  [[ -n $td ]] || td="$(trust_domain)"
  [[ $td =~ ^[a-z0-9._-]+$ ]] || die "a trust domain is lower case letters, digits, '.', '_', '-', not '$td'"
  if ! [[ $PORT_ENV =~ ^[0-9]{1,5}$ ]] || ((PORT_ENV < 1 || PORT_ENV > 65535)); then
    die "invalid X0_SPIRE_PORT '$PORT_ENV'"
  fi
  [[ $X509_TTL =~ ^([0-9]+(ns|us|ms|s|m|h))+$ ]] || die "X0_SPIRE_X509_TTL must be a Go duration such as 1h or 90s, not '$X509_TTL'"
  [[ $CA_TTL =~ ^([0-9]+(ns|us|ms|s|m|h))+$ ]] || die "X0_SPIRE_CA_TTL must be a Go duration such as 24h, not '$CA_TTL'"
  binaries
  if [[ -f $SERVER_CONF ]]; then
    [[ $(trust_domain) == "$td" ]] ||
      die "instance $NAME has trust domain $(trust_domain), not $td (spire.sh down first)"
    if pid="$(server_pid)"; then
      server_healthy || die "spire-server $pid ($NAME) runs but is not healthy (log $SERVER_DIR/server.log)"
      log "spire-server $pid ($NAME) is already up: trust domain $td, 127.0.0.1:$(port), socket $SERVER_SOCK"
      return 0
    fi
    log "spire-server ($NAME) is stopped: starting it on its state"
    start_server
    return 0
  fi
  check_sock_path "$SERVER_SOCK"
  mkdir -p "$SERVER_DIR/data" "$STATE/agents"
  chmod 700 "$STATE"
  echo "$td" >"$STATE/trust-domain"
  echo "$PORT_ENV" >"$STATE/port"
  write_server_conf "$td" "$PORT_ENV"
  start_server
  log "SPIRE ($NAME) up: trust domain $td, server 127.0.0.1:$PORT_ENV, X509-SVID TTL $X509_TTL, CA TTL $CA_TTL; state $STATE (spire.sh down removes it)"
}

server_start() {
  local pid
  [[ -f $SERVER_CONF ]] || die "instance $NAME has no state (spire.sh up)"
  binaries
  if pid="$(server_pid)"; then
    log "spire-server $pid ($NAME) already runs"
    return 0
  fi
  start_server
}

server_stop() {
  local pid
  if pid="$(server_pid)"; then
    stop_pid "$pid"
    log "spire-server $pid ($NAME) stopped"
  else
    log "spire-server ($NAME) is not running"
  fi
}

bundle() {
  binaries
  need_server
  server_cli bundle show -format pem
}

# json <python expression over d, the parsed stdin>: prints the expression's value.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); r=($1); print(r if isinstance(r, str) else '\n'.join(map(str, r)))"; }

# entry_ids <flags for entry show>: the ids of the matching entries, one a line.
entry_ids() {
  server_cli entry show -output json "$@" | json '[e["id"] for e in (d.get("entries") or [])]'
}

write_agent_conf() {
  local node="$1" dir
  dir="$(agent_dir "$node")"
  cat >"$dir/agent.conf" <<HCL
# Generated by e2e/spire.sh for node $node of the instance "$NAME" (SPIRE $SPIRE_VERSION).
agent {
    data_dir = "$dir/data"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "$(port)"
    socket_path = "$(agent_sock "$node")"
    trust_bundle_path = "$dir/bundle.pem"
    trust_domain = "$(trust_domain)"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }

    # On disk with the agent's SVID, so that a restarted agent resumes without a new attestation.
    KeyManager "disk" {
        plugin_data {
            directory = "$dir/data"
        }
    }

    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
HCL
}

agent_start() {
  local node dir sock pid token alias agent_id
  node="$(node_name "${1:-}")"
  binaries
  dir="$(agent_dir "$node")"
  sock="$(agent_sock "$node")"
  if pid="$(agent_pid "$node")"; then
    if agent_healthy "$node"; then
      log "spire-agent $pid ($node) is already up"
      echo "$sock"
      return 0
    fi
    die "spire-agent $pid ($node) runs but is not healthy (log $dir/agent.log)"
  fi
  # A starting agent must fetch its entries from the server (SPIRE keeps no workload SVIDs on
  # disk): one started during an outage exits after about 40s. A running agent rides one out.
  need_server
  check_sock_path "$sock"
  mkdir -p "$dir/data"
  server_cli bundle show -format pem >"$dir/bundle.pem.tmp" || die "could not read the trust bundle"
  mv "$dir/bundle.pem.tmp" "$dir/bundle.pem"
  write_agent_conf "$node"
  alias="$(node_alias "$node")"
  # A new join token, used only when the agent has no usable SVID stored (the first start, or
  # after its SVID expired); its alias entry is removed below when it went unused.
  token="$(server_cli token generate -ttl "$TOKEN_TTL" -spiffeID "$alias" -output json | json 'd["value"]')" ||
    die "could not generate a join token"
  (umask 077 && echo "$token" >"$dir/join-token")
  rm -f "$sock"
  spawn "$dir/agent.pid" "$dir/agent.log" "$SPIRE_AGENT" run -config "$dir/agent.conf" -joinTokenFile "$dir/join-token"
  wait_up "spire-agent ($node)" "$dir/agent.log" agent_pid agent_healthy "$node"
  rm -f "$dir/join-token"
  agent_id="spiffe://$(trust_domain)/spire/agent/join_token/$token"
  if server_cli agent show -spiffeID "$agent_id" >/dev/null 2>&1; then
    log "spire-agent ($node) attested as $agent_id, alias $alias"
    # Alias entries of earlier attestations of this node would make its workloads' entries
    # reach agents that no longer run.
    local stale
    stale="$(server_cli entry show -output json -spiffeID "$alias" |
      json "[e['id'] for e in (d.get('entries') or []) if e['parent_id']['path'] != '/spire/agent/join_token/$token']")"
    if [[ -n $stale ]]; then
      for id in $stale; do server_cli entry delete -entryID "$id" >/dev/null; done
      log "removed stale alias entries of $node: $(tr '\n' ' ' <<<"$stale")"
    fi
  else
    log "spire-agent ($node) resumed with its stored SVID (alias $alias); the new join token went unused"
    local unused
    unused="$(entry_ids -parentID "$agent_id")"
    for id in $unused; do server_cli entry delete -entryID "$id" >/dev/null; done
  fi
  echo "$sock"
}

agent_stop() {
  local node pid
  node="$(node_name "${1:-}")"
  if pid="$(agent_pid "$node")"; then
    stop_pid "$pid"
    log "spire-agent $pid ($node) stopped"
  else
    log "spire-agent ($node) is not running"
  fi
}

agent_kill() {
  local node pid
  node="$(node_name "${1:-}")"
  if pid="$(agent_pid "$node")"; then
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    log "spire-agent $pid ($node) killed"
  else
    log "spire-agent ($node) is not running"
  fi
}

agent_socket() {
  local node
  node="$(node_name "${1:-}")"
  agent_sock "$node"
}

entry() {
  local node id parent ttl="${3:-}" ids
  node="$(node_name "${1:-}")"
  id="${2:-}"
  [[ $id =~ ^spiffe://[^/]+/.+ ]] || die "usage: $0 entry <node> <spiffe-id> [x509-ttl-seconds] (a spiffe://<td>/<path> ID, not '$id')"
  [[ -z $ttl || $ttl =~ ^[1-9][0-9]*$ ]] || die "the X509-SVID TTL is a number of seconds, not '$ttl'"
  binaries
  need_server
  parent="$(node_alias "$node")"
  ids="$(entry_ids -spiffeID "$id" -parentID "$parent")" || die "could not list the entries of $id"
  if [[ -n $ids ]]; then
    log "$id already has an entry under $parent"
    echo "${ids%%$'\n'*}"
    return 0
  fi
  local args=(-parentID "$parent" -spiffeID "$id" -selector unix:uid:0)
  [[ -n $ttl ]] && args+=(-x509SVIDTTL "$ttl")
  id="$(server_cli entry create "${args[@]}" -output json |
    json '[r["entry"]["id"] for r in d["results"] if r["status"]["code"] == 0]')" || die "could not create the entry"
  [[ -n $id ]] || die "the server created no entry for ${args[*]}"
  log "entry $id: ${args[*]}"
  echo "$id"
}

entry_delete() {
  local id="${1:-}" node="${2:-}" ids filter=()
  [[ $id =~ ^spiffe://[^/]+/.+ ]] || die "usage: $0 entry-delete <spiffe-id> [node]"
  binaries
  need_server
  [[ -z $node ]] || filter=(-parentID "$(node_alias "$node")")
  ids="$(entry_ids -spiffeID "$id" "${filter[@]}")" || die "could not list the entries of $id"
  if [[ -z $ids ]]; then
    log "$id has no entry"
    return 0
  fi
  for e in $ids; do
    server_cli entry delete -entryID "$e" >/dev/null || die "could not delete entry $e"
    echo "$e"
  done
  log "deleted the entries of $id: $(echo "$ids" | tr '\n' ' ')"
}

fetch() {
  local node
  node="$(node_name "${1:-}")"
  shift
  binaries
  "$SPIRE_AGENT" api fetch x509 -socketPath "$(agent_sock "$node")" "$@"
}

agents() {
  local d
  for d in "$STATE"/agents/*/; do
    [[ -d $d ]] && basename "$d"
  done
}

status() {
  local pid node
  if [[ ! -d $STATE ]]; then
    echo "spire $NAME: down (no state)"
    return 0
  fi
  if pid="$(server_pid)"; then
    if server_healthy; then
      echo "server: running, pid $pid, healthy, trust domain $(trust_domain), 127.0.0.1:$(port), socket $SERVER_SOCK"
    else
      echo "server: running, pid $pid, NOT healthy, trust domain $(trust_domain), 127.0.0.1:$(port), socket $SERVER_SOCK"
    fi
  else
    echo "server: stopped (trust domain $(trust_domain), port $(port))"
  fi
  for node in $(agents); do
    if pid="$(agent_pid "$node")"; then
      if agent_healthy "$node"; then
        echo "agent $node: running, pid $pid, healthy, alias $(node_alias "$node"), socket $(agent_sock "$node")"
      else
        echo "agent $node: running, pid $pid, NOT healthy, alias $(node_alias "$node"), socket $(agent_sock "$node")"
      fi
    else
      echo "agent $node: stopped, alias $(node_alias "$node"), socket $(agent_sock "$node")"
    fi
  done
}

down() {
  local node pid
  for node in $(agents); do
    if pid="$(agent_pid "$node")"; then
      stop_pid "$pid"
      log "spire-agent $pid ($node) stopped"
    fi
  done
  if pid="$(server_pid)"; then
    stop_pid "$pid"
    log "spire-server $pid ($NAME) stopped"
  fi
  rm -rf "$STATE"
  rmdir "$ROOT/.cache/spire" 2>/dev/null || true
}

case "${1:-}" in
  up) up "${2:-}" ;;
  bundle) bundle ;;
  agent-start) agent_start "${2:-}" ;;
  agent-stop) agent_stop "${2:-}" ;;
  agent-kill) agent_kill "${2:-}" ;;
  agent-socket) agent_socket "${2:-}" ;;
  entry) shift && entry "$@" ;;
  entry-delete) entry_delete "${2:-}" "${3:-}" ;;
  fetch) shift && fetch "$@" ;;
  server-stop) server_stop ;;
  server-start) server_start ;;
  status) status ;;
  down) down ;;
  *)
    echo "usage: $0 up [trust-domain]|bundle|agent-start <node>|agent-stop <node>|agent-kill <node>|agent-socket <node>|entry <node> <spiffe-id> [x509-ttl-seconds]|entry-delete <spiffe-id>|fetch <node> [flags]|server-stop|server-start|status|down" >&2
    exit 2
    ;;
esac
