# Suite 6: scale. client_bench (tier stack -> N local servers, replicas 1 and
# 2) with 1, 2, 4, 8 servers, RUNS runs each (round-robin over N so that a
# disturbance hits all N alike); then the per-page index overhead of one
# server holding many pages (server_bench --systems=ramster, its first fill:
# RSS and ram_used_bytes per page beyond the compressed payload), at a small
# and a large page count (4 million: about 7.5 GiB in the server; the bench
# builds each request just before sending it, so that it does not hold a
# second copy of every page).
suite_scale() {
  local pages=40000 big=4000000
  [ "$QUICK" = 1 ] && { pages=10000; big=400000; }
  local r n fails=0
  for r in $(seq "$RUNS"); do
    for n in 1 2 4 8; do
      run "$BIN/bench/client_bench" --servers=$n --pages=$pages --rounds=1 --server_binary="$SERVER" \
        --json="$RAW/scale-n$n-run$r.json" >"$RAW/scale-n$n-run$r.out" 2>&1 || fails=$((fails + 1))
    done
  done
  # Index overhead: first fill of a fresh server with few and with many pages.
  local p
  for p in 50000 $big; do
    run "$BIN/bench/server_bench" --systems=ramster --server_binary="$SERVER" --rounds=1 \
      --batched_pages=$p --unbatched_pages=1000 --server_memory_limit=16G --prebuilt_requests=false \
      --json="$RAW/index-$p.json" >"$RAW/index-$p.out" 2>&1 ||
      { fails=$((fails + 1)); note "server_bench with $p pages failed: $(tail -1 "$RAW/index-$p.out")"; }
  done
  [ $fails -eq 0 ] || { SUITE_REASON="$fails of $((RUNS * 4 + 2)) runs failed (see raw/scale-*.out, raw/index-*.out)"; return 1; }
}
