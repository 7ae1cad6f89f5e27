# Helpers shared by the suites (sourced by bench/run.sh). Each start_* registers
# its own teardown with `defer`; run.sh's `undo` runs them after every suite.

# bgrun CMD...: log CMD and start it in the background; BG_PID is its own pid
# (the binary's, not a subshell's: a simple command backgrounded in place).
bgrun() { printf '%s &\n' "$*" >>"$RAW/commands.txt"; "$@" & BG_PID=$!; }

# start_cluster DIR N BASE_PORT [server flags...]: N ramster-servers on loopback.
start_cluster() {
  local dir="$1"
  defer "'$CLUSTER' stop '$dir' --kill"
  run "$CLUSTER" start "$@" ${SERVER_EXTRA_FLAGS:-}
}

# peers_of BASE N -> 127.0.0.1:BASE,...
peers_of() {
  local base="$1" n="$2" i out=""
  for i in $(seq 0 $((n - 1))); do out="$out${out:+,}127.0.0.1:$((base + i))"; done
  echo "$out"
}

# start_shim NAME PEERS REPLICAS: a ramster-shim serving NBD on $WORK/NAME.sock,
# stats in $WORK/NAME.stats.json. Sets SHIM_PID.
start_shim() {
  local name="$1" peers="$2" replicas="$3"
  rm -f "$WORK/$name.sock" "$WORK/$name.stats.json" "$WORK/$name.local.swap"
  bgrun "$SHIM" --size=1G --peers="$peers" --replicas="$replicas" --local-swap="$WORK/$name.local.swap" \
    --nbd-unix="$WORK/$name.sock" --stats-file="$WORK/$name.stats.json" --memory-budget=512M \
    --client-id="bench-$name" ${SHIM_EXTRA_FLAGS:-} 2>"$WORK/$name.log"
  SHIM_PID=$BG_PID
  defer "kill -TERM $SHIM_PID; sleep 0.3; kill -KILL $SHIM_PID; wait $SHIM_PID"
  local i
  for i in $(seq 200); do grep -q "ready" "$WORK/$name.log" && return 0; kill -0 $SHIM_PID 2>/dev/null || break; sleep 0.05; done
  echo "shim $name did not start: $(tail -3 "$WORK/$name.log")" >&2
  return 1
}

# start_nbdkit NAME [PLUGIN ARGS...]: nbdkit on $WORK/NAME.sock, serving
# `memory 1G` unless told another plugin. Sets NBDKIT_PID.
start_nbdkit() {
  local name="$1"
  shift
  [ $# -gt 0 ] || set -- memory 1G
  rm -f "$WORK/$name.sock"
  bgrun nbdkit --foreground --exit-with-parent -U "$WORK/$name.sock" "$@" 2>"$WORK/$name.log"
  NBDKIT_PID=$BG_PID
  defer "kill -TERM $NBDKIT_PID; wait $NBDKIT_PID"
  local i
  for i in $(seq 100); do [ -S "$WORK/$name.sock" ] && return 0; sleep 0.05; done
  echo "nbdkit did not start: $(cat "$WORK/$name.log")" >&2
  return 1
}

# pin_pids CPULIST PID...: every thread of each PID may run only on CPULIST;
# unpin_pids PID...: on the CPUs the bench itself may use, again.
pin_pids() {
  local cpus="$1" p
  shift
  for p in "$@"; do run taskset -a -p -c "$cpus" "$p" >/dev/null; done
}
unpin_pids() { pin_pids "$(taskset -c -p $$ | sed 's/.*: //')" "$@"; }

rss_of() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Bytes of the process's RSS that it gave back lazily (MADV_FREE): the kernel
# takes them whenever it wants memory, and they count in RSS until it does.
lazyfree_of() { awk '/^LazyFree:/ {v = $2 * 1024} END {print v + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# cpu_ticks_of PID...: the CPU time (user + system, in clock ticks) the
# processes have used; one that is gone counts 0.
cpu_ticks_of() {
  local p total=0 t
  for p in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# wait_quiet LIMIT PID...: waits until the processes together used at most
# 3% of a CPU over one second, or LIMIT seconds have passed; prints the
# whole seconds waited, or "timeout". What one measured run leaves them to
# do in the background (a shim flushing its write-behind area, the servers
# recompressing the pages it stored) then ends before the next run starts,
# instead of running beside it and slowing whatever that run measures.
wait_quiet() {
  local limit=$1 waited=0 before after
  shift
  local hz quiet
  hz=$(getconf CLK_TCK)
  quiet=$(( (hz * 3 + 99) / 100 ))
  before=$(cpu_ticks_of "$@")
  while [ $waited -lt "$limit" ]; do
    sleep 1
    waited=$((waited + 1))
    after=$(cpu_ticks_of "$@")
    if [ $((after - before)) -le $quiet ]; then echo $((waited - 1)); return 0; fi
    before=$after
  done
  echo timeout
}
