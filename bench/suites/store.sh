# Suite 2: one ramster-server vs memcached (4 KiB values), batched and
# unbatched. server_bench starts both, runs the same load against each in the
# same process (alternating which goes first), and reports the median of its
# rounds with min-max. One server_bench process with RUNS rounds.
suite_store() {
  local bp=200000 up=50000
  [ "$QUICK" = 1 ] && { bp=60000; up=10000; }
  command -v memcached >/dev/null || { SUITE_REASON="memcached not installed"; return 77; }
  run "$BIN/bench/server_bench" --server_binary="$SERVER" --rounds="$RUNS" \
    --batched_pages=$bp --unbatched_pages=$up --json="$RAW/store.json" >"$RAW/store.out" 2>&1 ||
    { SUITE_REASON="server_bench failed: $(tail -1 "$RAW/store.out")"; return 1; }
}
