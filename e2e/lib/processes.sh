# Background processes of the demo scripts, sourced by them (e2e/demo-*.sh): which pid in a pid
# file is still the process it names, and stopping one.

# own_pid <pidfile> <cmdline substring>: the pid, if that process runs (a zombie does not), and
# its command line contains the substring (a recycled pid is someone else's).
own_pid() {
  local pid cmdline st
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ $cmdline == *"$2"* ]] || return 1
  st="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [[ ${st%% *} != Z ]] || return 1
  echo "$pid"
}

# stop_pid <pid>: SIGTERM, SIGKILL after 10s; returns once it is gone.
stop_pid() {
  local deadline=$((SECONDS + 10))
  kill -TERM "$1" 2>/dev/null || return 0
  while kill -0 "$1" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}
