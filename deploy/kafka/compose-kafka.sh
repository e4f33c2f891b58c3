#!/usr/bin/env bash
# The compose broker (docker-compose.yml, image apache/kafka): the local broker's configuration
# (server.properties.template + server-sasl.properties.template, as deploy/local/kafka.sh
# KAFKA_SECURITY=sasl renders them) with two client listeners, CLIENT for the compose network
# (kafka:9092) and HOST for the host (127.0.0.1:19092), both SASL/SCRAM-SHA-512. The SCRAM users
# are written when the storage is formatted (a fresh container; new passwords: docker compose down).
set -euo pipefail
DEPLOY=/orderstatus/deploy
# shellcheck source=deploy/local/kafka-credentials.sh
source "$DEPLOY/local/kafka-credentials.sh"
PROPS=/tmp/server.properties
DATA=/var/lib/kafka/data

operator=$(kafka_user operator)
password=$(kafka_password operator)
cat "$DEPLOY/kafka/server.properties.template" "$DEPLOY/kafka/server-sasl.properties.template" |
  sed -e "s|@KAFKA_LOG_DIRS@|$DATA|g" -e "s|@OPERATOR_USER@|$operator|g" \
      -e "s|@OPERATOR_PASSWORD@|$password|g" \
      -e "s|^listeners=.*|listeners=CLIENT://:9092,CONTROLLER://:9093,HOST://:19092|" \
      -e "s|^advertised.listeners=.*|advertised.listeners=CLIENT://kafka:9092,HOST://127.0.0.1:19092|" \
      -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT|" \
      -e "s|^controller.quorum.voters=.*|controller.quorum.voters=1@localhost:9093|" >"$PROPS"
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
