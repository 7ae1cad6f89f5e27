#!/usr/bin/env bash
# End to end with the real kernel: 3 ramster-servers + ramster-shim attached
# as swap (nbdfuse -> loop -> swapon on these machines), and a workload in a
# memory cgroup limited to half its working set, which must finish with the
# right checksum:
#   1. replicas 1: pages go to the peers;
#   2. replicas 2, one server SIGKILLed halfway: still right;
#   3. all servers at quota: pages fall back to the local swap file.
# Needs root, cgroup v1 memory, loop devices and FUSE. Cleans up whatever
# happens (swapoff, loop detach, unmount, cgroup removal, processes).
#
# Exit 0 passed, 1 failed, 77 skipped (with the reason).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The default configuration's outputs, whatever the bazel-bin symlink points
# at after a sanitizer build.
BIN="${RAMSTER_BIN:-$(cd "$ROOT" && bazel info bazel-bin 2>/dev/null)}"
SERVER="$BIN/server/ramster-server"
SHIM="$BIN/kernel-shim/ramster-shim"
CTL="$BIN/client/ramsterctl"
WORKLOAD="$BIN/tests/swap_workload"
SWAP="$ROOT/deploy/local/swap.sh"
CLUSTER="$ROOT/deploy/local/cluster.sh"

MIB="${KSWAP_MIB:-256}"          # working set
LIMIT_MIB="${KSWAP_LIMIT_MIB:-128}"

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (swapon, losetup, mounts)"
[ -d /sys/fs/cgroup/memory ] || skip "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v nbdfuse >/dev/null || skip "nbdfuse (libnbd-bin) not installed"
losetup -f >/dev/null 2>&1 || skip "no free loop device"
for b in "$SERVER" "$SHIM" "$CTL" "$WORKLOAD"; do [ -x "$b" ] || { echo "FAIL: missing $b (build first)"; exit 1; }; done

WORK=$(mktemp -d /tmp/ramster-kswap.XXXXXX)
CG="/sys/fs/cgroup/memory/ramster-kswap-$$"
BASE=$((20000 + ($$ % 20000)))
SHIM_PID=""
FAILS=0

cleanup() {
  "$SWAP" down --state="$WORK/state" >/dev/null 2>&1
  [ -n "$SHIM_PID" ] && { kill -TERM "$SHIM_PID" 2>/dev/null; wait "$SHIM_PID" 2>/dev/null; }
  SHIM_PID=""
  "$CLUSTER" stop "$WORK/cluster" --kill >/dev/null 2>&1
  if [ -d "$CG" ]; then
    # Anything left in the cgroup goes back to the root, then it can go.
    for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    rmdir "$CG" 2>/dev/null
  fi
}
trap 'cleanup; rm -rf "$WORK"' EXIT

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# run_case NAME REPLICAS KILL(0|1) SERVER_FLAGS...
run_case() {
  local name="$1" replicas="$2" kill_one="$3"; shift 3
  echo "== $name"
  rm -rf "$WORK/cluster" "$WORK/state" "$WORK/local.swap"
  "$CLUSTER" start "$WORK/cluster" 3 "$BASE" --disk-limit=64M "$@" || { echo "FAIL: cluster"; return 1; }
  local peers="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
  "$SHIM" --size=1G --peers="$peers" --replicas="$replicas" --local-swap="$WORK/local.swap" \
    --nbd-unix="$WORK/nbd.sock" --stats-file="$WORK/stats.json" --memory-budget=512M \
    --client-id=kswap-test 2>"$WORK/shim.log" &
  SHIM_PID=$!
  for _ in $(seq 200); do grep -q "ready" "$WORK/shim.log" && break; sleep 0.05; done
  grep -q "ready" "$WORK/shim.log" || { echo "FAIL: shim did not start"; cat "$WORK/shim.log"; return 1; }
  local dev
  dev=$("$SWAP" up --socket="$WORK/nbd.sock" --state="$WORK/state") || { echo "FAIL: swap up"; return 1; }
  echo "   swap on $dev"
  mkdir -p "$CG"
  echo $((LIMIT_MIB * 1024 * 1024)) >"$CG/memory.limit_in_bytes"
  echo 100 >"$CG/memory.swappiness" 2>/dev/null
  bash -c "echo \$\$ >'$CG/cgroup.procs'; exec '$WORKLOAD' --mib=$MIB --passes=3 --ops=40000" \
    >"$WORK/workload.out" 2>&1 &
  local wpid=$!
  if [ "$kill_one" = 1 ]; then
    # Halfway: once a good share of the working set has been swapped out.
    for _ in $(seq 600); do
      [ -f "$WORK/stats.json" ] && [ "$(json "$WORK/stats.json" "d['stores']")" -gt $((MIB * 64)) ] && break
      kill -0 $wpid 2>/dev/null || break
      sleep 0.1
    done
    echo "   SIGKILL node1 after $(json "$WORK/stats.json" "d['stores']") stores"
    "$CLUSTER" kill "$WORK/cluster" 1
  fi
  wait $wpid
  local rc=$?
  cat "$WORK/workload.out" | sed 's/^/   /'
  sleep 1.2  # one more stats write
  local ok=1
  [ $rc -eq 0 ] && grep -q ", OK" "$WORK/workload.out" || { echo "FAIL: workload rc=$rc"; ok=0; }
  local stores cluster_stored file_stored failures
  stores=$(json "$WORK/stats.json" "d['stores']")
  cluster_stored=$(json "$WORK/stats.json" "[t['stored'] for t in d['tiers'] if t['name']=='cluster'][0]")
  file_stored=$(json "$WORK/stats.json" "[t['stored'] for t in d['tiers'] if t['name']=='local-file'][0]")
  failures=$(json "$WORK/stats.json" "d['load_failures']")
  echo "   shim: $stores stores, $cluster_stored to the cluster, $file_stored to the local file, $failures load failures, RSS $(($(json "$WORK/stats.json" "d['rss_bytes']") >> 20)) MiB"
  "$CTL" --server="$peers" status --json >"$WORK/status.json" 2>/dev/null
  local peer_pages
  peer_pages=$(json "$WORK/status.json" "sum(n.get('pages_in_ram',0)+n.get('pages_on_disk',0) for n in d['nodes'] if n['up'])")
  echo "   peers hold $peer_pages pages (ramsterctl status --json)"
  [ "$failures" -eq 0 ] || { echo "FAIL: load failures"; ok=0; }
  # At least half the overflow (working set minus the limit) went out.
  local min_pages=$(((MIB - LIMIT_MIB) * 256 / 2))
  case "$name" in
    *quota*)
      [ "$file_stored" -ge "$min_pages" ] || { echo "FAIL: expected >= $min_pages pages in the local file"; ok=0; } ;;
    *)
      [ "$cluster_stored" -ge "$min_pages" ] || { echo "FAIL: expected >= $min_pages pages stored in the cluster"; ok=0; }
      [ "$peer_pages" -gt 0 ] || { echo "FAIL: the peers hold nothing"; ok=0; } ;;
  esac
  cleanup
  [ $ok = 1 ] && echo "   PASS $name" || { echo "   FAIL $name"; cat "$WORK/shim.log" | tail -5; FAILS=$((FAILS + 1)); }
}

run_case "replicas-1" 1 0 --memory-limit=256M
run_case "replicas-2-kill-one" 2 1 --memory-limit=256M
run_case "all-at-quota" 2 0 --memory-limit=256M --client-quota=1M

[ $FAILS -eq 0 ] && { echo "PASS kernel_swap_test"; exit 0; }
echo "FAIL kernel_swap_test ($FAILS cases)"
exit 1
