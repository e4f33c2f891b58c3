#!/usr/bin/env bash
# PostgreSQL cluster owned by this checkout (Debian's binaries, not its service).
#   deploy/local/postgres.sh install   apt-get install postgresql when initdb is missing
#   deploy/local/postgres.sh start     initdb once, configure, start, create role/db/extension
#   deploy/local/postgres.sh stop      pg_ctl stop -m fast
#   deploy/local/postgres.sh status
# Env: PGPORT_LOCAL (55432); ORDERSTATUS_EXTERNAL_POSTGRES=1 makes every command a no-op;
#      ORDERSTATUS_LOCAL_DIR (.local; see lib.sh).
#
# initdb and postgres refuse to run as root: as root they run as the `postgres`
# OS user (created by the Debian package), which owns the data directory. The
# data directory is .local/pg/data when that user can reach it, otherwise
# /var/tmp/orderstatus-pg-<hash of the repo path>; .local/pg/datadir records it.
COMPONENT=postgres
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGPORT_LOCAL="${PGPORT_LOCAL:-55432}"
PG_STATE="$LOCAL_DIR/pg"
PG_LOG="$LOG_DIR/postgres.log"
# Created by deploy/postgres/init/01-orderstatus.sql:
DB_NAME=orderstatus
DB_USER=orderstatus
DB_PASSWORD=orderstatus

if [[ ${ORDERSTATUS_EXTERNAL_POSTGRES:-0} == 1 ]]; then
  say "ORDERSTATUS_EXTERNAL_POSTGRES=1: using an external PostgreSQL, nothing to do"
  [[ ${1:-} == status ]] && status_line postgres external "" "${DATABASE_URL:-}"
  exit 0
fi

pg_bindir() {
  local initdb
  initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
  [[ -x $initdb ]] && dirname "$initdb"
}

install() {
  pg_bindir >/dev/null && return 0
  apt_install postgresql postgresql-contrib
  pg_bindir >/dev/null || die "no /usr/lib/postgresql/*/bin/initdb after installing postgresql"
}

# Run a command as the cluster owner: `postgres` when we are root, else ourselves.
# From / : the owner may not be allowed into the current directory.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Choose (once) and print the data directory.
data_dir() {
  if [[ -s "$PG_STATE/datadir" ]]; then
    cat "$PG_STATE/datadir"
    return
  fi
  local dir="$PG_STATE/data"
  mkdir -p "$PG_STATE"
  if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is the postgresql package installed?)"
    # .local/pg belongs to postgres; .local must at least be traversable.
    chown postgres:postgres "$PG_STATE"
    chmod 700 "$PG_STATE"
    chmod o+x "$LOCAL_DIR"
    if ! runuser -u postgres -- test -w "$PG_STATE"; then
      # A parent of the repo is closed to other users: keep the cluster outside.
      # (Keyed by the state directory too when ORDERSTATUS_LOCAL_DIR moved it.)
      dir="/var/tmp/orderstatus-pg-$(printf '%s' "$REPO_ROOT${ORDERSTATUS_LOCAL_DIR:+:$LOCAL_DIR}" | sha1sum | cut -c1-12)/data"
      say "postgres cannot reach $PG_STATE: data directory is $dir"
      mkdir -p "$(dirname "$dir")"
      chown postgres:postgres "$(dirname "$dir")"
      chmod 700 "$(dirname "$dir")"
    fi
  fi
  echo "$dir" >"$PG_STATE/datadir"
  echo "$dir"
}

# Where the server log goes: .local/log/postgres.log when the owner can write
# there, else next to the data directory (with a symlink in .local/log).
server_log() {
  local datadir=$1 target=$PG_LOG
  if [[ $(id -u) == 0 ]]; then
    if [[ ! -L $PG_LOG ]]; then
      touch "$PG_LOG"
      chown postgres "$PG_LOG"
    fi
    if [[ -L $PG_LOG ]] || ! runuser -u postgres -- test -w "$PG_LOG"; then
      target="$(dirname "$datadir")/postgres.log"
      touch "$target"
      chown postgres "$target"
      ln -sfn "$target" "$PG_LOG"
    fi
  fi
  echo "$target"
}

write_config() {
  local datadir=$1
  as_owner tee "$datadir/orderstatus.conf" >/dev/null <<CONF
# Written by deploy/local/postgres.sh on every start; included from postgresql.conf.
listen_addresses = '127.0.0.1'
port = $PGPORT_LOCAL
unix_socket_directories = '/tmp'
max_connections = 200
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
CONF
  if ! grep -q "^include_if_exists = 'orderstatus.conf'" "$datadir/postgresql.conf"; then
    echo "include_if_exists = 'orderstatus.conf'" | as_owner tee -a "$datadir/postgresql.conf" >/dev/null
  fi
}

# psql as the superuser over TCP (initdb --auth=trust allows it from 127.0.0.1).
psql_admin() {
  "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT_LOCAL" -U postgres "$@"
}

ensure_database() {
  psql_admin -d postgres -f "$REPO_ROOT/deploy/postgres/init/01-orderstatus.sql"
}

running_pid() {
  local datadir bindir
  bindir=$(pg_bindir) || return 1
  datadir=$(data_dir)
  [[ -f "$datadir/postmaster.pid" ]] || return 1
  as_owner "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1 || return 1
  head -n 1 "$datadir/postmaster.pid"
}

start() {
  install
  local bindir datadir log pid
  bindir=$(pg_bindir)
  datadir=$(data_dir)
  if pid=$(running_pid); then
    say "already running (pid $pid) on 127.0.0.1:$PGPORT_LOCAL"
    echo "$pid" >"$RUN_DIR/postgres.pid"
  else
    log=$(server_log "$datadir")
    if [[ ! -f "$datadir/PG_VERSION" ]]; then
      say "initdb $datadir ($("$bindir/postgres" --version))"
      mkdir -p "$datadir"
      [[ $(id -u) == 0 ]] && chown postgres:postgres "$datadir"
      chmod 700 "$datadir"
      as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 >>"$log" 2>&1 || { log_tail postgres 30; die "initdb failed"; }
    elif [[ $(<"$datadir/PG_VERSION") != "$(basename "$(dirname "$bindir")")" ]]; then
      die "$datadir is a PostgreSQL $(<"$datadir/PG_VERSION") cluster but the binaries are $bindir; remove it (make clean)"
    fi
    port_busy "$PGPORT_LOCAL" && die "port $PGPORT_LOCAL is already in use by another process"
    write_config "$datadir"
    say "starting on 127.0.0.1:$PGPORT_LOCAL (log: $log)"
    as_owner "$bindir/pg_ctl" -D "$datadir" -l "$log" -w -t 60 start >/dev/null \
      || { log_tail postgres 30; die "pg_ctl start failed"; }
    head -n 1 "$datadir/postmaster.pid" >"$RUN_DIR/postgres.pid"
  fi
  wait_until 60 postgres "$bindir/pg_isready" -q -h 127.0.0.1 -p "$PGPORT_LOCAL"
  ensure_database
  say "ready: postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PGPORT_LOCAL/$DB_NAME (data: $datadir)"
}

stop() {
  local pid
  if pid=$(running_pid); then
    say "stopping (pid $pid)"
    as_owner "$(pg_bindir)/pg_ctl" -D "$(data_dir)" -m fast -w -t 60 stop >/dev/null
  else
    say "not running"
  fi
  rm -f "$RUN_DIR/postgres.pid"
}

status() {
  local pid
  if pid=$(running_pid); then
    status_line postgres running "$pid" "127.0.0.1:$PGPORT_LOCAL db=$DB_NAME"
  else
    status_line postgres stopped "" "127.0.0.1:$PGPORT_LOCAL"
    return 3
  fi
}

dispatch "$@"
