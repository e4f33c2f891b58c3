#!/usr/bin/env bash
# Apache Kafka (KRaft, single node: broker + controller in one JVM), no Docker.
#   deploy/local/kafka.sh install   resolve the broker jars into deploy/kafka/lib (Maven)
#   deploy/local/kafka.sh start     render config, format storage once, start, wait ready
#   deploy/local/kafka.sh stop      SIGTERM, up to 30 s, then SIGKILL
#   deploy/local/kafka.sh status
# Env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), KAFKA_HEAP ("-Xms256m -Xmx1g"),
#      KAFKA_START_TIMEOUT (60), JAVA (java), ORDERSTATUS_LOCAL_DIR (.local; see lib.sh),
#      KAFKA_SECURITY (sasl: SASL/SCRAM-SHA-512 clients and ACLs, docs/security.md; or plaintext),
#      KAFKA_PASSWORD_<ROLE> (the principals' passwords; see kafka-credentials.sh),
#      KAFKA_TLS_DIR (with sasl: the client listener is SASL_SSL with $KAFKA_TLS_DIR/broker.pem, its
#      PKCS#8 key and certificate chain, and ca.pem, the CA its clients and itself trust).
# With sasl, the SCRAM users are written when storage is formatted; storage formatted for other
# users or passwords (or without SASL) is formatted again, which drops its topics.
COMPONENT=kafka
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=deploy/local/kafka-credentials.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-credentials.sh"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx1g}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
JAVA="${JAVA:-java}"
KAFKA_SECURITY="${KAFKA_SECURITY:-sasl}"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-}"
case $KAFKA_SECURITY in plaintext | sasl) ;; *) die "KAFKA_SECURITY must be plaintext or sasl" ;; esac

KAFKA_SRC="$REPO_ROOT/deploy/kafka"
KAFKA_LIB="$KAFKA_SRC/lib"
KAFKA_STATE="$LOCAL_DIR/kafka"
KAFKA_DATA="$KAFKA_STATE/data"
KAFKA_PROPS="$KAFKA_STATE/server.properties"
# What the storage was formatted for: the security mode and a digest of the SCRAM users.
KAFKA_FORMATTED_FOR="$KAFKA_STATE/formatted-for"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
VENV_PY="$REPO_ROOT/.venv/bin/python"
MAIN_CLASS=kafka.Kafka
# How our broker's pid is recognised: its command line names this stack's rendered config, so a
# pid file gone stale (pids wrap quickly in containers) never matches another stack's broker.
PID_MARKER="$MAIN_CLASS $KAFKA_PROPS"

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml"; }

install() {
  local version
  version=$(kafka_version)
  if [[ -f "$KAFKA_LIB/kafka_2.13-$version.jar" && -f "$KAFKA_LIB/kafka-clients-$version.jar" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  rm -rf "$KAFKA_LIB"
  logged maven "Kafka $version jars into deploy/kafka/lib (Maven)" \
    mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" \
    dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
  [[ -f "$KAFKA_LIB/kafka_2.13-$version.jar" ]] || die "Maven did not produce kafka_2.13-$version.jar"
}

storage_tool() { "$JAVA" -cp "$KAFKA_LIB/*" kafka.tools.StorageTool "$@"; }

# client_protocol: what the client listener speaks.
client_protocol() {
  if [[ $KAFKA_SECURITY == plaintext ]]; then
    echo PLAINTEXT
  elif [[ -n $KAFKA_TLS_DIR ]]; then
    echo SASL_SSL
  else
    echo SASL_PLAINTEXT
  fi
}

render_config() {
  mkdir -p "$KAFKA_DATA"
  local controller=PLAINTEXT
  [[ $KAFKA_SECURITY == sasl ]] && controller=SASL_PLAINTEXT
  {
    cat "$KAFKA_SRC/server.properties.template"
    if [[ $KAFKA_SECURITY == sasl ]]; then cat "$KAFKA_SRC/server-sasl.properties.template"; fi
    if [[ $(client_protocol) == SASL_SSL ]]; then
      printf '%s\n' "" "# KAFKA_TLS_DIR: TLS on the client listener (PEM files)." \
        ssl.keystore.type=PEM "ssl.keystore.location=$KAFKA_TLS_DIR/broker.pem" \
        ssl.truststore.type=PEM "ssl.truststore.location=$KAFKA_TLS_DIR/ca.pem"
    fi
  } | sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_LOG_DIRS@|$KAFKA_DATA|g" \
      -e "s|@CLIENT_PROTOCOL@|$(client_protocol)|g" -e "s|@CONTROLLER_PROTOCOL@|$controller|g" \
      -e "s|@OPERATOR_USER@|$(kafka_user operator)|g" \
      -e "s|@OPERATOR_PASSWORD@|$(kafka_password operator)|g" >"$KAFKA_PROPS"
  chmod 600 "$KAFKA_PROPS"
}

# scram_args: one --add-scram per principal (none without SASL).
scram_args() {
  [[ $KAFKA_SECURITY == sasl ]] || return 0
  local role
  for role in "${KAFKA_ROLES[@]}"; do
    printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' \
      "$(kafka_user "$role")" "$(kafka_password "$role")"
  done
}

formatted_for() {
  if [[ $KAFKA_SECURITY == sasl ]]; then
    echo "sasl $(scram_args | sha256sum | cut -c1-16)"
  else
    echo plaintext
  fi
}

format_storage() {
  local wanted
  wanted=$(formatted_for)
  if [[ -f "$KAFKA_DATA/meta.properties" ]]; then
    # Plaintext runs on any storage; SASL needs the users it was formatted with.
    [[ $KAFKA_SECURITY == plaintext || $(cat "$KAFKA_FORMATTED_FOR" 2>/dev/null) == "$wanted" ]] \
      && return 0
    say "storage $KAFKA_DATA was formatted without these SCRAM users: formatting it again (its topics are dropped)"
    rm -rf "$KAFKA_DATA" "$KAFKA_STATE/cluster-id"
    mkdir -p "$KAFKA_DATA"
  fi
  if [[ ! -s "$KAFKA_STATE/cluster-id" ]]; then
    storage_tool random-uuid | tail -n 1 >"$KAFKA_STATE/cluster-id"
  fi
  say "formatting storage (cluster id $(<"$KAFKA_STATE/cluster-id"), security $KAFKA_SECURITY)"
  local scram=()
  mapfile -t scram < <(scram_args)
  # Static quorum (controller.quorum.voters): no --standalone, which 4.x only
  # accepts together with controller.quorum.bootstrap.servers.
  storage_tool format -t "$(<"$KAFKA_STATE/cluster-id")" -c "$KAFKA_PROPS" --ignore-formatted \
    "${scram[@]}" >>"$LOG_DIR/kafka.log" 2>&1 || { log_tail kafka 20; die "storage format failed"; }
  echo "$wanted" >"$KAFKA_FORMATTED_FOR"
}

# A real Admin round trip (metadata request) when the venv has confluent_kafka;
# otherwise the listener accepting connections plus the broker's started line.
ready() {
  if "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
    local sasl=()
    [[ $KAFKA_SECURITY == sasl ]] && sasl=("$(kafka_user operator)" "$(kafka_password operator)")
    "$VENV_PY" - "$BOOTSTRAP" "$(client_protocol)" "$KAFKA_TLS_DIR" "${sasl[@]}" <<'PY'
import sys
from confluent_kafka.admin import AdminClient

bootstrap, protocol, tls_dir = sys.argv[1:4]
config = {"bootstrap.servers": bootstrap, "log_level": 0, "security.protocol": protocol}
if protocol.startswith("SASL_"):  # as the operator, SCRAM-SHA-512
    config.update({"sasl.mechanism": "SCRAM-SHA-512",
                   "sasl.username": sys.argv[4], "sasl.password": sys.argv[5]})
if protocol == "SASL_SSL":
    config["ssl.ca.location"] = f"{tls_dir}/ca.pem"
admin = AdminClient(config)
md = admin.list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
PY
  else
    port_busy "$KAFKA_PORT" && tail -n 200 "$LOG_DIR/kafka.log" | grep -q 'Kafka Server started'
  fi
}

start() {
  local pid
  if pid=$(pid_of kafka "$PID_MARKER"); then
    say "already running (pid $pid) on $BOOTSTRAP"
    local running=plaintext
    grep -q '^sasl.enabled.mechanisms=' "$KAFKA_PROPS" 2>/dev/null && running=sasl
    [[ $running == "$KAFKA_SECURITY" ]] \
      || die "it runs with KAFKA_SECURITY=$running, not $KAFKA_SECURITY: restart it ($0 stop, then start)"
    wait_until "$KAFKA_START_TIMEOUT" kafka ready
    return 0
  fi
  command -v "$JAVA" >/dev/null || die "java not found (need JDK 17+)"
  install
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_busy "$port" && die "port $port is already in use by another process"
  done
  render_config
  format_storage
  # shellcheck disable=SC2086  # KAFKA_HEAP holds several JVM flags
  start_bg kafka "$JAVA" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.yaml" \
    -cp "$KAFKA_LIB/*" "$MAIN_CLASS" "$KAFKA_PROPS"
  say "started pid $(<"$RUN_DIR/kafka.pid"), waiting for $BOOTSTRAP"
  local t0=$SECONDS
  wait_until "$KAFKA_START_TIMEOUT" kafka ready || { stop; die "Kafka did not become ready"; }
  say "ready on $BOOTSTRAP after $((SECONDS - t0))s (log: $LOG_DIR/kafka.log)"
}

stop() { stop_named kafka "$PID_MARKER" 30; }

status() { status_named kafka "$PID_MARKER" "$BOOTSTRAP ($KAFKA_SECURITY; controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"; }

dispatch "$@"
