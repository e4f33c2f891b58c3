#!/usr/bin/env bash
# Apache Kafka (KRaft), no Docker: one node (the default) or a cluster of three (KAFKA_BROKERS=3),
# every node broker and controller in one JVM (combined mode; docs/kafka-cluster.md).
#   deploy/local/kafka.sh install   resolve the broker jars and the JMX exporter into deploy/kafka/lib
#   deploy/local/kafka.sh start     render configs, format storage once, start every node, wait until
#                                   the metadata shows all brokers
#   deploy/local/kafka.sh stop      every node of this state directory: SIGTERM, up to 30 s, SIGKILL
#   deploy/local/kafka.sh status    one line per node
#   deploy/local/kafka.sh start-node|stop-node|kill-node|pause-node|resume-node N   (N = 1..KAFKA_BROKERS)
#       start-node waits until broker N is registered again; stop-node is a controlled shutdown
#       (SIGTERM); kill-node is kill -9; pause-node SIGSTOP; resume-node SIGCONT.
# Env: KAFKA_BROKERS (1 or 3), KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093),
#      KAFKA_PORTS / KAFKA_CONTROLLER_PORTS ("p1,p2,p3"; default KAFKA_PORT / KAFKA_CONTROLLER_PORT,
#      +2, +4), KAFKA_METRICS_PORT (one node; KAFKA_PORT+100) / KAFKA_METRICS_PORTS (default
#      KAFKA_PORT+100, +102, +104): each node's Prometheus metrics (JMX exporter), KAFKA_METRICS
#      (on; off: no exporter), KAFKA_REPLICA_LAG_MAX_MS (30000: replica.lag.time.max.ms),
#      KAFKA_HEAP ("-Xms256m -Xmx1g"; a cluster's nodes "-Xms128m -Xmx512m"),
#      KAFKA_START_TIMEOUT (60; 120 for a cluster), JAVA (java), ORDERSTATUS_LOCAL_DIR (.local; see lib.sh),
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

KAFKA_BROKERS="${KAFKA_BROKERS:-1}"
case $KAFKA_BROKERS in 1 | 3) ;; *) die "KAFKA_BROKERS must be 1 or 3 (an odd quorum: 3 voters outlive one)" ;; esac
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
if ((KAFKA_BROKERS == 1)); then
  KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx1g}"
  KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
else # three JVMs on a small machine
  KAFKA_HEAP="${KAFKA_HEAP:--Xms128m -Xmx512m}"
  KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
fi
KAFKA_REPLICA_LAG_MAX_MS="${KAFKA_REPLICA_LAG_MAX_MS:-30000}"
KAFKA_METRICS="${KAFKA_METRICS:-on}"
JAVA="${JAVA:-java}"
KAFKA_SECURITY="${KAFKA_SECURITY:-sasl}"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-}"
case $KAFKA_SECURITY in plaintext | sasl) ;; *) die "KAFKA_SECURITY must be plaintext or sasl" ;; esac
case $KAFKA_METRICS in on | off) ;; *) die "KAFKA_METRICS must be on or off" ;; esac

# port_list LIST BASE: LIST ("p1,p2,p3") split, else BASE, BASE+2, BASE+4 (one per node).
port_list() {
  local list=$1 base=$2 i ports=()
  if [[ -n $list ]]; then
    IFS=, read -ra ports <<<"$list"
  else
    for ((i = 0; i < KAFKA_BROKERS; i++)); do ports+=($((base + 2 * i))); done
  fi
  ((${#ports[@]} >= KAFKA_BROKERS)) || die "need $KAFKA_BROKERS ports, got \"$list\""
  echo "${ports[@]:0:KAFKA_BROKERS}"
}
read -ra CLIENT_PORTS <<<"$(port_list "${KAFKA_PORTS:-}" "$KAFKA_PORT")"
read -ra CONTROLLER_PORTS <<<"$(port_list "${KAFKA_CONTROLLER_PORTS:-}" "$KAFKA_CONTROLLER_PORT")"
if ((KAFKA_BROKERS == 1)); then
  METRICS_PORTS=("${KAFKA_METRICS_PORT:-$((CLIENT_PORTS[0] + 100))}")
else
  read -ra METRICS_PORTS <<<"$(port_list "${KAFKA_METRICS_PORTS:-}" $((CLIENT_PORTS[0] + 100)))"
fi

KAFKA_SRC="$REPO_ROOT/deploy/kafka"
KAFKA_LIB="$KAFKA_SRC/lib"
KAFKA_STATE="$LOCAL_DIR/kafka"
# One node: .local/kafka/{server.properties,data,...} (the layout before clusters); a cluster's
# node N: .local/kafka/node-N/. The cluster id is written once and shared by every node.
CLUSTER_ID_FILE="$KAFKA_STATE/cluster-id"
VENV_PY="$REPO_ROOT/.venv/bin/python"
MAIN_CLASS=kafka.Kafka
BOOTSTRAP=$(printf '127.0.0.1:%s,' "${CLIENT_PORTS[@]}")
BOOTSTRAP=${BOOTSTRAP%,}
VOTERS=""
for ((i = 0; i < KAFKA_BROKERS; i++)); do VOTERS+="$((i + 1))@127.0.0.1:${CONTROLLER_PORTS[i]},"; done
VOTERS=${VOTERS%,}

# Per node N (1..KAFKA_BROKERS): its name (pid file .local/run/NAME.pid, log .local/log/NAME.log),
# state directory, rendered config and ports.
node_name() { if ((KAFKA_BROKERS == 1)); then echo kafka; else echo "kafka-$1"; fi; }
node_dir() { if ((KAFKA_BROKERS == 1)); then echo "$KAFKA_STATE"; else echo "$KAFKA_STATE/node-$1"; fi; }
node_props() { echo "$(node_dir "$1")/server.properties"; }
node_port() { echo "${CLIENT_PORTS[$1 - 1]}"; }
node_controller_port() { echo "${CONTROLLER_PORTS[$1 - 1]}"; }
node_metrics_port() { echo "${METRICS_PORTS[$1 - 1]}"; }
# How a node's pid is recognised: its command line names that node's rendered config, so a pid
# file gone stale (pids wrap quickly in containers) never matches another stack's broker.
marker_of_props() { echo "$MAIN_CLASS $1"; }
node_marker() { marker_of_props "$(node_props "$1")"; }
node_pid() { pid_of "$(node_name "$1")" "$(node_marker "$1")"; }
all_nodes() { seq 1 "$KAFKA_BROKERS"; }

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml"; }
exporter_version() { sed -n 's:.*<jmx.exporter.version>\(.*\)</jmx.exporter.version>.*:\1:p' "$KAFKA_SRC/pom.xml"; }
exporter_jar() { echo "$KAFKA_LIB/jmx_prometheus_javaagent-$(exporter_version).jar"; }

install() {
  local version
  version=$(kafka_version)
  if [[ -f "$KAFKA_LIB/kafka_2.13-$version.jar" && -f "$KAFKA_LIB/kafka-clients-$version.jar" ]]; then
    [[ -f $(exporter_jar) ]] && return 0
    # Only the exporter is new: add it beside the jars a running broker may be using.
  else
    rm -rf "$KAFKA_LIB"
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  logged maven "Kafka $version jars and the JMX exporter into deploy/kafka/lib (Maven)" \
    mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" \
    dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
  [[ -f "$KAFKA_LIB/kafka_2.13-$version.jar" ]] || die "Maven did not produce kafka_2.13-$version.jar"
  [[ -f $(exporter_jar) ]] || die "Maven did not produce $(basename "$(exporter_jar)")"
}

# A short-lived JVM: C1 only and the serial collector start it in about half the time.
storage_tool() { "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$KAFKA_LIB/*" kafka.tools.StorageTool "$@"; }

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

# render_config N
render_config() {
  local n=$1 controller=PLAINTEXT rf=1 min_isr=1 controlled=false
  [[ $KAFKA_SECURITY == sasl ]] && controller=SASL_PLAINTEXT
  ((KAFKA_BROKERS > 1)) && rf=$KAFKA_BROKERS min_isr=2 controlled=true
  mkdir -p "$(node_dir "$n")/data"
  {
    cat "$KAFKA_SRC/server.properties.template"
    if [[ $KAFKA_SECURITY == sasl ]]; then cat "$KAFKA_SRC/server-sasl.properties.template"; fi
    if [[ $(client_protocol) == SASL_SSL ]]; then
      printf '%s\n' "" "# KAFKA_TLS_DIR: TLS on the client listener (PEM files)." \
        ssl.keystore.type=PEM "ssl.keystore.location=$KAFKA_TLS_DIR/broker.pem" \
        ssl.truststore.type=PEM "ssl.truststore.location=$KAFKA_TLS_DIR/ca.pem"
    fi
  } | sed -e "s|@NODE_ID@|$n|g" -e "s|@QUORUM_VOTERS@|$VOTERS|g" \
      -e "s|@KAFKA_PORT@|$(node_port "$n")|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$(node_controller_port "$n")|g" \
      -e "s|@KAFKA_LOG_DIRS@|$(node_dir "$n")/data|g" \
      -e "s|@REPLICATION_FACTOR@|$rf|g" -e "s|@MIN_INSYNC_REPLICAS@|$min_isr|g" \
      -e "s|@CONTROLLED_SHUTDOWN@|$controlled|g" \
      -e "s|@REPLICA_LAG_MAX_MS@|$KAFKA_REPLICA_LAG_MAX_MS|g" \
      -e "s|@CLIENT_PROTOCOL@|$(client_protocol)|g" -e "s|@CONTROLLER_PROTOCOL@|$controller|g" \
      -e "s|@OPERATOR_USER@|$(kafka_user operator)|g" \
      -e "s|@OPERATOR_PASSWORD@|$(kafka_password operator)|g" >"$(node_props "$n")"
  chmod 600 "$(node_props "$n")"
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

# What a node's storage was formatted for: the security mode and a digest of the SCRAM users.
formatted_for() {
  if [[ $KAFKA_SECURITY == sasl ]]; then
    echo "sasl $(scram_args | sha256sum | cut -c1-16)"
  else
    echo plaintext
  fi
}
formatted_for_file() { echo "$(node_dir "$1")/formatted-for"; }
is_formatted() { [[ -f "$(node_dir "$1")/data/meta.properties" ]]; }

# storage_fits N: node N's storage serves this start (plaintext runs on any storage; SASL needs
# the users it was formatted with).
storage_fits() {
  [[ $KAFKA_SECURITY == plaintext ]] && return 0
  [[ $(cat "$(formatted_for_file "$1")" 2>/dev/null) == "$(formatted_for)" ]]
}

# cluster_id: the id the formatted nodes carry (they must all agree), else the one on file, else new.
cluster_id() {
  local n id
  for n in $(all_nodes); do
    if is_formatted "$n"; then
      id=$(sed -n 's/^cluster.id=//p' "$(node_dir "$n")/data/meta.properties")
      [[ -n $id ]] && { echo "$id"; return 0; }
    fi
  done
  if [[ ! -s $CLUSTER_ID_FILE ]]; then
    mkdir -p "$KAFKA_STATE"
    storage_tool random-uuid | tail -n 1 >"$CLUSTER_ID_FILE"
  fi
  cat "$CLUSTER_ID_FILE"
}

# wipe_storage: every node's data goes (they are stopped): formatted for other users.
wipe_storage() {
  local n
  say "storage was formatted without these SCRAM users: formatting it again (its topics are dropped)"
  for n in $(all_nodes); do rm -rf "$(node_dir "$n")/data" "$(formatted_for_file "$n")"; done
  rm -f "$CLUSTER_ID_FILE"
}

# format_storage N: format node N once, with the cluster's id and the SCRAM users.
format_storage() {
  local n=$1 id scram=()
  is_formatted "$n" && return 0
  mkdir -p "$(node_dir "$n")/data"
  id=$(cluster_id)
  say "formatting storage of node $n (cluster id $id, security $KAFKA_SECURITY)"
  mapfile -t scram < <(scram_args)
  # Static quorum (controller.quorum.voters): no --standalone, which 4.x only
  # accepts together with controller.quorum.bootstrap.servers.
  storage_tool format -t "$id" -c "$(node_props "$n")" --ignore-formatted \
    "${scram[@]}" >>"$LOG_DIR/$(node_name "$n").log" 2>&1 \
    || { log_tail "$(node_name "$n")" 20; die "storage format of node $n failed"; }
  formatted_for >"$(formatted_for_file "$n")"
}

# brokers_listed BOOTSTRAP ID...: a real Admin round trip (metadata request) when the venv has
# confluent_kafka: true when the metadata lists every broker ID. Otherwise: each node's listener
# accepts connections and its log has the broker's started line.
brokers_listed() {
  local bootstrap=$1; shift
  if "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
    local sasl=()
    [[ $KAFKA_SECURITY == sasl ]] && sasl=("$(kafka_user operator)" "$(kafka_password operator)")
    "$VENV_PY" - "$bootstrap" "$(client_protocol)" "$KAFKA_TLS_DIR" "$*" "${sasl[@]}" <<'PY'
import sys
from confluent_kafka.admin import AdminClient

bootstrap, protocol, tls_dir, wanted = sys.argv[1:5]
config = {"bootstrap.servers": bootstrap, "log_level": 0, "security.protocol": protocol}
if protocol.startswith("SASL_"):  # as the operator, SCRAM-SHA-512
    config.update({"sasl.mechanism": "SCRAM-SHA-512",
                   "sasl.username": sys.argv[5], "sasl.password": sys.argv[6]})
if protocol == "SASL_SSL":
    config["ssl.ca.location"] = f"{tls_dir}/ca.pem"
admin = AdminClient(config)
md = admin.list_topics(timeout=3)
sys.exit(0 if {int(i) for i in wanted.split()} <= set(md.brokers) else 1)
PY
  else
    local n
    for n in "$@"; do
      port_busy "$(node_port "$n")" \
        && tail -n 200 "$LOG_DIR/$(node_name "$n").log" | grep -q 'Kafka Server started' || return 1
    done
  fi
}

# cluster_ready: every broker is registered and unfenced (asked through any of them).
# node_ready N: node N answers and the metadata lists it.
cluster_ready() { brokers_listed "$BOOTSTRAP" $(all_nodes); }
node_ready() { brokers_listed "127.0.0.1:$(node_port "$1")" "$1"; }

# wait_ready TIMEOUT CHECK NODE...: poll CHECK every 0.5 s; fail early when a NODE's process died.
wait_ready() {
  local timeout=$1 check=$2 n; shift 2
  local deadline=$((SECONDS + timeout))
  until $check >/dev/null 2>&1; do
    for n in "$@"; do
      if ! node_pid "$n" >/dev/null; then
        say "node $n exited during startup"
        log_tail "$(node_name "$n")"
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      say "not ready after ${timeout}s"
      for n in "$@"; do log_tail "$(node_name "$n")" 15; done
      return 1
    fi
    sleep 0.5
  done
}

# running_security N: the security mode running node N was started with.
running_security() {
  if grep -q '^sasl.enabled.mechanisms=' "$(node_props "$1")" 2>/dev/null; then echo sasl; else echo plaintext; fi
}

# ports_free N: node N's ports are free (else another broker, maybe another stack's, has them).
ports_free() {
  local n=$1 port ports=("$(node_port "$1")" "$(node_controller_port "$1")")
  [[ $KAFKA_METRICS == on ]] && ports+=("$(node_metrics_port "$n")")
  for port in "${ports[@]}"; do
    port_busy "$port" && die "port $port (node $n) is already in use by another process"
  done
  return 0
}

# launch N: render node N's config, format its storage if new, start its JVM (no wait).
launch() {
  local n=$1 agent=()
  ports_free "$n"
  if [[ $KAFKA_METRICS == on ]]; then
    # Prometheus metrics of the broker's MBeans (deploy/kafka/jmx-exporter.yaml), loopback only.
    agent=("-javaagent:$(exporter_jar)=127.0.0.1:$(node_metrics_port "$n"):$KAFKA_SRC/jmx-exporter.yaml")
  fi
  render_config "$n"
  format_storage "$n"
  # shellcheck disable=SC2086  # KAFKA_HEAP holds several JVM flags
  start_bg "$(node_name "$n")" "$JAVA" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.yaml" "${agent[@]}" \
    -cp "$KAFKA_LIB/*" "$MAIN_CLASS" "$(node_props "$n")"
  say "node $n started (pid $(<"$RUN_DIR/$(node_name "$n").pid")) on 127.0.0.1:$(node_port "$n")"
}

start() {
  local n pid starting=() running=()
  for n in $(all_nodes); do
    if pid=$(node_pid "$n"); then
      running+=("$n")
      [[ $(running_security "$n") == "$KAFKA_SECURITY" ]] \
        || die "node $n runs with KAFKA_SECURITY=$(running_security "$n"), not $KAFKA_SECURITY: restart it ($0 stop, then start)"
    else
      starting+=("$n")
    fi
  done
  if ((${#starting[@]} == 0)); then
    say "already running on $BOOTSTRAP"
    wait_ready "$KAFKA_START_TIMEOUT" cluster_ready $(all_nodes)
    return 0
  fi
  command -v "$JAVA" >/dev/null || die "java not found (need JDK 17+)"
  for n in "${starting[@]}"; do ports_free "$n"; done
  install
  # Storage formatted for other SCRAM users is formatted again, all nodes at once (only when none
  # runs: a cluster's nodes must carry one cluster id and one set of users).
  for n in $(all_nodes); do
    if is_formatted "$n" && ! storage_fits "$n"; then
      ((${#running[@]} == 0)) || die "node $n's storage was formatted for other SCRAM users: $0 stop, then start"
      wipe_storage
      break
    fi
  done
  # New nodes are formatted side by side (a JVM each: seconds apart on a small machine).
  local formats=() format
  cluster_id >/dev/null
  for n in "${starting[@]}"; do
    render_config "$n"
    format_storage "$n" &
    formats+=($!)
  done
  for format in "${formats[@]}"; do wait "$format" || die "storage format failed"; done
  for n in "${starting[@]}"; do launch "$n"; done
  say "waiting for $KAFKA_BROKERS broker(s) on $BOOTSTRAP"
  local t0=$SECONDS
  wait_ready "$KAFKA_START_TIMEOUT" cluster_ready $(all_nodes) || { stop; die "Kafka did not become ready"; }
  say "ready on $BOOTSTRAP after $((SECONDS - t0))s (log: $LOG_DIR/kafka*.log)"
}

# recorded_nodes: "NAME MARKER" of every Kafka pid file of this state directory, whatever
# KAFKA_BROKERS says (a cluster is stopped by a plain `stop` too, and the other way round).
recorded_nodes() {
  local f name
  for f in "$RUN_DIR"/kafka.pid "$RUN_DIR"/kafka-[0-9]*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    if [[ $name == kafka ]]; then
      echo "$name $(marker_of_props "$KAFKA_STATE/server.properties")"
    else
      echo "$name $(marker_of_props "$KAFKA_STATE/node-${name#kafka-}/server.properties")"
    fi
  done
}

# stop: SIGTERM to every node at once (stopped one by one, the last ones would wait for a quorum
# that is already gone), SIGCONT for paused ones, up to 30 s, then SIGKILL.
stop() {
  local name marker pid pids=() names=() i waited=0
  while read -r name marker; do
    [[ -n $name ]] || continue
    if pid=$(pid_of "$name" "$marker"); then
      say "stopping $name (pid $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      kill -CONT -- "-$pid" 2>/dev/null || true
      pids+=("$pid") names+=("$name")
    fi
  done < <(recorded_nodes)
  if ((${#pids[@]} == 0)); then
    say "kafka not running"
    return 0
  fi
  for i in "${!pids[@]}"; do
    while alive "${pids[i]}" && ((waited < 300)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if alive "${pids[i]}"; then
      say "${names[i]} did not stop within 30s: SIGKILL"
      kill -KILL -- "-${pids[i]}" 2>/dev/null || kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
    kill -KILL -- "-${pids[i]}" 2>/dev/null || true
    rm -f "$RUN_DIR/${names[i]}.pid"
  done
}

node_line() {
  local n=$1 pid state=running address
  address="127.0.0.1:$(node_port "$n") ($KAFKA_SECURITY; controller 127.0.0.1:$(node_controller_port "$n")"
  [[ $KAFKA_METRICS == on ]] && address+="; metrics http://127.0.0.1:$(node_metrics_port "$n")/metrics"
  address+=")"
  if pid=$(node_pid "$n"); then
    [[ $(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1) == T ]] && state=paused
    if [[ $KAFKA_METRICS == on && $state == running ]] \
      && curl -fsS --max-time 2 "http://127.0.0.1:$(node_metrics_port "$n")/metrics" 2>/dev/null \
      | grep -q '^kafka_controller_kafkacontroller_activecontrollercount 1'; then
      address+=" active controller"
    fi
    status_line "$(node_name "$n")" "$state" "$pid" "$address"
  else
    status_line "$(node_name "$n")" stopped "" "$address"
    return 3
  fi
}

status() {
  local n rc=0
  for n in $(all_nodes); do node_line "$n" || rc=3; done
  return "$rc"
}

# ---- one node (N = 1..KAFKA_BROKERS) -----------------------------------------------------------

running_pid() { node_pid "$1" || die "node $1 ($(node_name "$1")) is not running"; }

start_node() {
  local n=$1 pid
  if pid=$(node_pid "$n"); then
    say "node $n already running (pid $pid)"
  else
    install
    is_formatted "$n" && ! storage_fits "$n" \
      && die "node $n's storage was formatted for other SCRAM users: $0 stop, then start"
    launch "$n"
  fi
  local t0=$SECONDS
  wait_ready "$KAFKA_START_TIMEOUT" "node_ready $n" "$n" || die "node $n did not become ready"
  say "node $n ready on 127.0.0.1:$(node_port "$n") after $((SECONDS - t0))s"
}

# stop-node: a controlled shutdown (its leaderships move first, in a cluster).
stop_node() {
  local pid
  pid=$(node_pid "$1") || { say "node $1 not running"; return 0; }
  kill -CONT -- "-$pid" 2>/dev/null || true
  stop_pid "$(node_name "$1")" "$pid" 30
}

kill_node() {
  local pid waited=0
  pid=$(running_pid "$1")
  say "kill -9 node $1 (pid $pid)"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  while alive "$pid" && ((waited < 100)); do sleep 0.05; waited=$((waited + 1)); done
  rm -f "$RUN_DIR/$(node_name "$1").pid"
}

pause_node() {
  local pid
  pid=$(running_pid "$1")
  say "SIGSTOP node $1 (pid $pid)"
  kill -STOP -- "-$pid" 2>/dev/null || kill -STOP "$pid"
}

resume_node() {
  local pid
  pid=$(running_pid "$1")
  say "SIGCONT node $1 (pid $pid)"
  kill -CONT -- "-$pid" 2>/dev/null || kill -CONT "$pid"
}

node_action() {
  local action=$1 n=${2:-}
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= KAFKA_BROKERS)) \
    || die "usage: $0 $action N (N = 1..$KAFKA_BROKERS; KAFKA_BROKERS=$KAFKA_BROKERS)"
  "${action//-/_}" "$n"
}

case "${1:-}" in
  install | start | stop | status) "$1" ;;
  start-node | stop-node | kill-node | pause-node | resume-node) node_action "$1" "${2:-}" ;;
  *)
    echo "usage: $0 {install|start|stop|status|start-node N|stop-node N|kill-node N|pause-node N|resume-node N}" >&2
    exit 2
    ;;
esac
