# Suite 1: the page codec vs raw LZ4 on the same corpus (codec_bench runs both
# back to back in one process). One codec_bench process per run.
suite_codec() {
  local mib=64 rounds=5
  [ "$QUICK" = 1 ] && { mib=32; rounds=3; }
  local ok=0 r
  for r in $(seq "$RUNS"); do
    run "$BIN/bench/codec_bench" --total_mib=$mib --rounds=$rounds --seed=1 \
      --json="$RAW/codec-run$r.json" >"$RAW/codec-run$r.out" 2>&1 && ok=$((ok + 1))
  done
  [ $ok -gt 0 ] || { SUITE_REASON="codec_bench failed: $(tail -1 "$RAW/codec-run1.out")"; return 1; }
}
