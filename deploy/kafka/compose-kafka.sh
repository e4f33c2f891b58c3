#!/usr/bin/env bash
# A compose broker (docker-compose.yml, image apache/kafka): the local broker's configuration
# (server.properties.template + server-sasl.properties.template, as deploy/local/kafka.sh
# KAFKA_SECURITY=sasl renders them) with two client listeners, CLIENT for the compose network
# (kafka:9092, or kafka-N:9092 in the cluster profile) and HOST for the host (127.0.0.1:19092, or
# the node's own host port), both SASL/SCRAM-SHA-512. The SCRAM users are written when the storage
# is formatted (a fresh container; new passwords: docker compose down).
# Env (the cluster profile's nodes set them; the defaults are the single broker): NODE_ID (1),
# NODE_HOST (kafka), HOST_PORT (19092), KAFKA_BROKERS (1), QUORUM_VOTERS (1@localhost:9093),
# KAFKA_REPLICA_LAG_MAX_MS (30000), CLUSTER_ID.
set -euo pipefail
DEPLOY=/orderstatus/deploy
# shellcheck source=deploy/local/kafka-credentials.sh
source "$DEPLOY/local/kafka-credentials.sh"
PROPS=/tmp/server.properties
DATA=/var/lib/kafka/data

NODE_ID=${NODE_ID:-1}
NODE_HOST=${NODE_HOST:-kafka}
HOST_PORT=${HOST_PORT:-19092}
KAFKA_BROKERS=${KAFKA_BROKERS:-1}
QUORUM_VOTERS=${QUORUM_VOTERS:-1@localhost:9093}
# As deploy/local/kafka.sh: RF 1 and no controlled shutdown on one node; RF 3, min ISR 2 and
# controlled shutdown on the cluster (the template's comments say why).
rf=1 min_isr=1 controlled=false
((KAFKA_BROKERS > 1)) && rf=$KAFKA_BROKERS min_isr=2 controlled=true

operator=$(kafka_user operator)
password=$(kafka_password operator)
cat "$DEPLOY/kafka/server.properties.template" "$DEPLOY/kafka/server-sasl.properties.template" |
  sed -e "s|@KAFKA_LOG_DIRS@|$DATA|g" -e "s|@OPERATOR_USER@|$operator|g" \
      -e "s|@OPERATOR_PASSWORD@|$password|g" -e "s|@NODE_ID@|$NODE_ID|g" \
      -e "s|@QUORUM_VOTERS@|$QUORUM_VOTERS|g" -e "s|@REPLICATION_FACTOR@|$rf|g" \
      -e "s|@MIN_INSYNC_REPLICAS@|$min_isr|g" -e "s|@CONTROLLED_SHUTDOWN@|$controlled|g" \
      -e "s|@REPLICA_LAG_MAX_MS@|${KAFKA_REPLICA_LAG_MAX_MS:-30000}|g" \
      -e "s|^listeners=.*|listeners=CLIENT://:9092,CONTROLLER://:9093,HOST://:$HOST_PORT|" \
      -e "s|^advertised.listeners=.*|advertised.listeners=CLIENT://$NODE_HOST:9092,HOST://127.0.0.1:$HOST_PORT|" \
      -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT|" >"$PROPS"
# The HOST listener checks SCRAM as CLIENT does.
sed -n 's|^listener.name.client.scram|listener.name.host.scram|p' "$PROPS" >>"$PROPS"

# For the healthcheck and `docker compose exec kafka ...`: the operator's client settings.
cat >/tmp/operator.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$operator" password="$password";
PROPERTIES

scram=()
for role in "${KAFKA_ROLES[@]}"; do
  scram+=(--add-scram "SCRAM-SHA-512=[name=$(kafka_user "$role"),password=$(kafka_password "$role")]")
done
/opt/kafka/bin/kafka-storage.sh format -t "${CLUSTER_ID:?}" -c "$PROPS" --ignore-formatted "${scram[@]}"
exec /opt/kafka/bin/kafka-server-start.sh "$PROPS"
