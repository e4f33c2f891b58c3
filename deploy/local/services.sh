#!/usr/bin/env bash
# The Python services in the background, each in its own session (setsid), with
# pid files in .local/run and logs in .local/log.
#   deploy/local/services.sh start [api|worker|worker-N|figures|notifier|all]   idempotent; waits until ready
#   deploy/local/services.sh stop [api|worker|worker-N|figures|notifier|all]    SIGTERM, up to 20 s, then SIGKILL
#   deploy/local/services.sh status [api|worker|worker-N|figures|notifier|all]
# api = .venv/bin/orderstatus api with API_PROCESSES processes (ready when GET /readyz is 200),
# worker = WORKERS workers, worker-1..worker-N: each .venv/bin/orderstatus worker with WORKER_ID=i
# (its transactional.id and static group member: docs/instances.md), its own metrics port, pid
# file (worker-i.pid) and log (worker-i.log); ready when its /metrics answers. `stop worker` and
# `status worker` cover every worker slot started before, whatever WORKERS says now.
# figures = .venv/bin/orderstatus figures (ready when GET /readyz is 200: tables recovered),
# notifier = .venv/bin/orderstatus notifier (webhooks; ready when its /metrics answers).
# Env: WORKERS (1), API_PROCESSES (1; uvicorn's processes share the one listening socket on
# API_PORT and each reads a results partition of its own, API_RESULTS_PARTITION=auto:
# docs/instances.md), API_PORT (8000), WORKER_METRICS_PORT (9101: worker i serves on the i-th
# port from it that no other service here uses, so worker-2 is on 9103 beside the notifier's
# 9102), FIGURES_PORT (6066), NOTIFIER_METRICS_PORT (9102), WEBHOOK_ALLOWED_CIDRS (127.0.0.0/8:
# the demo's receiver is local), SERVICES_START_TIMEOUT (60; the figures app may wait out a dead
# predecessor's session first), KAFKA_SECURITY (sasl: each service logs in to Kafka as its own
# principal, orderstatus-<name>, with KAFKA_PASSWORD_<NAME> or the dev password; see
# kafka-credentials.sh and docs/security.md).
# The local Prometheus finds the workers in $ORDERSTATUS_LOCAL_DIR/prometheus/targets/status-worker.json
# (file_sd, rewritten at each start of workers; kept after a stop, so a stopped worker shows as down).
COMPONENT=services
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=deploy/local/kafka-credentials.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-credentials.sh"
KAFKA_SECURITY="${KAFKA_SECURITY:-sasl}"

API_PORT="${API_PORT:-8000}"
WORKER_METRICS_PORT="${WORKER_METRICS_PORT:-9101}"
FIGURES_PORT="${FIGURES_PORT:-6066}"
NOTIFIER_METRICS_PORT="${NOTIFIER_METRICS_PORT:-9102}"
# The API checks webhook URLs at registration and the notifier at delivery: both need it.
export WEBHOOK_ALLOWED_CIDRS="${WEBHOOK_ALLOWED_CIDRS-127.0.0.0/8}" NOTIFIER_METRICS_PORT FIGURES_PORT
SERVICES_START_TIMEOUT="${SERVICES_START_TIMEOUT:-60}"
CLI="$REPO_ROOT/.venv/bin/orderstatus"
# A local stack: the dev JWT secret is allowed only where ENVIRONMENT says so (docs/security.md).
export ENVIRONMENT="${ENVIRONMENT:-dev}"

WORKERS="${WORKERS:-1}"
API_PROCESSES="${API_PROCESSES:-1}"
[[ $WORKERS =~ ^[1-9][0-9]?$ ]] || die "WORKERS must be a number from 1 to 99 (got '$WORKERS')"
[[ $API_PROCESSES =~ ^[1-9][0-9]?$ ]] || die "API_PROCESSES must be a number from 1 to 99 (got '$API_PROCESSES')"
TARGETS_FILE="$LOCAL_DIR/prometheus/targets/status-worker.json"

# worker_port I: worker I's metrics port, the I-th from WORKER_METRICS_PORT that no other service
# of the stack uses.
worker_port() {
  local port=$((WORKER_METRICS_PORT - 1)) i=0
  while ((i < $1)); do
    port=$((port + 1))
    [[ $port == "$NOTIFIER_METRICS_PORT" || $port == "$FIGURES_PORT" || $port == "$API_PORT" ]] && continue
    i=$((i + 1))
  done
  echo "$port"
}

ready_url() {
  case $1 in
    api) echo "http://127.0.0.1:$API_PORT/readyz" ;;
    worker-*) echo "http://127.0.0.1:$(worker_port "${1#worker-}")/metrics" ;;
    worker) echo "(a worker started before the slots had names)" ;;
    figures) echo "http://127.0.0.1:$FIGURES_PORT/readyz" ;;
    notifier) echo "http://127.0.0.1:$NOTIFIER_METRICS_PORT/metrics" ;;
  esac
}

# kind_of NAME: the `orderstatus` command behind a service name (worker-3 -> worker).
kind_of() { echo "${1%%-*}"; }

# worker_slots: the workers WORKERS asks for, worker-1..worker-$WORKERS.
worker_slots() { local i; for ((i = 1; i <= WORKERS; i++)); do echo "worker-$i"; done; }

# recorded_workers: every worker with a pid file, started with whatever WORKERS (and the single
# `worker` of before the slots had names), so that stop and status miss none.
recorded_workers() {
  local f
  for f in "$RUN_DIR"/worker.pid "$RUN_DIR"/worker-*.pid; do
    [[ -f $f ]] && basename "$f" .pid
  done | sort -t- -k2,2n
}

# write_worker_targets: every worker slot (WORKERS of them, and any other recorded) as the local
# Prometheus's file_sd targets of the status-worker job.
write_worker_targets() {
  local name targets=()
  mkdir -p "$(dirname "$TARGETS_FILE")"
  for name in $( { worker_slots; recorded_workers; } | grep -v '^worker$' | sort -u -t- -k2,2n); do
    targets+=("\"127.0.0.1:$(worker_port "${name#worker-}")\"")
  done
  local IFS=,
  printf '[{"targets": [%s]}]\n' "${targets[*]}" >"$TARGETS_FILE.tmp"
  mv "$TARGETS_FILE.tmp" "$TARGETS_FILE"
}

start_one() {
  local name=$1 kind pid url detail=""
  kind=$(kind_of "$name")
  url=$(ready_url "$name")
  if pid=$(pid_of "$name" "$CLI $kind"); then
    say "$name already running (pid $pid)"
  else
    [[ -x $CLI ]] || die "$CLI missing: run make install"
    (
      [[ $KAFKA_SECURITY == sasl ]] && kafka_client_env "$kind"
      case $name in
        worker-*) export WORKER_ID="${name#worker-}" WORKER_METRICS_PORT="$(worker_port "${name#worker-}")" ;;
        api) export API_PROCESSES ;;
      esac
      start_bg "$name" "$CLI" "$kind"
    )
    say "$name started (pid $(<"$RUN_DIR/$name.pid")), waiting for $url"
  fi
  wait_until "$SERVICES_START_TIMEOUT" "$name" http_ok "$url" || die "$name did not become ready"
  [[ $name == api ]] && detail=", $API_PROCESSES process(es) on the one port"
  say "$name ready: $url (log: $LOG_DIR/$name.log$detail)"
}

stop_one() { stop_named "$1" "$CLI $(kind_of "$1")" 20; }

status_one() { status_named "$1" "$CLI $(kind_of "$1")" "$(ready_url "$1")"; }

action=${1:-}
target=${2:-all}
usage="usage: $0 {start|stop|status} [api|worker|worker-N|figures|notifier|all]"
case $target in
  api | worker | figures | notifier | all | worker-[1-9] | worker-[1-9][0-9]) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
# selected NAME: the target covers service NAME (`worker` covers every worker-N).
selected() { [[ $target == all || $target == "$1" || ($target == worker && $1 == worker*) ]]; }
rc=0
case $action in
  # The workers first: the API's replies come back through them. Figures and the notifier are off
  # the command path.
  start)
    if [[ $target == worker-* ]]; then
      start_one "$target"
      write_worker_targets
    elif selected worker-1; then
      for n in $(worker_slots); do start_one "$n"; done
      write_worker_targets
    fi
    for n in api figures notifier; do if selected "$n"; then start_one "$n"; fi; done
    ;;
  stop)
    for n in notifier figures api $(recorded_workers); do if selected "$n"; then stop_one "$n"; fi; done
    ;;
  status)
    # The slots WORKERS names, and any other worker still recorded (started with more of them).
    for n in api $( { worker_slots; recorded_workers; } | sort -u -t- -k2,2n) figures notifier; do
      if selected "$n"; then status_one "$n" || rc=3; fi
    done
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
exit $rc
