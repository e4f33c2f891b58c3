#!/usr/bin/env bash
# The Python services in the background, each in its own session (setsid), with
# pid files in .local/run and logs in .local/log.
#   deploy/local/services.sh start [api|worker|figures|notifier|all]   idempotent; waits until ready
#   deploy/local/services.sh stop [api|worker|figures|notifier|all]    SIGTERM, up to 20 s, then SIGKILL
#   deploy/local/services.sh status [api|worker|figures|notifier|all]
# api = .venv/bin/orderstatus api (ready when GET /readyz is 200),
# worker = .venv/bin/orderstatus worker (ready when its /metrics answers),
# figures = .venv/bin/orderstatus figures (ready when GET /readyz is 200: tables recovered),
# notifier = .venv/bin/orderstatus notifier (webhooks; ready when its /metrics answers).
# Env: API_PORT (8000), WORKER_METRICS_PORT (9101), FIGURES_PORT (6066), NOTIFIER_METRICS_PORT
# (9102), WEBHOOK_ALLOWED_CIDRS (127.0.0.0/8: the demo's receiver is local), SERVICES_START_TIMEOUT
# (60; the figures app may wait out a dead predecessor's session first), KAFKA_SECURITY (sasl:
# each service logs in to Kafka as its own principal, orderstatus-<name>, with KAFKA_PASSWORD_<NAME>
# or the dev password; see kafka-credentials.sh and docs/security.md).
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

ready_url() {
  case $1 in
    api) echo "http://127.0.0.1:$API_PORT/readyz" ;;
    worker) echo "http://127.0.0.1:$WORKER_METRICS_PORT/metrics" ;;
    figures) echo "http://127.0.0.1:$FIGURES_PORT/readyz" ;;
    notifier) echo "http://127.0.0.1:$NOTIFIER_METRICS_PORT/metrics" ;;
  esac
}

start_one() {
  local name=$1 pid url
  url=$(ready_url "$name")
  if pid=$(pid_of "$name" "$CLI $name"); then
    say "$name already running (pid $pid)"
  else
    [[ -x $CLI ]] || die "$CLI missing: run make install"
    (
      [[ $KAFKA_SECURITY == sasl ]] && kafka_client_env "$name"
      start_bg "$name" "$CLI" "$name"
    )
    say "$name started (pid $(<"$RUN_DIR/$name.pid")), waiting for $url"
  fi
  wait_until "$SERVICES_START_TIMEOUT" "$name" http_ok "$url" || die "$name did not become ready"
  say "$name ready: $url (log: $LOG_DIR/$name.log)"
}

stop_one() { stop_named "$1" "$CLI $1" 20; }

status_one() { status_named "$1" "$CLI $1" "$(ready_url "$1")"; }

action=${1:-}
target=${2:-all}
case $target in
  api | worker | figures | notifier) names=("$target") ;;
  all) names=(api worker figures notifier) ;;
  *) echo "usage: $0 {start|stop|status} [api|worker|figures|notifier|all]" >&2; exit 2 ;;
esac
rc=0
case $action in
  # The worker first: the API's replies come back through it. Figures and the notifier are off
  # the command path.
  start) for n in worker api figures notifier; do [[ " ${names[*]} " == *" $n "* ]] && start_one "$n"; done ;;
  stop) for n in notifier figures api worker; do [[ " ${names[*]} " == *" $n "* ]] && stop_one "$n"; done ;;
  status) for n in "${names[@]}"; do status_one "$n" || rc=3; done ;;
  *) echo "usage: $0 {start|stop|status} [api|worker|figures|notifier|all]" >&2; exit 2 ;;
esac
exit $rc
