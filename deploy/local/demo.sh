#!/usr/bin/env bash
# ./ramster demo: a local 3-node cluster, the shim attached as swap, and a
# workload that needs twice the memory it is allowed, so the kernel swaps
# half of it into the other nodes' RAM. Shows what happens live, verifies
# the workload's result, prints a summary, and tears everything down.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${RAMSTER_BIN:-$(cd "$ROOT" && bazel info bazel-bin 2>/dev/null)}"
SWAP="$ROOT/deploy/local/swap.sh"
CLUSTER="$ROOT/deploy/local/cluster.sh"
MIB="${DEMO_MIB:-512}"
LIMIT_MIB="${DEMO_LIMIT_MIB:-256}"
REPLICAS="${DEMO_REPLICAS:-2}"

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@" 2>/dev/null; }

WORK=$(mktemp -d /tmp/ramster-demo.XXXXXX)
CG="/sys/fs/cgroup/memory/ramster-demo-$$"
BASE=$((27400 + ($$ % 1000)))
PEERS="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
SHIM_PID=""
cleanup() {
  "$SWAP" down --state="$WORK/state" >/dev/null 2>&1
  [ -n "$SHIM_PID" ] && { kill -TERM "$SHIM_PID" 2>/dev/null; wait "$SHIM_PID" 2>/dev/null; }
  "$CLUSTER" stop "$WORK/cluster" >/dev/null 2>&1
  if [ -d "$CG" ]; then
    for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2; rmdir "$CG" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold "ramster demo: a host that is short of memory swaps into its peers' RAM"
echo
echo "1. Three ramster-servers on this machine (loopback), each donating 256 MiB of RAM."
"$CLUSTER" start "$WORK/cluster" 3 "$BASE" --memory-limit=256M --disk-limit=1G || exit 1
for i in 0 1 2; do echo "   node$i on 127.0.0.1:$((BASE + i))"; done

echo "2. ramster-shim: a 1 GiB NBD block device in front of the tier stack"
echo "   (same-filled pages stay in its slot map; the rest go to $REPLICAS peers, or to a local swap file)."
"$BIN/kernel-shim/ramster-shim" --size=1G --peers="$PEERS" --replicas="$REPLICAS" \
  --local-swap="$WORK/local.swap" --nbd-unix="$WORK/nbd.sock" --stats-file="$WORK/stats.json" \
  --memory-budget=512M --client-id=demo-host 2>"$WORK/shim.log" &
SHIM_PID=$!
for _ in $(seq 200); do grep -q "ready" "$WORK/shim.log" && break; sleep 0.05; done
grep -q ready "$WORK/shim.log" || { cat "$WORK/shim.log"; exit 1; }
sed 's/^/   /' "$WORK/shim.log"

KERNEL=1
why=""
[ "$(id -u)" -eq 0 ] || why="not root"
[ -z "$why" ] && [ ! -d /sys/fs/cgroup/memory ] && why="no cgroup v1 memory controller"
[ -z "$why" ] && [ ! -e /dev/fuse ] && [ ! -e /sys/module/nbd ] && why="neither the nbd driver nor FUSE"
[ -n "$why" ] && KERNEL=0

if [ $KERNEL = 1 ]; then
  echo "3. Attach it as swap: $( [ -e /sys/module/nbd ] && echo 'nbd-client -swap' || echo 'no nbd driver here, so nbdfuse -> loop device') -> mkswap -> swapon."
  DEV=$("$SWAP" up --socket="$WORK/nbd.sock" --state="$WORK/state") || exit 1
  echo "   $(swapon --show --noheadings | grep "$DEV")"
  echo "4. A workload that fills ${MIB} MiB with known content and rewrites it at random,"
  echo "   in a memory cgroup limited to ${LIMIT_MIB} MiB: the kernel must swap."
  mkdir -p "$CG"
  echo $((LIMIT_MIB * 1024 * 1024)) >"$CG/memory.limit_in_bytes"
  echo 100 >"$CG/memory.swappiness" 2>/dev/null
  START=$(date +%s.%N)
  bash -c "echo \$\$ >'$CG/cgroup.procs'; exec '$BIN/tests/swap_workload' --mib=$MIB --passes=3 --ops=60000 --progress" \
    >"$WORK/workload.out" 2>"$WORK/workload.err" &
  WPID=$!
  # On a terminal one line updates in place; otherwise a line every 5 s.
  if [ -t 1 ]; then EVERY=1 FMT='\r   %-100s'; else EVERY=10 FMT='   %s\n'; fi
  TICK=0
  while kill -0 $WPID 2>/dev/null; do
    if [ -f "$WORK/stats.json" ] && [ $((TICK++ % EVERY)) -eq 0 ]; then
      printf "$FMT" "$(python3 - "$WORK/stats.json" "$WORK/workload.err" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = {x['name']: x for x in d['tiers']}
c = t.get('cluster', {}).get('slots', 0); f = t.get('local-file', {}).get('slots', 0)
last = (open(sys.argv[2]).read().strip().splitlines() or ['starting'])[-1]
print(f"pages out {d['stores']} in {d['loads']} | held remote {c} local {f} as fill word {d['slots_filled']} | {last}")
PY
)"
    fi
    sleep 0.5
  done
  wait $WPID; RC=$?
  END=$(date +%s.%N)
  echo
  cat "$WORK/workload.out" | sed 's/^/   /'
else
  echo "3. This machine cannot attach swap ($why), so the demo drives the same device"
  echo "   through NBD with qemu-io instead of the kernel."
  START=$(date +%s.%N)
  qemu-io -f raw "nbd+unix:///ramster?socket=$WORK/nbd.sock" -c "write -P 0x5a 0 256M" \
    -c "read -P 0x5a 0 256M" -c "write -z 0 64M" -c "read -P 0 0 64M" >"$WORK/workload.out" 2>&1
  RC=$?
  END=$(date +%s.%N)
  tail -n 4 "$WORK/workload.out" | sed 's/^/   /'
fi
sleep 1.2

echo
bold "Summary"
"$BIN/client/ramsterctl" --server="$PEERS" status | sed 's/^/   /'
python3 - "$WORK/stats.json" "$START" "$END" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); secs = float(sys.argv[3]) - float(sys.argv[2])
t = {x['name']: x for x in d['tiers']}
print()
print(f"   {'pages swapped out (stores)':34} {d['stores']}")
print(f"   {'pages swapped in (loads)':34} {d['loads']}")
print(f"   {'kept as a fill word (no network)':34} {d['same_filled']}")
for name, x in t.items():
    print(f"   {'stored in ' + name:34} {x['stored']}  (holding {x['slots']} slots now)")
print(f"   {'stores also copied to local file':34} {d['backups']}")
print(f"   {'loads that found no good copy':34} {d['load_failures']}")
print(f"   {'shim memory (RSS, locked)':34} {d['rss_bytes'] / 2**20:.1f} MiB")
print(f"   {'slot map':34} {d['slot_map_bytes_per_slot']:.1f} bytes per slot")
print(f"   {'elapsed':34} {secs:.1f} s")
PY
echo
if [ "$RC" -eq 0 ]; then
  bold "Result: every page came back as written (workload verified its checksum)."
else
  bold "Result: FAILED (exit $RC) - see above."
fi
echo "Tearing down: swapoff, detach, stop the shim and the servers."
exit "$RC"
