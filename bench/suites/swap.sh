# Suite 4 (and the data of suite 5): kernel swap end to end. swap_workload in
# a cgroup v1 memory cgroup limited to half its working set, one swap backend
# at a time, at the highest swap priority (32767):
#   ram         no cgroup limit (nothing swaps)
#   loop-file   loop device (direct I/O) over a file on the local disk
#   zram-lz4    a zram device, comp_algorithm lz4
#   nbdkit      `nbdkit memory` through nbdfuse (one NBD connection) -> loop
#               (deploy/local/swap.sh)
#   nbdkit-relay  the same chain, but the pages one TCP round trip away over
#               loopback: nbdkit's nbd plugin on the unix socket, relaying to
#               `nbdkit memory` on 127.0.0.1. No ramster code in it: what
#               stock parts pay for the hop that ramster-r1 has too (a
#               reference, not a tight floor: the plugin does its own work
#               per request, as the shim and server do theirs)
#   ramster-local  ramster-shim with no peers (its local swap file only),
#               same chain: the shim's own path, without a server round trip
#   ramster-r1  ramster-shim, 3 local servers, replicas 1, same chain
#   ramster-r2  the same with replicas 2
# Backends run round-robin within each run. While the workload runs, a
# sampler records zram's mm_stat, or `ramsterctl status --json`, the servers'
# RSS and the shim's stats file, every 0.5-1 s (raw/swap-*-samples.jsonl).
# Around each workload run, bench/thread_cpu.py records the machine's CPU
# time and that of every thread of the shim, the servers, nbdkit and nbdfuse
# (raw/swap-*.cpu-{before,after}.json): where the CPU went, by thread name.
SWAP_BACKENDS=${SWAP_BACKENDS:-"ram loop-file zram-lz4 nbdkit nbdkit-relay ramster-local ramster-r1 ramster-r2"}

swap_setup() {  # backend run -> sets SW_DEV; registers teardown (not in a subshell)
  local b="$1" r="$2" dev state="$WORK/swapstate-$1-$2"
  case "$b" in
    loop-file)
      run fallocate -l 1G "$WORK/swapfile" || return 1
      defer "rm -f '$WORK/swapfile'"
      dev=$(losetup --find --show --direct-io=on "$WORK/swapfile") || return 1
      defer "losetup -d $dev"
      mkswap -q "$dev" >/dev/null || return 1
      OUR_SWAPS+=("$dev")
      swapon -p 32767 "$dev" || return 1
      defer "swapoff $dev"
      SW_DEV="$dev" ;;
    zram-lz4)
      [ -e /sys/class/zram-control ] || modprobe zram num_devices=1 2>/dev/null
      local id
      if [ -e /sys/class/zram-control/hot_add ]; then
        id=$(cat /sys/class/zram-control/hot_add) || return 1
        defer "echo $id >/sys/class/zram-control/hot_remove"
      else
        [ -e /sys/block/zram0 ] || { echo "no zram module" >&2; return 1; }
        id=0
      fi
      dev=/dev/zram$id
      defer "echo 1 >/sys/block/zram$id/reset"
      grep -qw lz4 /sys/block/zram$id/comp_algorithm || { echo "zram has no lz4" >&2; return 1; }
      echo lz4 >/sys/block/zram$id/comp_algorithm || return 1
      echo 1G >/sys/block/zram$id/disksize || return 1
      printf 'echo lz4 >/sys/block/zram%s/comp_algorithm; echo 1G >/sys/block/zram%s/disksize\n' "$id" "$id" >>"$RAW/commands.txt"
      mkswap -q "$dev" >/dev/null || return 1
      OUR_SWAPS+=("$dev")
      swapon -p 32767 "$dev" || return 1
      defer "swapoff $dev"
      ZRAM_ID=$id
      SW_DEV="$dev" ;;
    nbdkit)
      start_nbdkit sw-nbdkit >&2 || return 1
      defer "'$SWAPSH' down --state='$state'"
      dev=$(run "$SWAPSH" up --socket="$WORK/sw-nbdkit.sock" --state="$state" --priority=32767) || return 1
      OUR_SWAPS+=("$dev")
      SW_DEV="$dev" ;;
    nbdkit-relay)
      local port=$((PORT_BASE + 9)) i
      bgrun nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" memory 1G \
        2>"$WORK/sw-relay-memory.log"
      defer "kill -TERM $BG_PID; wait $BG_PID"
      for i in $(seq 100); do nbdinfo --size "nbd://127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.05; done
      nbdinfo --size "nbd://127.0.0.1:$port" >/dev/null 2>&1 ||
        { echo "nbdkit memory on port $port did not start: $(cat "$WORK/sw-relay-memory.log")" >&2; return 1; }
      start_nbdkit sw-nbdkit-relay nbd hostname=127.0.0.1 port="$port" >&2 || return 1
      defer "'$SWAPSH' down --state='$state'"
      dev=$(run "$SWAPSH" up --socket="$WORK/sw-nbdkit-relay.sock" --state="$state" --priority=32767) || return 1
      OUR_SWAPS+=("$dev")
      SW_DEV="$dev" ;;
    ramster-local)
      SW_PEERS=""
      start_shim "sw-$b" "" 1 >&2 || return 1
      SW_SHIM_PID=$SHIM_PID
      defer "'$SWAPSH' down --state='$state'"
      dev=$(run "$SWAPSH" up --socket="$WORK/sw-$b.sock" --state="$state" --priority=32767) || return 1
      OUR_SWAPS+=("$dev")
      SW_DEV="$dev" ;;
    ramster-r1|ramster-r2)
      local base=$((PORT_BASE + 5)) rep=${b#ramster-r}
      rm -rf "$WORK/sw-cluster"
      start_cluster "$WORK/sw-cluster" 3 $base --memory-limit=1G --disk-limit=1G >&2 || return 1
      SW_PEERS=$(peers_of $base 3)
      start_shim "sw-$b" "$SW_PEERS" "$rep" >&2 || return 1
      SW_SHIM_PID=$SHIM_PID
      defer "'$SWAPSH' down --state='$state'"
      dev=$(run "$SWAPSH" up --socket="$WORK/sw-$b.sock" --state="$state" --priority=32767) || return 1
      OUR_SWAPS+=("$dev")
      SW_DEV="$dev" ;;
  esac
}

swap_sample() {  # backend out: one JSON line per sample until killed
  local b="$1" out="$2"
  while :; do
    case "$b" in
      zram-lz4)
        echo "{\"t\": $(date +%s.%N), \"mm_stat\": [$(tr -s ' ' ',' </sys/block/zram$ZRAM_ID/mm_stat | sed 's/^,//;s/,$//')]}" >>"$out"
        sleep 0.5 ;;
      ramster-r*)
        local st rss="" lazy="" p shim
        st=$("$CTL" --server="$SW_PEERS" status --json 2>/dev/null | tr -d '\n')
        for p in "$WORK"/sw-cluster/node*.pid; do
          rss="$rss${rss:+, }$(rss_of "$(cat "$p")")"
          lazy="$lazy${lazy:+, }$(lazyfree_of "$(cat "$p")")"
        done
        shim=$(cat "$WORK/sw-$b.stats.json" 2>/dev/null | tr -d '\n')
        echo "{\"t\": $(date +%s.%N), \"status\": ${st:-null}, \"server_rss\": [$rss], \"server_lazyfree\": [$lazy], \"shim_rss\": $(rss_of "$SW_SHIM_PID"), \"shim\": ${shim:-null}}" >>"$out"
        sleep 1 ;;
      *) return 0 ;;
    esac
  done
}

suite_swap() {
  [ "$(id -u)" -eq 0 ] || { SUITE_REASON="needs root"; return 77; }
  [ -d /sys/fs/cgroup/memory ] || { SUITE_REASON="no cgroup v1 memory controller at /sys/fs/cgroup/memory"; return 77; }
  local mib=512 limit=256 ops=60000
  [ "$QUICK" = 1 ] && { mib=256; limit=128; ops=40000; }
  echo "{\"mib\": $mib, \"limit_mib\": $limit, \"passes\": 3, \"ops\": $ops}" >"$RAW/swap-config.json"
  : >"$RAW/swap.csv"
  local r b fails=0 CG="/sys/fs/cgroup/memory/ramster-bench-$$"
  for r in $(seq "$RUNS"); do
    for b in $SWAP_BACKENDS; do
      local tag="swap-$b-run$r"
      echo "   $b run $r"
      # Only one swap device at a time: wait up to 60 s for foreign ones to go, record what is there.
      local w foreign
      for w in $(seq 60); do foreign=$(foreign_swaps); [ -z "$foreign" ] && break; sleep 1; done
      swapon --show >"$RAW/$tag.swapon-before"
      [ -n "$foreign" ] && note "$b run $r: other swap devices active (not ours): $(echo $foreign)"
      local dev=""
      SW_DEV=""
      if [ "$b" != ram ]; then
        SW_DEV=""
        swap_setup "$b" "$r" 2>"$RAW/$tag.setup.err" >&2 ||
          { fails=$((fails + 1)); note "$b run $r: setup failed: $(tail -2 "$RAW/$tag.setup.err" | tr '\n' ' ')";
            echo "$b,$r,,setup-failed,1" >>"$RAW/swap.csv"; undo; continue; }
      fi
      dev="$SW_DEV"
      swapon --show >"$RAW/$tag.swapon-during"
      mkdir -p "$CG"
      defer "rmdir '$CG'"
      [ "$b" = ram ] || echo $((limit * 1024 * 1024)) >"$CG/memory.limit_in_bytes"
      echo 100 >"$CG/memory.swappiness" 2>/dev/null
      if [ "$b" = zram-lz4 ] || [ "${b#ramster}" != "$b" ]; then
        swap_sample "$b" "$RAW/$tag-samples.jsonl" &
        local spid=$!
        defer "kill $spid; wait $spid"
      fi
      printf 'echo $$ >%s/cgroup.procs; exec %s --mib=%s --passes=3 --ops=%s   # limit %s MiB, backend %s %s\n' \
        "$CG" "$WORKLOAD" "$mib" "$ops" "$([ "$b" = ram ] && echo none || echo $limit)" "$b" "$dev" >>"$RAW/commands.txt"
      python3 "$THREAD_CPU" >"$RAW/$tag.cpu-before.json" 2>/dev/null
      bash -c "echo \$\$ >'$CG/cgroup.procs'; exec timeout 900 '$WORKLOAD' --mib=$mib --passes=3 --ops=$ops" \
        >"$RAW/$tag.out" 2>&1
      local rc=$? secs
      python3 "$THREAD_CPU" >"$RAW/$tag.cpu-after.json" 2>/dev/null
      secs=$(grep -o '[0-9.]* s, checksum' "$RAW/$tag.out" | awk '{print $1}')
      grep -q ", OK" "$RAW/$tag.out" || { rc=${rc/#0/1}; }
      cat /sys/fs/cgroup/memory/ramster-bench-$$/memory.max_usage_in_bytes >"$RAW/$tag.cg-max-usage" 2>/dev/null
      if [ "${b#ramster}" != "$b" ]; then
        sleep 1.2  # one more stats write
        cp "$WORK/sw-$b.stats.json" "$RAW/$tag.shim-stats.json" 2>/dev/null
        [ -n "$SW_PEERS" ] && "$CTL" --server="$SW_PEERS" status --json >"$RAW/$tag.status.json" 2>/dev/null
      fi
      [ "$b" = zram-lz4 ] && cat /sys/block/zram$ZRAM_ID/mm_stat >"$RAW/$tag.mm_stat-end"
      echo "$b,$r,$secs,$([ $rc -eq 0 ] && echo ok || echo failed),$rc" >>"$RAW/swap.csv"
      echo "     $(tail -1 "$RAW/$tag.out")"
      [ $rc -eq 0 ] || { fails=$((fails + 1)); note "$b run $r: workload rc=$rc: $(tail -1 "$RAW/$tag.out")"; }
      # Teardown (kills leftovers in the cgroup first).
      for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
      undo
      OUR_SWAPS=()
    done
  done
  [ $fails -eq 0 ] || { SUITE_REASON="$fails backend runs failed (see notes)"; return 1; }
}
