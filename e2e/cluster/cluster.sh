#!/usr/bin/env bash
# Runs a real upstream Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) on loopback, with kwok simulating the nodes and the pods' lifecycle.
#
#   cluster.sh up           start the cluster (idempotent), wait until it is usable
#   cluster.sh down         stop every process it started and delete its state (idempotent)
#   cluster.sh status       per-component running/stopped and the node count
#   cluster.sh kubeconfig   print the admin kubeconfig path
#   cluster.sh env          print `export KUBECONFIG=... PATH=...` lines: eval "$(cluster.sh env)"
#
# Environment:
#   X0_CLUSTER  cluster name (default x0); state lives in .cache/clusters/<name>/, so clusters with
#               different names run side by side (every TCP port is picked free at `up`)
#   X0_NODES    number of fake nodes, x0-node-0 .. x0-node-<N-1> (default 3)
#   X0_CACHE    cache directory (default <repo>/.cache), shared with build-binaries.sh
#   X0_TIMEOUT  base timeout in seconds for each readiness wait (default 60; the node wait
#               grows with X0_NODES)
#   X0_KEEP_ON_FAILURE=1  leave the processes running when `up` fails, for debugging
#
# Why not kind/minikube/k3d: there is no container engine here, only loopback networking; the
# binaries are built from source by build-binaries.sh, and kwok stands in for kubelets.
#
# SC2317 (file-wide): the readiness probes run by wait_for and the EXIT trap handler are called
# indirectly, which shellcheck takes for unreachable code.
# shellcheck disable=SC2317
set -euo pipefail

# Physical paths (pwd -P, realpath): `down` recognises our processes by /proc/<pid>/exe, which the
# kernel reports with symlinks resolved.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
HERE="$ROOT/e2e/cluster"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HERE/versions.env"

CACHE="$(realpath -m "${X0_CACHE:-$ROOT/.cache}")"
BIN_CACHE="$CACHE/bin"
K8S_BIN="$BIN_CACHE/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$BIN_CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$BIN_CACHE/kwok-$KWOK_VERSION"
HELM_BIN="$BIN_CACHE/helm-$HELM_VERSION"
KWOK_STAGES="$HERE/kwok-stages.yaml"

NAME="${X0_CLUSTER:-x0}"
NODES="${X0_NODES:-3}"
TIMEOUT="${X0_TIMEOUT:-60}"
CLUSTERS="$CACHE/clusters"
STATE="$CLUSTERS/$NAME"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_FILE="$STATE/kubeconfig"
PORTS_FILE="$STATE/ports.env"
# Lock files stay behind on purpose: deleting a lock file that another process waits on would let
# a third one lock a new file at the same path concurrently.
LOCKS="$CLUSTERS/.locks"

# In start order; `down` stops them in reverse (see stop_processes).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_PREFIX="x0-node-"
# The taint/annotation pair kwok and our DaemonSet agree on; see kwok's --manage-nodes-* flags.
KWOK_NODE_ANNOTATION="kwok.x-k8s.io/node"

log() { printf '[cluster %s %(%H:%M:%S)T] %s\n' "$NAME" -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Validation and small helpers
# ---------------------------------------------------------------------------------------------

validate_env() {
  # The name becomes a directory and a kubeconfig context: keep it to a DNS-label-like charset.
  [[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$ ]] ||
    die "X0_CLUSTER='$NAME' must be a lowercase DNS label (a-z, 0-9, '-'; at most 40 characters)"
  # Node i gets InternalIP 10.1.x.y derived from i, which leaves room for 65534 nodes.
  if ! [[ $NODES =~ ^[1-9][0-9]*$ ]] || ((NODES < 1 || NODES > 65000)); then
    die "X0_NODES='$NODES' must be an integer between 1 and 65000"
  fi
  if ! [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]]; then
    die "X0_TIMEOUT='$TIMEOUT' must be a positive integer"
  fi
}

need_tools() {
  local t
  for t in openssl curl setsid flock pgrep base64; do
    command -v "$t" >/dev/null || die "'$t' is required but not installed"
  done
}

# kubectl against this cluster. The cache dir lives in the state dir: ports are reused between
# clusters, and a discovery cache keyed by https://127.0.0.1:<port> must not outlive its cluster.
kctl() { "$K8S_BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" --cache-dir="$STATE/kube-cache" "$@"; }

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

b64() { base64 <"$1" | tr -d '\n'; }

load_ports() {
  [[ -f $PORTS_FILE ]] || return 1
  # shellcheck source=/dev/null
  source "$PORTS_FILE"
}

# ---------------------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------------------

ensure_binaries() {
  local b missing=0
  for b in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl} \
    "$ETCD_BIN/etcd" "$KWOK_BIN/kwok" "$HELM_BIN/helm"; do
    [[ -x $b ]] || missing=1
  done
  # build-binaries.sh is a no-op on a warm cache, but it insists on a Go toolchain even then;
  # skipping it keeps a warm start fast and lets a machine with only the cached binaries work.
  if ((missing)); then
    log "building missing binaries with build-binaries.sh (slow on a cold cache)"
    X0_CACHE="$CACHE" bash "$HERE/build-binaries.sh" all
  fi
}

# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------

# Prints <count> distinct free loopback TCP ports, none of them in the reserved list.
free_ports() {
  local count=$1
  shift
  if command -v python3 >/dev/null; then
    # Let the kernel choose: bind port 0 and keep every socket open until all are chosen, so the
    # ports are distinct and were free at that moment.
    python3 - "$count" "$@" <<'PY'
import socket, sys
count, reserved = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
socks, ports = [], []
while len(ports) < count:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    port = s.getsockname()[1]
    if port not in reserved:
        ports.append(port)
print(" ".join(map(str, ports)))
PY
  else
    # Fallback: random ports below the usual ephemeral range, skipping any that accept connections.
    local reserved=" $* " ports=() p
    while ((${#ports[@]} < count)); do
      p=$((20000 + RANDOM % 12000))
      [[ $reserved == *" $p "* ]] && continue
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
      ports+=("$p")
      reserved+="$p "
    done
    echo "${ports[*]}"
  fi
}

# Picks the ports of this cluster and records them in ports.env. A port is only bound a few
# seconds later by its component, so two clusters starting at once could pick the same one; the
# global lock plus skipping every port another cluster's ports.env already claims closes that gap.
allocate_ports() {
  local reserved=() f
  exec 8>"$LOCKS/ports.lock"
  flock -w 60 8 || die "could not take $LOCKS/ports.lock"
  for f in "$CLUSTERS"/*/ports.env; do
    [[ -f $f && $f != "$PORTS_FILE" ]] || continue
    # shellcheck disable=SC2207 # the file holds only NAME=<digits> lines
    reserved+=($(sed -n 's/^[A-Z_]*=\([0-9]\{1,5\}\)$/\1/p' "$f"))
  done
  read -r ETCD_CLIENT_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT \
    <<<"$(free_ports 6 "${reserved[@]}")"
  [[ -n ${KWOK_PORT:-} ]] || die "could not find free loopback ports"
  cat >"$PORTS_FILE" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
EOF
  exec 8>&-
}

# ---------------------------------------------------------------------------------------------
# PKI and kubeconfigs
# ---------------------------------------------------------------------------------------------

# ECDSA P-256 keys: they generate in milliseconds where RSA takes a noticeable part of a warm
# start, and every component accepts them. Files are created under umask 077, i.e. mode 0600.
gen_ec_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

# A minimal openssl config, so the result does not depend on the system's openssl.cnf defaults.
req_config() {
  printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[v3]\n%s\n' "$1"
}

# make_ca <name> <CN>: a self-signed CA, <name>.key and <name>.crt.
make_ca() {
  gen_ec_key "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -config <(req_config "basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash") -extensions v3 -out "$PKI/$1.crt"
}

# sign_cert <ca> <name> <subject> <extensions>: writes <name>.key and <name>.crt signed by <ca>.
sign_cert() {
  local ca=$1 name=$2 subject=$3 ext=$4
  gen_ec_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -config <(req_config "") |
    openssl x509 -req -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
      -extfile <(req_config "$ext") -extensions v3 -out "$PKI/$name.crt" 2>/dev/null
}

gen_pki() {
  local client="basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth"
  make_ca ca "x0-$NAME-ca"
  sign_cert ca apiserver "/CN=kube-apiserver" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
  sign_cert ca admin "/O=system:masters/CN=x0-admin" "$client"
  sign_cert ca controller-manager "/CN=system:kube-controller-manager" "$client"
  sign_cert ca scheduler "/CN=system:kube-scheduler" "$client"
  # The aggregation layer (front proxy) as kubeadm sets it up, with its own CA: without it,
  # APIService backends (metrics-server and the like) cannot authenticate the apiserver's
  # proxied requests, and every component logs a missing requestheader CA.
  make_ca front-proxy-ca "x0-$NAME-front-proxy-ca"
  sign_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" "$client"
  # The service-account key signs and verifies ServiceAccount tokens (apiserver and the token
  # controller in kube-controller-manager). RSA, because that is what every consumer expects.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  chmod 600 "$PKI/sa.key"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  chmod 600 "$PKI"/*.key
}

# write_kubeconfig <file> <cert name>: a kubeconfig with embedded credentials, mode 0600.
write_kubeconfig() {
  local file=$1 cert=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $NAME-$cert
  user:
    client-certificate-data: $(b64 "$PKI/$cert.crt")
    client-key-data: $(b64 "$PKI/$cert.key")
contexts:
- name: $NAME
  context:
    cluster: $NAME
    user: $NAME-$cert
current-context: $NAME
EOF
  chmod 600 "$file"
}

# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

# start <component> <command...>: runs the command in a new session (so it is its own process
# group and `down` can signal the whole group), with its output in logs/<component>.log.
start() {
  local comp=$1
  shift
  # The child records its own pid before exec'ing: $! would be wrong if setsid had to fork.
  # 8>&- 9>&-: the daemons must not inherit our lock file descriptors, or the lock would be held
  # until they die.
  local pidfile="$PIDS/$comp.pid" deadline=$((SECONDS + 10))
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the child shell
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >"$LOGS/$comp.log" 2>&1 8>&- 9>&- &
  # Wait for the pid file, so a readiness wait can tell "not started yet" from "exited".
  until [[ -s $pidfile ]]; do
    ((SECONDS < deadline)) || die "$comp did not start (no $pidfile after 10s)"
    sleep 0.05
  done
}

# Prints the pid of a running component. The cmdline check guards against a recycled pid: every
# component's command line names a file in this cluster's state dir.
component_pid() {
  local pid cmdline
  pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ $cmdline == *"$STATE/"* ]] || return 1
  group_alive "$pid" || return 1
  echo "$pid"
}

is_running() { component_pid "$1" >/dev/null; }

# True while a process group has a live (non-zombie) member. kill -0 is not enough: a child of
# this shell that died during `up` stays a zombie until we exit.
group_alive() {
  local p st
  for p in $(pgrep -g "$1" 2>/dev/null); do
    st="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    st="${st##*) }"
    [[ ${st%% *} == Z ]] || return 0
  done
  return 1
}

# Safety net for lost pid files: process groups of any process that runs one of our cached
# binaries with this state dir on its command line.
stray_groups() {
  local pid exe cmdline pgid
  for pid in /proc/[0-9]*; do
    pid="${pid#/proc/}"
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
    [[ $exe == "$BIN_CACHE/"* ]] || continue
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || continue
    [[ $cmdline == *"$STATE/"* ]] || continue
    pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" || continue
    [[ -n $pgid ]] || continue
    echo "$pgid"
  done | sort -un
}

# stop_groups <grace seconds> <pgid>...: SIGTERM to each group, then SIGKILL after the grace.
stop_groups() {
  local grace=$1 g left deadline
  shift
  (($#)) || return 0
  for g in "$@"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  deadline=$((SECONDS + grace))
  while :; do
    left=()
    for g in "$@"; do group_alive "$g" && left+=("$g"); done
    ((${#left[@]})) || return 0
    ((SECONDS < deadline)) || break
    sleep 0.1
  done
  # The state is discarded anyway, so there is nothing to lose by not waiting longer.
  log "process group(s) ${left[*]} still running ${grace}s after SIGTERM; sending SIGKILL"
  for g in "${left[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  deadline=$((SECONDS + 10))
  for g in "${left[@]}"; do
    while group_alive "$g"; do
      ((SECONDS < deadline)) || die "process group $g survived SIGKILL"
      sleep 0.1
    done
  done
}

# reap <pid>...: dead processes linger as zombies until their parent collects them: this shell
# when `up` fails, otherwise init, which in some sandboxes only does so every few seconds.
# Waiting for that (briefly, never failing) means `down` leaves no process table entry behind.
reap() {
  local p deadline=$((SECONDS + 5))
  for p in "$@"; do
    wait "$p" 2>/dev/null || true
    while [[ -e /proc/$p ]] && ((SECONDS < deadline)); do sleep 0.1; done
  done
}

# Stops every process of this cluster, clients first: kube-apiserver drains open watches for up
# to --request-timeout (60s) on SIGTERM, but exits in about a second once its clients are gone.
# An outside client that still watches (an operator under test) costs the grace period, then
# SIGKILL. etcd goes last, so the apiserver never hangs on a vanished backend.
stop_processes() {
  local comp pid g clients=() apiserver=() etcd=() known=" "
  for comp in kwok kube-scheduler kube-controller-manager; do
    pid="$(component_pid "$comp")" && clients+=("$pid") && known+="$pid "
  done
  pid="$(component_pid kube-apiserver)" && apiserver+=("$pid") && known+="$pid "
  pid="$(component_pid etcd)" && etcd+=("$pid") && known+="$pid "
  for g in $(stray_groups); do
    [[ $known == *" $g "* ]] || clients+=("$g")
  done
  ((${#clients[@]} + ${#apiserver[@]} + ${#etcd[@]})) || return 0
  log "stopping $((${#clients[@]} + ${#apiserver[@]} + ${#etcd[@]})) process group(s)"
  stop_groups 5 "${clients[@]}"
  stop_groups 10 "${apiserver[@]}"
  stop_groups 10 "${etcd[@]}"
  reap "${clients[@]}" "${apiserver[@]}" "${etcd[@]}"
}

# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

start_etcd() {
  # Plain HTTP is acceptable here: etcd listens on loopback only and holds a throwaway cluster.
  # --unsafe-no-fsync: the data is deleted on `down`; fsync would dominate the 1000-node start.
  start etcd "$ETCD_BIN/etcd" \
    --name="$NAME" \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="$NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync \
    --log-level=warn
}

start_apiserver() {
  # Default admission plugins stay on (no --enable/--disable-admission-plugins), so the cluster
  # admits exactly what a real one would; --allow-privileged admits our host-network DaemonSet.
  # --endpoint-reconciler-type=none: Endpoints may not hold a loopback address, so the default
  # reconciler would fail every 10s publishing 127.0.0.1 for the `kubernetes` Service; that
  # Service keeps its ClusterIP 10.96.0.1 but gets no endpoints (nothing runs in a pod network).
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --cert-dir="$STATE/apiserver-certs" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false
}

start_controller_manager() {
  # --kube-api-qps/--kube-api-burst: at the default 20 QPS, untainting new nodes
  # (node.kubernetes.io/not-ready) runs at ~5 nodes/s, so 1000 nodes would take minutes to
  # become schedulable; a loopback test cluster can afford more.
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$STATE/controller-manager-certs" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --kube-api-qps=200 \
    --kube-api-burst=400 \
    --leader-elect=false \
    --profiling=false
}

start_scheduler() {
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHED_PORT" \
    --cert-dir="$STATE/scheduler-certs" \
    --leader-elect=false \
    --profiling=false
}

start_kwok() {
  # kwok v0.8.0 has no built-in stages: kwok-stages.yaml holds its default node/pod lifecycle.
  # KWOK_WORKDIR keeps kwok from also loading a user's ~/.kwok/kwok.yaml.
  # Only nodes annotated kwok.x-k8s.io/node=fake are managed, so kwok never touches a real node.
  # kwok logs every node lease renewal at INFO: ~100 lines/s (100 MB/hour) with 1000 nodes, so
  # large clusters log warnings only.
  local verbosity=INFO
  ((NODES < 100)) || verbosity=WARN
  start kwok env KWOK_WORKDIR="$STATE/kwok" "$KWOK_BIN/kwok" \
    --config="$KWOK_STAGES" \
    --kubeconfig="$KUBECONFIG_FILE" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector="$KWOK_NODE_ANNOTATION=fake" \
    --manage-nodes-with-label-selector= \
    --manage-single-node= \
    --disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom \
    --disregard-status-with-label-selector= \
    --cidr=10.0.0.1/24 \
    --node-ip=10.0.0.1 \
    --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --v="$verbosity"
}

# ---------------------------------------------------------------------------------------------
# Readiness
# ---------------------------------------------------------------------------------------------

# fail <components> <message>: the error plus the tail of each named component's log.
fail() {
  local comps=$1 comp
  shift
  log "ERROR: $*"
  for comp in $comps; do
    [[ -f $LOGS/$comp.log ]] || continue
    printf '%s\n' "----- last 40 lines of $LOGS/$comp.log -----" >&2
    tail -n 40 "$LOGS/$comp.log" >&2
  done
  printf '%s\n' "-----" >&2
  exit 1
}

# wait_for <what> <timeout> <components> <command...>: polls the command every POLL_INTERVAL
# seconds (default 0.2) until it succeeds. Fails at once if one of the (space-separated)
# components doing the work has exited, or at the deadline, showing their logs either way.
wait_for() {
  local what=$1 timeout=$2 comps=$3 comp
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    for comp in $comps; do
      is_running "$comp" || fail "$comps" "$comp exited while waiting for $what"
    done
    ((SECONDS < deadline)) || fail "$comps" "timed out after ${timeout}s waiting for $what"
    sleep "${POLL_INTERVAL:-0.2}"
  done
}

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }
apiserver_ready() { curl -fsS --max-time 2 --cacert "$PKI/ca.crt" "https://127.0.0.1:$API_PORT/readyz" | grep -qx ok; }
# Their serving certificates are self-signed by the components themselves: -k for a health probe.
kcm_healthy() { curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" | grep -qx ok; }
scheduler_healthy() { curl -fsSk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" | grep -qx ok; }
kwok_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null; }
# The token and service-account controllers of kube-controller-manager create this one.
default_sa_exists() { kctl get serviceaccount default --namespace default; }

# A node counts once kwok reports it Ready and kube-controller-manager has lifted the
# node.kubernetes.io/not-ready:NoSchedule taint every new node starts with: until then, nothing
# (DaemonSet pods included) is scheduled there, so "Ready" alone would return too early.
ready_node_count() {
  kctl get nodes -l type=kwok --chunk-size=500 \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints[*].key}{"\n"}{end}' |
    grep '^True' | grep -vc 'node\.kubernetes\.io/not-ready' || true
}
nodes_ready() { (($(ready_node_count) >= NODES)); }

# ---------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------

# One Node manifest. Each node gets its own InternalIP (10.1.x.y), which kwok keeps, so
# host-network pods on different nodes get different IPs (kwok's --node-ip would give all the same).
node_manifest() {
  local i=$1 n=$(($1 + 1))
  printf '%s\n' \
    "---" \
    "apiVersion: v1" \
    "kind: Node" \
    "metadata:" \
    "  name: $NODE_PREFIX$i" \
    "  annotations:" \
    "    $KWOK_NODE_ANNOTATION: fake" \
    "    node.alpha.kubernetes.io/ttl: \"0\"" \
    "  labels:" \
    "    type: kwok" \
    "    kubernetes.io/hostname: $NODE_PREFIX$i" \
    "    kubernetes.io/os: linux" \
    "    kubernetes.io/arch: amd64" \
    "    node-role.kubernetes.io/agent: \"\"" \
    "    topology.kubernetes.io/zone: zone-$((i % 3))" \
    "spec:" \
    "  taints:" \
    "  - key: $KWOK_NODE_ANNOTATION" \
    "    value: fake" \
    "    effect: NoSchedule" \
    "status:" \
    "  addresses:" \
    "  - type: InternalIP" \
    "    address: 10.1.$((n / 256)).$((n % 256))" \
    "  - type: Hostname" \
    "    address: $NODE_PREFIX$i"
}

# Creates the missing nodes x0-node-0 .. x0-node-<N-1>: one multi-document manifest, split into a
# few batches created in parallel, because one kubectl per node would take minutes for 1000.
create_nodes() {
  local existing i missing=0 batches=4 b pids=() rc=0
  existing=" $(kctl get nodes -l type=kwok -o jsonpath='{.items[*].metadata.name}') "
  mkdir -p "$STATE/nodes"
  rm -f "$STATE"/nodes/batch-*.yaml
  for ((i = 0; i < NODES; i++)); do
    [[ $existing == *" $NODE_PREFIX$i "* ]] && continue
    node_manifest "$i" >>"$STATE/nodes/batch-$((missing % batches)).yaml"
    missing=$((missing + 1))
  done
  ((missing)) || return 0
  log "creating $missing fake node(s)"
  for b in "$STATE"/nodes/batch-*.yaml; do
    kctl create -f "$b" >/dev/null 2>"$b.err" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  if ((rc)); then
    cat "$STATE"/nodes/batch-*.err >&2
    die "creating nodes failed"
  fi
}

wait_nodes() {
  # Roughly one extra second per 25 nodes on top of the base timeout (1000 nodes on 2 cores take
  # a while), and a poll interval that grows with the node count, because each poll lists every
  # node and would otherwise compete for the CPU with the components it waits for.
  local ms=$((200 + NODES))
  POLL_INTERVAL="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" \
    wait_for "$NODES node(s) Ready and schedulable" $((TIMEOUT + NODES / 25)) \
    "kwok kube-controller-manager" nodes_ready
}

# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------

all_running() {
  local comp
  for comp in "${COMPONENTS[@]}"; do is_running "$comp" || return 1; done
}

# Up and healthy. A busy apiserver may miss one /readyz probe: while every process runs, give it
# a while before `up` concludes the cluster is broken and replaces it.
healthy() {
  load_ports && all_running || return 1
  local deadline=$((SECONDS + 30))
  until apiserver_ready; do
    ((SECONDS < deadline)) && all_running || return 1
    sleep 0.5
  done
}

lock_cluster() {
  mkdir -p "$LOCKS"
  exec 9>"$LOCKS/$NAME.lock"
  flock -w 600 9 || die "another cluster.sh up/down of '$NAME' holds $LOCKS/$NAME.lock"
}

# On a failed `up`: stop what was started (unless X0_KEEP_ON_FAILURE=1) but keep the logs.
on_up_failure() {
  local rc=$?
  ((rc)) || return 0
  if [[ ${X0_KEEP_ON_FAILURE:-0} == 1 ]]; then
    log "up failed; processes left running (X0_KEEP_ON_FAILURE=1); logs in $LOGS"
  else
    stop_processes || true
    log "up failed; processes stopped; logs kept in $LOGS (\`$0 down\` removes them)"
  fi
}

cmd_up() {
  local t0
  t0="$(now)"
  need_tools
  lock_cluster
  if healthy; then
    log "already up"
    create_nodes
    wait_nodes
    cmd_status
    return
  fi
  if [[ -d $STATE ]]; then
    log "found a stopped or unhealthy cluster in $STATE; removing it first"
    stop_processes
    rm -rf "$STATE"
  fi
  ensure_binaries
  [[ -f $KWOK_STAGES ]] || die "missing kwok stage config $KWOK_STAGES"

  umask 077
  mkdir -p "$PKI" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/kwok"
  trap on_up_failure EXIT
  allocate_ports
  gen_pki
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler

  # Each component starts once what it depends on is healthy: the apiserver would retry etcd on
  # its own (filling its log with dial errors), but kube-controller-manager gives up if the
  # apiserver is not healthy soon enough.
  start_etcd
  wait_for "etcd to be healthy" "$TIMEOUT" etcd etcd_healthy
  start_apiserver
  wait_for "kube-apiserver /readyz" "$TIMEOUT" kube-apiserver apiserver_ready
  start_controller_manager
  start_scheduler
  start_kwok
  create_nodes
  wait_for "the default ServiceAccount (kube-controller-manager)" "$TIMEOUT" kube-controller-manager default_sa_exists
  wait_for "kube-controller-manager /healthz" "$TIMEOUT" kube-controller-manager kcm_healthy
  wait_for "kube-scheduler /healthz" "$TIMEOUT" kube-scheduler scheduler_healthy
  wait_for "kwok /healthz" "$TIMEOUT" kwok kwok_healthy
  wait_nodes
  trap - EXIT

  log "cluster '$NAME' up in $(elapsed "$t0")s with $NODES node(s)"
  cmd_status
  log "use it with: eval \"\$($0 env)\""
}

cmd_down() {
  need_tools
  lock_cluster
  if [[ ! -d $STATE ]]; then
    log "already down"
    return
  fi
  stop_processes
  rm -rf "$STATE"
  log "down"
}

cmd_status() {
  local comp pid state port all=0 total ready
  load_ports || true
  echo "cluster $NAME (state $STATE)"
  for comp in "${COMPONENTS[@]}"; do
    case $comp in
      etcd) port="http://127.0.0.1:${ETCD_CLIENT_PORT:-?}" ;;
      kube-apiserver) port="https://127.0.0.1:${API_PORT:-?}" ;;
      kube-controller-manager) port="https://127.0.0.1:${KCM_PORT:-?}" ;;
      kube-scheduler) port="https://127.0.0.1:${SCHED_PORT:-?}" ;;
      kwok) port="http://127.0.0.1:${KWOK_PORT:-?}" ;;
    esac
    if pid="$(component_pid "$comp")"; then
      state="running (pid $pid)"
    else
      state="stopped"
      all=1
    fi
    printf '  %-24s %-20s %s\n' "$comp" "$state" "$port"
  done
  if is_running kube-apiserver && apiserver_ready; then
    total="$(kctl get nodes --no-headers 2>/dev/null | wc -l)"
    ready="$(ready_node_count)"
    echo "  nodes: $total ($ready kwok node(s) Ready and schedulable)"
    echo "  kubeconfig: $KUBECONFIG_FILE"
  else
    echo "  nodes: unknown (kube-apiserver is not ready)"
    all=1
  fi
  return "$all"
}

cmd_kubeconfig() {
  [[ -f $KUBECONFIG_FILE ]] || die "cluster '$NAME' is not up (no $KUBECONFIG_FILE); run: $0 up"
  echo "$KUBECONFIG_FILE"
}

cmd_env() {
  [[ -f $KUBECONFIG_FILE ]] || die "cluster '$NAME' is not up (no $KUBECONFIG_FILE); run: $0 up"
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
  # $PATH stays literal so it expands in the shell that evals this.
  # shellcheck disable=SC2016
  printf 'export PATH=%q:"$PATH"\n' "$K8S_BIN:$ETCD_BIN:$KWOK_BIN:$HELM_BIN"
}

usage() {
  sed -n '2,/X0_KEEP_ON_FAILURE/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  validate_env
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    kubeconfig) cmd_kubeconfig ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  # Exit here, not by falling off the end: bash reads a script while it runs it, so if this file
  # is edited during a long `up`, whatever now follows `main "$@"` must never be executed.
  exit 0
}

main "$@"
