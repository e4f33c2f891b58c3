#!/usr/bin/env bash
# Headless Chromium for the browser test of the live figures page (tests/e2e/test_figures_page.py).
#   deploy/local/chromium.sh install   apt-get install chromium when it is missing
#   deploy/local/chromium.sh status
# Only the tests use it; nothing runs in the background. Env: CHROMIUM_BIN (chromium on PATH).
COMPONENT=chromium
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

chromium_bin() {
  if [[ -n ${CHROMIUM_BIN:-} ]]; then
    [[ -x $CHROMIUM_BIN ]] && echo "$CHROMIUM_BIN"
  else
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
  fi
}

case ${1:-} in
  install)
    chromium_bin >/dev/null && exit 0
    apt_install chromium || say "WARNING: apt-get install chromium failed; the browser test will skip"
    ;;
  status)
    if bin=$(chromium_bin); then status_line chromium installed "" "$bin"; else status_line chromium missing; exit 3; fi
    ;;
  *) echo "usage: $0 {install|status}" >&2; exit 2 ;;
esac
