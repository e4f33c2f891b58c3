#!/usr/bin/env bash
# Tools `make bench` drives besides Python: wrk (closed-loop HTTP load, Debian package).
# py-spy (the profiler) is a pinned dev dependency in pyproject.toml, installed with the venv.
#   deploy/local/bench-tools.sh install   apt-get install wrk when it is missing
#   deploy/local/bench-tools.sh status
COMPONENT=bench-tools
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install() {
  command -v wrk >/dev/null && return 0
  apt_install wrk
  command -v wrk >/dev/null || die "wrk is not installed"
}

status() {
  if command -v wrk >/dev/null; then
    status_line wrk installed "" "$(command -v wrk)"
  else
    status_line wrk missing "" "(deploy/local/bench-tools.sh install)"
    return 3
  fi
}

case "${1:-}" in
  install | status) "$1" ;;
  *) echo "usage: $0 {install|status}" >&2; exit 2 ;;
esac
