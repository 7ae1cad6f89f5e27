#!/usr/bin/env bash
# Attach a running ramster-shim to the kernel as swap, or detach it.
#
#   swap.sh up   --socket=PATH [--priority=N] [--state=DIR]
#   swap.sh down [--state=DIR]
#
# Production path (a kernel with the nbd driver): nbd-client -swap connects
# /dev/nbdX to the shim, then mkswap + swapon with the given priority (higher
# than any disk swap, so ramster is used first).
# Fallback (no nbd driver, e.g. these test machines): nbdfuse exposes the
# shim as a file, a loop device turns it into a block device, then mkswap +
# swapon. FUSE and the loop driver are not built for the swap path: use this
# for tests and demos, not production.
#
# `up` records what it did in DIR/state; `down` undoes exactly that, in
# reverse, and tolerates pieces that are already gone.
set -euo pipefail

cmd="${1:-}"; shift || true
SOCKET="" PRIORITY=100 STATE="${RAMSTER_STATE:-/run/ramster}"
for arg in "$@"; do
  case "$arg" in
    --socket=*) SOCKET="${arg#*=}" ;;
    --priority=*) PRIORITY="${arg#*=}" ;;
    --state=*) STATE="${arg#*=}" ;;
    *) echo "swap.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
mkdir -p "$STATE"
STATEFILE="$STATE/state"

have_nbd_driver() {
  [ -e /sys/module/nbd ] || modprobe nbd 2>/dev/null
  [ -e /dev/nbd0 ] && command -v nbd-client >/dev/null
}

up() {
  [ -S "$SOCKET" ] || { echo "swap.sh: no shim socket at $SOCKET" >&2; exit 1; }
  : >"$STATEFILE"
  local dev
  if have_nbd_driver; then
    dev=""
    for d in /dev/nbd*; do
      [ "$(cat /sys/block/$(basename "$d")/size 2>/dev/null || echo 1)" = 0 ] && { dev="$d"; break; }
    done
    [ -n "$dev" ] || { echo "swap.sh: no free /dev/nbdX" >&2; exit 1; }
    nbd-client -unix "$SOCKET" "$dev" -swap -b 4096 -N ramster
    echo "nbd $dev" >>"$STATEFILE"
  else
    local mnt="$STATE/fuse"
    mkdir -p "$mnt"
    # One NBD connection, as nbd-client -swap uses (nbdfuse would open four
    # to a server that allows it). A shim's connection reader polls for its
    # next request; spread over four connections, a swap-in mostly lands on
    # a reader that is asleep and pays for waking it (measured: ramster-r1
    # swap workload 27.3 -> 23.1 s; nbdkit on the same chain 19.4 -> 19.7 s).
    nbdfuse --connections 1 -P "$STATE/nbdfuse.pid" "$mnt/swap" --unix "$SOCKET" </dev/null >/dev/null 2>"$STATE/nbdfuse.log" &
    # nbdfuse forks its FUSE loop; wait for the file to appear.
    for _ in $(seq 100); do [ -e "$mnt/swap" ] && break; sleep 0.05; done
    [ -e "$mnt/swap" ] || { echo "swap.sh: nbdfuse did not mount $mnt" >&2; exit 1; }
    echo "fuse $mnt" >>"$STATEFILE"
    dev=$(losetup --find --show --direct-io=on "$mnt/swap" 2>/dev/null || losetup --find --show "$mnt/swap")
    echo "loop $dev" >>"$STATEFILE"
  fi
  mkswap -q "$dev" >/dev/null
  swapon -p "$PRIORITY" "$dev"
  echo "swap $dev" >>"$STATEFILE"
  echo "$dev"
}

down() {
  [ -f "$STATEFILE" ] || return 0
  # Reverse order of `up`.
  tac "$STATEFILE" | while read -r kind what; do
    case "$kind" in
      swap) swapoff "$what" 2>/dev/null || true ;;
      loop) losetup -d "$what" 2>/dev/null || true ;;
      nbd) nbd-client -d "$what" 2>/dev/null || true ;;
      fuse)
        umount "$what" 2>/dev/null || umount -l "$what" 2>/dev/null || true
        if [ -f "$STATE/nbdfuse.pid" ]; then kill "$(cat "$STATE/nbdfuse.pid")" 2>/dev/null || true; fi
        rmdir "$what" 2>/dev/null || true ;;
    esac
  done
  rm -f "$STATEFILE" "$STATE/nbdfuse.pid"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: swap.sh up --socket=PATH [--priority=N] [--state=DIR] | swap.sh down [--state=DIR]" >&2; exit 2 ;;
esac
