#!/usr/bin/env bash
# After `make down`: list processes that still belong to this checkout: a live
# pid in .local/run/*.pid (each Kafka node of a KAFKA_BROKERS=3 cluster has its own,
# kafka-N.pid, and `kafka.sh stop` stops them all whatever KAFKA_BROKERS says), or a
# command line naming a path in the repo (a broker started from deploy/kafka/lib by a
# test or chaos run elsewhere, or in the PostgreSQL data directory's parent). Exit 1
# when a managed process (pid file) is still alive; other matches are only reported.
COMPONENT=down
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Our own ancestry (make, the shell running this) matches too: skip it.
skip=" $$ "
p=$$
while [[ $p -gt 1 ]]; do
  p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 1)
  skip+="$p "
done

patterns=("$REPO_ROOT")
[[ -s "$LOCAL_DIR/pg/datadir" ]] && patterns+=("$(dirname "$(<"$LOCAL_DIR/pg/datadir")")")

managed=0 found=0
for f in "$RUN_DIR"/*.pid; do
  [[ -e $f ]] || continue
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
    name=$(basename "$f" .pid)
    [[ $name == kafka-[0-9]* ]] && name="$name (Kafka node ${name#kafka-}: deploy/local/kafka.sh stop)"
    say "still running: $name pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-160)"
    managed=1
    skip+="$pid "
  fi
done

for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [[ $skip == *" $pid "* ]] && continue
  alive "$pid" || continue
  cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
  [[ -n $cmd ]] || continue
  for pat in "${patterns[@]}"; do
    if [[ $cmd == *"$pat"* ]]; then
      say "process from this checkout: pid $pid: ${cmd:0:160}"
      found=1
      break
    fi
  done
done

if ((managed == 0 && found == 0)); then
  say "no process from $REPO_ROOT is left running"
fi
exit $managed
