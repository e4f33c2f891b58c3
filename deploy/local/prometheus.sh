#!/usr/bin/env bash
# Prometheus for the local stack, run directly (not Debian's systemd service).
#   deploy/local/prometheus.sh install   apt-get install prometheus when the binary is missing
#   deploy/local/prometheus.sh start     start and wait for /-/ready
#   deploy/local/prometheus.sh stop
#   deploy/local/prometheus.sh status
# Env: PROMETHEUS_PORT (19090), PROMETHEUS_BIN (prometheus on PATH); the brokers' metrics ports
# as deploy/local/kafka.sh has them (KAFKA_BROKERS, KAFKA_METRICS_PORTS / KAFKA_METRICS_PORT,
# KAFKA_PORT, KAFKA_METRICS=off: none): start writes them to deploy/prometheus/targets/kafka.json.
# Prometheus and promtool are required (tests of the rules, doctor and the dashboards need them):
# when they cannot be installed, install and start fail.
COMPONENT=prometheus
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
PROM_ADDR="127.0.0.1:$PROMETHEUS_PORT"
PROM_CONFIG="$REPO_ROOT/deploy/prometheus/prometheus.yml"
PROM_DATA="$LOCAL_DIR/prometheus/data"
KAFKA_TARGETS="$REPO_ROOT/deploy/prometheus/targets/kafka.json"

prom_bin() {
  if [[ -n ${PROMETHEUS_BIN:-} ]]; then
    [[ -x $PROMETHEUS_BIN ]] && echo "$PROMETHEUS_BIN"
  else
    command -v prometheus 2>/dev/null || { [[ -x /usr/bin/prometheus ]] && echo /usr/bin/prometheus; }
  fi
}

has_promtool() { command -v promtool >/dev/null 2>&1 || [[ -x /usr/bin/promtool ]]; }

install() {
  prom_bin >/dev/null && has_promtool && return 0
  # The Debian package also ships a systemd unit; it is not used (and with
  # policy-rc.d in containers it is not started either).
  if ! apt_install prometheus; then
    say "WARNING: apt-get install prometheus failed; retrying once after a fresh apt-get update"
    sleep 2
    apt_install prometheus || true
  fi
  prom_bin >/dev/null || die "Prometheus could not be installed (apt-get install prometheus failed)"
  has_promtool || die "promtool missing after installing prometheus"
}

ready() { http_ok "http://$PROM_ADDR/-/ready"; }

# The brokers' metrics ports, comma-separated, derived as deploy/local/kafka.sh derives them.
kafka_metrics_ports() {
  local first="${KAFKA_PORTS:-${KAFKA_PORT:-19092}}" brokers="${KAFKA_BROKERS:-1}" i ports=""
  first="${first%%,*}"
  if [[ ${KAFKA_METRICS:-on} == off ]]; then
    echo ""
  elif ((brokers == 1)); then
    echo "${KAFKA_METRICS_PORT:-$((first + 100))}"
  elif [[ -n ${KAFKA_METRICS_PORTS:-} ]]; then
    echo "$KAFKA_METRICS_PORTS"
  else
    for ((i = 0; i < brokers; i++)); do ports+="${ports:+,}$((first + 100 + 2 * i))"; done
    echo "$ports"
  fi
}

# write_kafka_targets: the file_sd file of the kafka job (Prometheus re-reads it when it changes).
write_kafka_targets() {
  local ports targets="" p
  ports=$(kafka_metrics_ports)
  for p in ${ports//,/ }; do targets+="${targets:+, }\"127.0.0.1:$p\""; done
  mkdir -p "$(dirname "$KAFKA_TARGETS")"
  printf '[{"targets": [%s], "labels": {}}]\n' "$targets" >"$KAFKA_TARGETS.tmp"
  mv "$KAFKA_TARGETS.tmp" "$KAFKA_TARGETS"
}

start() {
  local pid bin
  write_kafka_targets
  if pid=$(pid_of prometheus "$PROM_CONFIG"); then
    # Pick up rule and config changes (deploy/prometheus/rules) without a restart.
    if curl -fsS -o /dev/null --max-time 5 -X POST "http://$PROM_ADDR/-/reload"; then
      say "already running (pid $pid) on http://$PROM_ADDR; configuration and rules reloaded"
    else
      say "already running (pid $pid) on http://$PROM_ADDR; WARNING: reload failed (see $LOG_DIR/prometheus.log)"
    fi
    return 0
  fi
  install
  bin=$(prom_bin) || die "not starting Prometheus: binary missing"
  port_busy "$PROMETHEUS_PORT" && die "port $PROMETHEUS_PORT is already in use by another process"
  mkdir -p "$PROM_DATA"
  start_bg prometheus "$bin" \
    --config.file="$PROM_CONFIG" \
    --storage.tsdb.path="$PROM_DATA" \
    --storage.tsdb.retention.time=7d \
    --web.listen-address="$PROM_ADDR" \
    --web.enable-lifecycle
  say "started pid $(<"$RUN_DIR/prometheus.pid"), waiting for http://$PROM_ADDR/-/ready"
  wait_until 60 prometheus ready || { stop; die "Prometheus did not become ready"; }
  say "ready on http://$PROM_ADDR (log: $LOG_DIR/prometheus.log)"
}

stop() { stop_named prometheus "$PROM_CONFIG" 30; }

status() {
  if prom_bin >/dev/null; then
    status_named prometheus "$PROM_CONFIG" "http://$PROM_ADDR"
  else
    status_line prometheus missing "" "(not installed)"
    return 3
  fi
}

dispatch "$@"
