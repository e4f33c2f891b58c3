# Order Status: local stack (Kafka, PostgreSQL, Prometheus without Docker) and checks.
# `make help` lists the targets. State lives in .local/ (make clean removes it).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
LOCAL := deploy/local
PYTEST_ARGS ?=
comma := ,
CHAOS_ARGS ?=
BENCH_ARGS ?=

# Defaults for the Python processes; the environment wins over each of them.
KAFKA_PORT ?= 19092
PGPORT_LOCAL ?= 55432
PROMETHEUS_PORT ?= 19090
# KAFKA_BROKERS=3 (make up/infra/test/status/down KAFKA_BROKERS=3): a three-broker KRaft cluster on
# KAFKA_PORT, +2, +4 (or KAFKA_PORTS="p1,p2,p3"), every project topic with replication factor 3 and
# min.insync.replicas 2 (docs/kafka-cluster.md). One broker is the default.
KAFKA_BROKERS ?= 1
ifeq ($(KAFKA_BROKERS),1)
KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(KAFKA_PORT)
KAFKA_REPLICATION_FACTOR ?= 1
KAFKA_MIN_INSYNC_REPLICAS ?= 1
else
KAFKA_PORTS ?= $(KAFKA_PORT),$(shell echo $$(($(KAFKA_PORT) + 2))),$(shell echo $$(($(KAFKA_PORT) + 4)))
KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(subst $(comma),$(comma)127.0.0.1:,$(KAFKA_PORTS))
KAFKA_REPLICATION_FACTOR ?= 3
KAFKA_MIN_INSYNC_REPLICAS ?= 2
export KAFKA_PORTS
endif
export KAFKA_BROKERS KAFKA_REPLICATION_FACTOR KAFKA_MIN_INSYNC_REPLICAS
# The services log in as orderstatus_app (row-level security applies); migrations and
# `orderstatus grant` use the owner, orderstatus (docs/security.md).
DATABASE_URL ?= postgresql://orderstatus_app:orderstatus_app@127.0.0.1:$(PGPORT_LOCAL)/orderstatus
DATABASE_ADMIN_URL ?= postgresql://orderstatus:orderstatus@127.0.0.1:$(PGPORT_LOCAL)/orderstatus
PROMETHEUS_URL ?= http://127.0.0.1:$(PROMETHEUS_PORT)
# The local stack is a local environment: the dev JWT secret and `orderstatus token` work only in
# dev/test/local (an unset ENVIRONMENT refuses them; docs/security.md).
ENVIRONMENT ?= dev
# How many of each `make up` runs (docs/instances.md): WORKERS workers (worker-1..N, each its own
# WORKER_ID, metrics port, pid file and log) and one API of API_PROCESSES processes on one port.
WORKERS ?= 1
API_PROCESSES ?= 1
export WORKERS API_PROCESSES
export KAFKA_PORT PGPORT_LOCAL PROMETHEUS_PORT KAFKA_BOOTSTRAP_SERVERS DATABASE_URL DATABASE_ADMIN_URL PROMETHEUS_URL ENVIRONMENT
# Kafka as a security boundary (issue 11, docs/security.md): with KAFKA_SECURITY=sasl the broker
# authenticates every client (SASL/SCRAM-SHA-512) and authorizes it by ACLs. The CLI and the tests
# log in as the operator; deploy/local/services.sh and the test stack start each service as its own
# principal. Passwords: KAFKA_PASSWORD_<ROLE>, else the public dev ones (deploy/local/kafka-credentials.sh).
KAFKA_SECURITY ?= sasl
export KAFKA_SECURITY
ifeq ($(KAFKA_SECURITY),sasl)
KAFKA_SECURITY_PROTOCOL ?= SASL_PLAINTEXT
KAFKA_SASL_MECHANISM ?= SCRAM-SHA-512
KAFKA_SASL_USERNAME ?= orderstatus-operator
KAFKA_SASL_PASSWORD ?= $(or $(KAFKA_PASSWORD_OPERATOR),orderstatus-operator-dev-password)
export KAFKA_SECURITY_PROTOCOL KAFKA_SASL_MECHANISM KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD
endif

.PHONY: help install infra migrate up down status test lint chaos chaos-cluster bench logs clean dashboards doctor kafka-env

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# Install steps print one line each (what, how long, where the log is); the whole output of pip,
# Maven and apt-get goes to $(LOG)/.
LOG := $${ORDERSTATUS_LOCAL_DIR:-.local}/log

$(BIN)/python:
	@mkdir -p $(LOG); echo "[install] Python venv in $(VENV)"
	@$(PYTHON) -m venv $(VENV)

# Reinstall the project only when pyproject.toml changed since the last install.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@mkdir -p $(LOG); t0=$$SECONDS; \
	$(BIN)/pip install -q -e '.[dev]' >>$(LOG)/pip.log 2>&1 \
	  || { echo "[install] Python packages: FAILED (log: $(LOG)/pip.log)"; tail -n 30 $(LOG)/pip.log; exit 1; }; \
	echo "[install] Python packages: done in $$((SECONDS - t0))s (log: $(LOG)/pip.log)"
	@touch $@

install: $(VENV)/.installed ## Python venv + project, Kafka jars, PostgreSQL and Prometheus packages
	@$(LOCAL)/kafka.sh install
	@$(LOCAL)/postgres.sh install
	@$(LOCAL)/prometheus.sh install

infra: install ## Start PostgreSQL, Kafka and Prometheus (each waits until ready)
	@$(LOCAL)/postgres.sh start
	@$(LOCAL)/kafka.sh start
	@$(LOCAL)/prometheus.sh start

migrate: infra ## Apply the database migrations
	@$(BIN)/orderstatus migrate

up: migrate ## infra + migrations + topics + ACLs + API, workers, figures app, notifier + demo (WORKERS=N API_PROCESSES=M)
	@$(BIN)/orderstatus topics
	@$(BIN)/orderstatus kafka-acls apply
	@$(LOCAL)/services.sh start all
	@$(BIN)/orderstatus demo
	@echo
	@echo "Order Status is up:"
	@echo "  API          http://127.0.0.1:$${API_PORT:-8000}   ($(API_PROCESSES) process(es) on the one port; /readyz, /metrics)"
	@{ $(LOCAL)/services.sh status worker || true; } | awk '{printf "  %-12s %s\n", $$1, $$NF}'
	@echo "  figures      http://127.0.0.1:$${FIGURES_PORT:-6066}/   (live page; JSON: /restaurants/<id>/figures, /metrics)"
	@echo "  notifier     http://127.0.0.1:$${NOTIFIER_METRICS_PORT:-9102}/metrics   (webhooks)"
	@echo "  Kafka        $(KAFKA_BOOTSTRAP_SERVERS)   ($(KAFKA_BROKERS) broker(s), $(KAFKA_SECURITY); ACLs: orderstatus kafka-acls show)"
	@echo "  brokers      $(LOCAL)/kafka.sh status   (each node, its metrics port and the active controller)"
	@echo "  PostgreSQL   $(DATABASE_URL)"
	@echo "  Prometheus   $(PROMETHEUS_URL)   (rules: deploy/prometheus/rules)"
	@echo "  health       make doctor   (or: .venv/bin/orderstatus watch)"
	@echo "  logs         .local/log/*.log   (make logs)"
	@echo "  status       make status;  stop everything: make down"

down: ## Stop the services, Prometheus, Kafka and PostgreSQL; check nothing is left
	-$(LOCAL)/services.sh stop all
	-$(LOCAL)/prometheus.sh stop
	-$(LOCAL)/kafka.sh stop
	-$(LOCAL)/postgres.sh stop
	$(LOCAL)/leftovers.sh

status: ## One line per component
	@$(LOCAL)/postgres.sh status || true
	@$(LOCAL)/kafka.sh status || true
	@$(LOCAL)/prometheus.sh status || true
	@$(LOCAL)/services.sh status all || true

test: migrate ## infra + migrations + Chromium (browser test), then pytest (PYTEST_ARGS=...)
	@$(LOCAL)/chromium.sh install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check services tests bench
	$(BIN)/ruff check services tests bench
	$(BIN)/mypy

chaos: install ## Fault-injection run on its own Kafka + PostgreSQL (CHAOS_ARGS="--rounds 12 ...")
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

# `make chaos --cluster` cannot be spelled so (make reads --cluster as its own option):
# spell it `make chaos-cluster` or `make chaos CHAOS_ARGS=--cluster`.
chaos-cluster: install ## The same on its own 3-broker KRaft cluster, with leader/controller/follower kills and ISR drops (= make chaos CHAOS_ARGS=--cluster)
	$(BIN)/python -m tests.chaos.run --cluster $(CHAOS_ARGS)

bench: migrate ## Project vs direct-PostgreSQL baseline, <= 15 min; writes docs/performance.md (BENCH_ARGS=--quick)
	$(LOCAL)/bench-tools.sh install
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.signing
	$(BIN)/python -m bench.notifier --events 10000 --rate 500 --seconds 20

dashboards: $(VENV)/.installed ## Regenerate deploy/grafana/dashboards from services/observability/dashboard.py
	$(BIN)/python -m services.observability.dashboard

kafka-env: ## The operator's Kafka settings as exports, for tools run by hand: eval "$(make -s kafka-env)"
	@echo "export KAFKA_SECURITY=$(KAFKA_SECURITY)"
	@if [[ $(KAFKA_SECURITY) == sasl ]]; then \
	  echo "export KAFKA_SECURITY_PROTOCOL=$(KAFKA_SECURITY_PROTOCOL) KAFKA_SASL_MECHANISM=$(KAFKA_SASL_MECHANISM)"; \
	  echo "export KAFKA_SASL_USERNAME=$(KAFKA_SASL_USERNAME) KAFKA_SASL_PASSWORD=$(KAFKA_SASL_PASSWORD)"; \
	fi

doctor: ## orderstatus doctor against the running local stack (exit 1 when red)
	$(BIN)/orderstatus doctor

logs: ## Follow the logs in .local/log
	@ls .local/log/*.log >/dev/null 2>&1 || { echo "no logs yet (.local/log)"; exit 0; }; \
	tail -n 40 -F .local/log/*.log

clean: down ## make down, then remove .local (all local data)
	@if [[ -s .local/pg/datadir ]]; then \
	  d=$$(dirname "$$(cat .local/pg/datadir)"); \
	  case $$d in "$(CURDIR)"/*) ;; /var/tmp/orderstatus-pg-*) rm -rf "$$d" ;; esac; \
	fi
	rm -rf .local
