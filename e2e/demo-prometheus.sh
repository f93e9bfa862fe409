#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus` binary, a plain process on 127.0.0.1) scraping the
# running demo's operator and every agent, with the chart's alert rules, and what it shows:
#
#   demo-prometheus.sh up       (re)start it: scrape targets from the demo (the operator's
#                               metrics port, each agent's /metrics address; kept current by a
#                               refresher, since the operator's port changes when the demo
#                               restarts it), the chart's PrometheusRule rendered by helm with
#                               X0AgentDown's `for:` at 30s (prometheusRule.forDurations), scrape
#                               and evaluation every 5s; waits until every target is up
#   demo-prometheus.sh check    every query of every dashboard in charts/x0tta6bl4/dashboards/
#                               must return data from it (e2e/dashboards-check.py; the few
#                               allowed to be empty are listed there with why)
#   demo-prometheus.sh agent-down [i]
#                               kill agent i (default 2) as a crash would, wait until that
#                               Prometheus fires X0AgentDown for it (its /api/v1/alerts), at most
#                               the for: window + 2 scrape intervals + 20s, then restart the agent
#                               and wait until it is scraped again
#   demo-prometheus.sh run      up (unless already running), lint and render the dashboards,
#                               check, agent-down, down (`make demo-prometheus`; Prometheus is
#                               stopped on any failure too)
#   demo-prometheus.sh url      the running Prometheus's base URL
#   demo-prometheus.sh down     stop it and delete its data (idempotent; `make demo-down` runs it)
#
# `make demo-check` starts it right after `make demo` and runs `run` after demo-chaos, so the
# dashboards are checked against an hour-range that saw the federated rounds, the failover and
# the chaos experiments (on a demo where demo-chaos has not run, the chaos panels are reported
# empty).
#
# State (config, targets, rules, data, logs, pids) in .cache/demo-prometheus/. Needs prometheus
# and promtool (Debian package prometheus), python3 with PyYAML (python3-yaml), curl, jq, ss
# (iproute2), helm (.cache/bin, built by make demo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=cluster/versions.env
source e2e/cluster/versions.env
# shellcheck source=lib/processes.sh
source e2e/lib/processes.sh
CLUSTER_NAME="${X0_CLUSTER:-demo}"
HELM="${HELM:-$ROOT/.cache/bin/helm-$HELM_VERSION/helm}"
STATE="$ROOT/.cache/demo-prometheus"
AGENTS_STATE="$ROOT/.cache/demo-agents"
OPERATOR_PID="$ROOT/.cache/demo-$CLUSTER_NAME-operator.pid"
AGENTS="$ROOT/e2e/demo-agents.sh"
INTERVAL=5
AGENT_DOWN_FOR=30
# The chart's names for release x0tta6bl4: the operator's job is its metrics Service's name
# (what the ServiceMonitor gives), the agents' job the PodMonitor's (prometheusRule.agentSelector).
OPERATOR_JOB=x0tta6bl4-metrics
AGENT_JOB=x0tta6bl4-node-agent
NAMESPACE="${X0_MESH_NAMESPACE:-default}"

log() { printf '[demo-prometheus %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() {
  command -v prometheus >/dev/null || die "prometheus not found: apt-get install prometheus"
  command -v promtool >/dev/null || die "promtool not found: apt-get install prometheus"
  python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is required: apt-get install python3-yaml"
  command -v jq >/dev/null || die "jq not found"
  [[ -x $HELM ]] || die "helm not found at $HELM (make demo builds it)"
}

prom_pid() { own_pid "$STATE/prometheus.pid" "--storage.tsdb.path=$STATE/"; }
refresher_pid() { own_pid "$STATE/refresher.pid" "demo-prometheus.sh refresh-loop"; }
running() { [[ -f $STATE/port ]] && prom_pid >/dev/null; }

url() { printf 'http://127.0.0.1:%s' "$(cat "$STATE/port")"; }
api() { curl -fsS --max-time 10 "$(url)/api/v1/$1"; }

down() {
  local pid
  if pid="$(refresher_pid)"; then stop_pid "$pid"; fi
  if pid="$(prom_pid)"; then
    stop_pid "$pid"
    log "prometheus $pid stopped"
  fi
  rm -rf "$STATE"
}

# The operator's metrics address: it listens on 127.0.0.1:0 in the demo, so the port is found
# among the sockets of its process, as the one that serves x0_operator_leader. Status 1 while
# no operator runs.
operator_addr() {
  local pid port
  pid="$(cat "$OPERATOR_PID" 2>/dev/null)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  for port in $(ss -Hltnp 2>/dev/null | grep -F "pid=$pid," | awk '{print $4}' | grep -oE '[0-9]+$' | sort -u); do
    if curl -fsS --max-time 3 "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -q '^x0_operator_leader'; then
      echo "127.0.0.1:$port"
      return 0
    fi
  done
  return 1
}

# The demo's operator serves /metrics within a few seconds of its start (and `make demo` may
# just have restarted it): wait for it, bounded, and on failure say which step failed.
wait_operator_addr() {
  local deadline=$((SECONDS + 60)) pid
  until operator_addr >/dev/null; do
    if ((SECONDS >= deadline)); then
      pid="$(cat "$OPERATOR_PID" 2>/dev/null || echo none)"
      log "operator pid file $OPERATOR_PID: $pid"
      if [[ $pid != none ]] && kill -0 "$pid" 2>/dev/null; then
        log "process $pid runs; its listening sockets: $(ss -Hltnp 2>&1 | grep -F "pid=$pid," | awk '{print $4}' | tr '\n' ' ')"
      else
        log "process $pid does not run; the end of its log:"
        tail -n 20 "$ROOT/.cache/demo-$CLUSTER_NAME-operator.log" >&2 2>/dev/null || true
      fi
      die "the demo's operator serves no metrics after 60s (run: make demo)"
    fi
    sleep 1
  done
}

agent_count() {
  local n=0
  while [[ -f $AGENTS_STATE/node-$n ]]; do n=$((n + 1)); done
  echo "$n"
}

# Agent i's /metrics address (what `demo-agents.sh status-addr i` prints; write_config checks
# that they agree), computed here because the refresher runs every 2s.
agent_addr() {
  local port
  port="$(grep -oE '"?metricsPort"?: *"?[0-9]{1,5}' "$AGENTS_STATE/agent.yaml" 2>/dev/null | grep -oE '[0-9]+$' | head -n 1)"
  printf '198.19.252.%d:%s' $((4 * $1 + 2)) "${port:-47102}"
}

# replace_if_changed <file> <content>: atomically, so Prometheus never reads half a file.
replace_if_changed() {
  [[ -f $1 && "$(cat "$1")" == "$2" ]] && return 0
  printf '%s\n' "$2" >"$1.tmp" && mv "$1.tmp" "$1"
}

# The scrape targets, as file_sd files Prometheus re-reads when they change: the operator's
# port changes whenever the demo restarts it (demo-chaos kills it), the agents' pod names when
# a pod is replaced. A stopped operator keeps its last address (and is scraped as down).
write_targets() {
  local n i op targets=""
  n="$(agent_count)"
  if op="$(operator_addr)"; then
    replace_if_changed "$STATE/operator.json" \
      "[{\"targets\": [\"$op\"], \"labels\": {\"namespace\": \"$NAMESPACE\"}}]"
  fi
  for ((i = 0; i < n; i++)); do
    targets+="${targets:+, }{\"targets\": [\"$(agent_addr "$i")\"], \"labels\": {\"namespace\": \"$NAMESPACE\", \"pod\": \"$(cat "$AGENTS_STATE/pod-$i" 2>/dev/null || echo "agent-$i")\"}}"
  done
  replace_if_changed "$STATE/agents.json" "[$targets]"
}

refresh_loop() {
  while [[ -d $STATE ]]; do
    write_targets || true
    sleep 2
  done
}

write_config() {
  local n i
  n="$(agent_count)"
  ((n > 0)) || die "the demo agents are not up (run: make demo)"
  wait_operator_addr
  for ((i = 0; i < n; i++)); do
    [[ "$("$AGENTS" status-addr "$i")" == "$(agent_addr "$i")" ]] ||
      die "agent $i is at $("$AGENTS" status-addr "$i"), not $(agent_addr "$i") (demo-agents.sh changed?)"
  done
  write_targets
  # The chart's rules, as a rules file: X0AgentDown's for: short, so a killed agent fires it
  # within a minute; everything else as shipped.
  "$HELM" template x0tta6bl4 charts/x0tta6bl4 --namespace "$NAMESPACE" \
    --api-versions monitoring.coreos.com/v1 \
    --set prometheusRule.enabled=true \
    --set "prometheusRule.forDurations.X0AgentDown=${AGENT_DOWN_FOR}s" \
    --show-only templates/prometheusrule.yaml >"$STATE/prometheusrule.yaml"
  python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert len(docs) == 1 and docs[0]["kind"] == "PrometheusRule", "expected one PrometheusRule"
yaml.safe_dump({"groups": docs[0]["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False, width=1000)
' "$STATE/prometheusrule.yaml" "$STATE/rules.yaml"
  cat >"$STATE/prometheus.yml" <<YAML
# Generated by e2e/demo-prometheus.sh for the running demo.
global:
  scrape_interval: ${INTERVAL}s
  scrape_timeout: 3s
  evaluation_interval: ${INTERVAL}s
rule_files:
  - $STATE/rules.yaml
scrape_configs:
  # As the chart's ServiceMonitor: job = the metrics Service, honor_labels so the per-mesh
  # gauges keep the mesh's namespace.
  - job_name: $OPERATOR_JOB
    honor_labels: true
    file_sd_configs:
      - files: ['$STATE/operator.json']
  # As the chart's PodMonitor: one target per agent pod, job = app.kubernetes.io/name.
  - job_name: $AGENT_JOB
    file_sd_configs:
      - files: ['$STATE/agents.json']
YAML
  promtool check rules "$STATE/rules.yaml" >/dev/null || die "promtool check rules failed on the rendered rules"
  promtool check config "$STATE/prometheus.yml" >/dev/null || die "promtool check config failed on $STATE/prometheus.yml"
  log "scraping the operator at $(operator_addr) and $n agents; rules from the chart (X0AgentDown for: ${AGENT_DOWN_FOR}s)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

up() {
  need
  down 2>/dev/null
  mkdir -p "$STATE/data"
  write_config
  free_port >"$STATE/port"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the child shell
  setsid bash -c 'echo $$ >"$0" && exec "$@"' "$STATE/prometheus.pid" prometheus \
    --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/data/" \
    --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$(cat "$STATE/port")" \
    </dev/null >>"$STATE/prometheus.log" 2>&1 &
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0" && exec "$@"' "$STATE/refresher.pid" "$ROOT/e2e/demo-prometheus.sh" refresh-loop \
    </dev/null >>"$STATE/refresher.log" 2>&1 &
  local started=$SECONDS deadline=$((SECONDS + 30)) targets n
  until curl -fsS --max-time 2 "$(url)/-/ready" >/dev/null 2>&1; do
    if ((SECONDS - started > 2)) && ! prom_pid >/dev/null; then
      tail -n 20 "$STATE/prometheus.log" >&2
      die "prometheus exited"
    fi
    ((SECONDS < deadline)) || die "prometheus not ready within 30s (log $STATE/prometheus.log)"
    sleep 0.2
  done
  n=$(($(agent_count) + 1))
  deadline=$((SECONDS + 60))
  while :; do
    targets="$(api targets | jq -r '.data.activeTargets[] | "\(.labels.job) \(.labels.instance) \(.health) \(.lastError)"')"
    [[ $(grep -c ' up ' <<<"$targets") == "$n" ]] && break
    ((SECONDS < deadline)) || { printf '%s\n' "$targets" >&2; die "not all $n targets up within 60s"; }
    sleep 1
  done
  printf '%s\n' "$targets" | sed 's/^/  target /' >&2
  log "prometheus $(prom_pid) on $(url) (loopback only): $n targets up (log $STATE/prometheus.log; make demo-down stops it)"
}

check() {
  running || die "prometheus is not running (demo-prometheus.sh up)"
  X0_SCRAPE_INTERVAL=$INTERVAL python3 e2e/dashboards-check.py query "$(url)"
}

lint() {
  mkdir -p "$STATE"
  "$HELM" template x0tta6bl4 charts/x0tta6bl4 --namespace "$NAMESPACE" --set dashboards.enabled=true \
    --show-only templates/dashboards.yaml >"$STATE/dashboards.yaml"
  python3 e2e/dashboards-check.py lint --rendered "$STATE/dashboards.yaml"
}

# The X0AgentDown alerts of that instance, one "state activeAt" a line.
agent_down_alerts() {
  api alerts | jq -r --arg i "$1" \
    '.data.alerts[] | select(.labels.alertname == "X0AgentDown" and .labels.instance == $i) | "\(.state) \(.activeAt)"'
}

agent_down() {
  local i=${1:-2} addr killed now elapsed bound state="" last="" deadline
  running || die "prometheus is not running (demo-prometheus.sh up)"
  addr="$("$AGENTS" status-addr "$i")"
  # The agent must be up and scraped first (after a failover or a restart it may still be
  # coming back), and no X0AgentDown pending or firing for it.
  deadline=$((SECONDS + 60))
  until [[ "$(api "query?query=up%7Binstance%3D%22$addr%22%7D" | jq -r '.data.result[0].value[1]')" == 1 &&
    -z "$(agent_down_alerts "$addr")" ]]; do
    ((SECONDS < deadline)) || die "agent $i ($addr) not up, or X0AgentDown active for it, before the kill"
    sleep 1
  done
  bound=$((AGENT_DOWN_FOR + 2 * INTERVAL + 20))
  "$AGENTS" kill "$i"
  killed=$(date +%s.%N)
  log "agent $i ($addr) killed; waiting (at most ${bound}s) for X0AgentDown to fire in prometheus"
  while :; do
    state="$(agent_down_alerts "$addr" | head -n 1)"
    now=$(date +%s.%N)
    elapsed=$(awk -v a="$killed" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    if [[ ${state%% *} != "${last%% *}" ]]; then
      log "  +${elapsed}s X0AgentDown{instance=\"$addr\"}: ${state:-inactive}"
      last=$state
    fi
    [[ ${state%% *} == firing ]] && break
    if awk -v e="$elapsed" -v b="$bound" 'BEGIN { exit !(e > b) }'; then
      "$AGENTS" start "$i" || true
      die "X0AgentDown did not fire for $addr within ${bound}s of the kill"
    fi
    sleep 1
  done
  api alerts | jq -c --arg i "$addr" '.data.alerts[] | select(.labels.alertname == "X0AgentDown" and .labels.instance == $i)' |
    sed 's|^|  GET /api/v1/alerts: |' >&2
  log "X0AgentDown fired ${elapsed}s after the kill (for: ${AGENT_DOWN_FOR}s, scrape and evaluation every ${INTERVAL}s, bound ${bound}s)"
  "$AGENTS" start "$i"
  deadline=$((SECONDS + 30))
  until [[ "$(api "query?query=up%7Binstance%3D%22$addr%22%7D" | jq -r '.data.result[0].value[1]')" == 1 ]]; do
    ((SECONDS < deadline)) || die "agent $i ($addr) not scraped again within 30s of its restart"
    sleep 1
  done
  log "agent $i restarted and scraped again"
}

run() {
  trap 'down' EXIT
  if running; then
    log "prometheus already running on $(url) since $(api status/runtimeinfo | jq -r .data.startTime)"
  else
    up
  fi
  lint
  # rate() over 1m needs two samples in the window: three scrapes after every target is up.
  sleep $((3 * INTERVAL))
  check
  agent_down "${X0_PROM_KILL_AGENT:-2}"
  log "PASS"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) check ;;
  lint) need; lint ;;
  agent-down) agent_down "${2:-2}" ;;
  run) run ;;
  url) url; echo ;;
  refresh-loop) refresh_loop ;;
  *) echo "usage: $0 up|check|agent-down [i]|run|url|down" >&2; exit 2 ;;
esac
