# Shared helpers for deploy/local/*.sh. Source it; do not run it.
# State lives in .local/ at the repo root: .local/log/<name>.log, .local/run/<name>.pid.
# ORDERSTATUS_LOCAL_DIR moves all of it (logs, pid files, data) elsewhere, so a second stack
# on other ports (KAFKA_PORT, KAFKA_CONTROLLER_PORT, PGPORT_LOCAL) runs beside the first and
# each one's stop leaves the other alone: tests/chaos does this under .local/chaos/.
# shellcheck shell=bash

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
LOCAL_DIR="${ORDERSTATUS_LOCAL_DIR:-$REPO_ROOT/.local}"
LOG_DIR="$LOCAL_DIR/log"
RUN_DIR="$LOCAL_DIR/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"

COMPONENT="${COMPONENT:-local}"

say() { printf '[%s] %s\n' "$COMPONENT" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# log_tail NAME [LINES]: print the end of .local/log/NAME.log to stderr.
log_tail() {
  local f="$LOG_DIR/$1.log"
  if [[ -f $f ]]; then
    say "last ${2:-40} lines of $f:"
    tail -n "${2:-40}" "$f" >&2 || true
  fi
}

# alive PID: the process exists and is not a zombie waiting to be reaped (pid 1
# of some containers reaps late, and kill -0 succeeds on a zombie).
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  state=${state%% *}
  [[ -n $state && $state != Z && $state != X ]]
}

# pid_of NAME [MARKER]: print the pid recorded in .local/run/NAME.pid when that
# process is alive (and its command line contains MARKER); drop a stale pid file.
pid_of() {
  local name=$1 marker=${2:-} pidfile="$RUN_DIR/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
    if [[ -z $marker ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
      echo "$pid"
      return 0
    fi
  fi
  rm -f "$pidfile"
  return 1
}

# start_bg NAME CMD...: run CMD in its own session (setsid), detached from the
# terminal, appending to .local/log/NAME.log; the pid (= process group id) goes
# to .local/run/NAME.pid.
start_bg() {
  local name=$1; shift
  local log="$LOG_DIR/$name.log"
  printf '\n===== %s start: %s\n' "$(date -Is)" "$*" >>"$log"
  # In a non-interactive shell the background child is not a process group
  # leader, so setsid does not fork: $! is the pid of CMD itself.
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  local pid=$! tries=0
  # Until the forked subshell has exec'd, /proc/PID/cmdline is this script's, and pid_of (which
  # checks the command line against a marker, then forgets the pid) would take the process for
  # gone: on a loaded machine that gap was long enough for `make chaos-cluster` to lose a starting
  # broker (reported as exited, left running on its ports). Wait for the exec, at most 5 s.
  while ((tries++ < 500)) && alive "$pid" \
    && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$1"; do
    sleep 0.01
  done
  echo "$pid" >"$RUN_DIR/$name.pid"
}

# stop_pid NAME PID TIMEOUT_S: SIGTERM the process group, wait, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 waited=0
  say "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid"; do
    if ((waited >= timeout * 10)); then
      say "$name did not stop within ${timeout}s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  # Anything left in the group (children that ignored SIGTERM) goes too.
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$RUN_DIR/$name.pid"
}

# wait_until TIMEOUT_S NAME CMD...: poll CMD every 0.5 s until it succeeds.
# Fails early when the process recorded for NAME has died.
wait_until() {
  local timeout=$1 name=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$RUN_DIR/$name.pid" ]] && ! alive "$(<"$RUN_DIR/$name.pid")"; then
      say "$name exited during startup"
      log_tail "$name"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      say "$name not ready after ${timeout}s"
      log_tail "$name"
      return 1
    fi
    sleep 0.5
  done
}

# port_busy PORT: true when something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_ok URL: true when URL answers 2xx.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# logged STEP WHAT CMD...: run an install step with its whole output in .local/log/STEP.log and
# one line on the terminal (what, how long, where its log is); on failure, the log's end too.
logged() {
  local step=$1 what=$2; shift 2
  local log="$LOG_DIR/$step.log" t0=$SECONDS rc=0
  printf '\n===== %s: %s\n' "$(date -Is)" "$*" >>"$log"
  "$@" >>"$log" 2>&1 </dev/null || rc=$?
  if ((rc != 0)); then
    say "$what: FAILED after $((SECONDS - t0))s (exit $rc, log: $log)"
    log_tail "$step" 30
    return "$rc"
  fi
  say "$what: done in $((SECONDS - t0))s (log: $log)"
}

# apt_install PKG...: install Debian packages (root, or through sudo).
apt_install() {
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
    sudo=(sudo)
  fi
  logged apt-get "apt-get update" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
    || say "WARNING: apt-get update failed; trying the install with the lists at hand"
  logged apt-get "apt-get install $*" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

# status_line NAME STATE PID ADDRESS
status_line() { printf '%-12s %-8s %-10s %s\n' "$1" "$2" "${3:+pid $3}" "${4:-}"; }

# stop_named NAME MARKER TIMEOUT_S: stop the process recorded for NAME, if any.
stop_named() {
  local pid
  if pid=$(pid_of "$1" "$2"); then
    stop_pid "$1" "$pid" "$3"
  else
    say "$1 not running"
  fi
}

# status_named NAME MARKER ADDRESS: one status line; returns 3 when stopped.
status_named() {
  local pid
  if pid=$(pid_of "$1" "$2"); then
    status_line "$1" running "$pid" "$3"
  else
    status_line "$1" stopped "" "$3"
    return 3
  fi
}

# dispatch "$@": run the function named by $1 (install|start|stop|status).
dispatch() {
  case "${1:-}" in
    install | start | stop | status) "$1" ;;
    *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
  esac
}
