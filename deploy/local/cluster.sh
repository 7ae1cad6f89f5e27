#!/usr/bin/env bash
# A local ramster cluster: N servers on loopback, for the demo and tests.
#
#   cluster.sh start DIR N BASE_PORT [server flags...]   e.g. cluster.sh start /tmp/c 3 7401 --memory-limit=256M
#   cluster.sh stop DIR [--kill]
#   cluster.sh kill DIR I            SIGKILL server I (0-based)
#
# Server i listens on 127.0.0.1:BASE_PORT+i with node id nodeI, data in
# DIR/nodeI, log in DIR/nodeI.log, pid in DIR/nodeI.pid.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${RAMSTER_BIN:-$(cd "$ROOT" && bazel info bazel-bin 2>/dev/null)}"
SERVER="$BIN/server/ramster-server"

start() {
  local dir="$1" n="$2" base="$3"; shift 3
  mkdir -p "$dir"
  for i in $(seq 0 $((n - 1))); do
    mkdir -p "$dir/node$i"
    "$SERVER" --listen="127.0.0.1:$((base + i))" --node-id="node$i" --data-dir="$dir/node$i" "$@" \
      </dev/null >/dev/null 2>"$dir/node$i.log" &
    echo $! >"$dir/node$i.pid"
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 200); do
      grep -q "ready on" "$dir/node$i.log" 2>/dev/null && break
      kill -0 "$(cat "$dir/node$i.pid")" 2>/dev/null || { cat "$dir/node$i.log" >&2; exit 1; }
      sleep 0.05
    done
    grep -q "ready on" "$dir/node$i.log" || { echo "node$i did not start" >&2; exit 1; }
  done
}

stop() {
  local dir="$1" sig=TERM
  [ "${2:-}" = "--kill" ] && sig=KILL
  for pidfile in "$dir"/node*.pid; do
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  kill) kill -KILL "$(cat "$2/node$3.pid")"; rm -f "$2/node$3.pid" ;;
  *) echo "usage: cluster.sh start DIR N BASE_PORT [flags] | stop DIR [--kill] | kill DIR I" >&2; exit 2 ;;
esac
