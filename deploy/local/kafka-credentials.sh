# Kafka principals of the local stack and their passwords (SASL/SCRAM-SHA-512, issue 11).
# Source it; do not run it. Same rule as services/adapters/kafka_principals.py: the principal of role
# R is orderstatus-R; its password is $KAFKA_PASSWORD_<R> (upper case), else the public dev
# password "orderstatus-R-dev-password", fit only for a local stack (like the dev JWT secret).
# shellcheck shell=bash

KAFKA_ROLES=(operator api worker notifier figures)

kafka_user() { echo "orderstatus-$1"; }

kafka_password() {
  local var="KAFKA_PASSWORD_${1^^}"
  echo "${!var:-orderstatus-$1-dev-password}"
}

# kafka_client_env ROLE: the settings a process of ROLE connects with (export them in a subshell).
kafka_client_env() {
  export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-512
  KAFKA_SASL_USERNAME=$(kafka_user "$1")
  KAFKA_SASL_PASSWORD=$(kafka_password "$1")
  export KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD
}
