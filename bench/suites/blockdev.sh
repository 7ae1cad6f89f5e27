# Suite 3: the block device. fio's nbd engine, 4 KiB randread / randwrite at
# QD 1, 4, 32 against ramster-shim (3 local servers; replicas 1 and 2, one
# shim each, both on the same 3 servers) and against `nbdkit memory` (local
# RAM: the limit of the NBD path). All three targets run at once and the fio
# jobs are interleaved (run, pattern, depth, target), so each ratio compares
# figures measured back to back. The region is prefilled first so that reads
# hit stored pages; data is 50% compressible (fio buffer_compress_percentage).
#
# Before each fio run the bench waits (up to 60 s) until the servers, the
# shims and nbdkit are quiet (bench/suites/lib.sh wait_quiet): a ramster run
# leaves its servers recompressing the pages it wrote and its shim flushing
# its write-behind area, and that work would otherwise run beside the next
# run, which is nbdkit's as often as not (measured: nbdkit's QD32 randwrite
# ~15% slower right after a ramster run). What each run waited is in
# raw/blockdev-quiet.txt.
#
# Around each QD32 run, bench/thread_cpu.py records the CPU time of the
# machine and of the shims, the servers and nbdkit
# (raw/blockdev-cpu-*.{before,after}.json): at QD32 the machine's two CPUs
# are the limit, so the CPU each I/O costs explains the IOPS ratio.
#
# Then QD1 randread once more against nbdkit and ramster-r1 with fio and every
# process of the target (nbdkit; the shim and its servers) on one CPU
# (blockdev_onecpu-*.json). There every hop between them is a context switch
# on that CPU rather than a wakeup of another, idle one (see the wakeup probe
# in the report's machine section), so the difference between the two is
# what ramster's own path (shim -> server -> shim) costs a read.
suite_blockdev() {
  command -v fio >/dev/null || { SUITE_REASON="fio not installed"; return 77; }
  command -v nbdkit >/dev/null || { SUITE_REASON="nbdkit not installed"; return 77; }
  fio --enghelp=nbd >/dev/null 2>&1 || { SUITE_REASON="this fio has no nbd engine"; return 77; }
  local region=256M runtime=4 ramp=1
  [ "$QUICK" = 1 ] && { region=128M; runtime=2; ramp=0.5; }
  local base=$PORT_BASE peers
  peers=$(peers_of $base 3)
  start_cluster "$WORK/bd-cluster" 3 $base --memory-limit=1G || { SUITE_REASON="cluster did not start"; return 1; }
  start_shim bd-r1 "$peers" 1 || { SUITE_REASON="shim (replicas 1) did not start"; return 1; }
  local r1_pid=$SHIM_PID
  start_shim bd-r2 "$peers" 2 || { SUITE_REASON="shim (replicas 2) did not start"; return 1; }
  local r2_pid=$SHIM_PID
  start_nbdkit bd-nbdkit || { SUITE_REASON="nbdkit did not start"; return 1; }
  declare -A URI=(
    [nbdkit-memory]="nbd+unix:///?socket=$WORK/bd-nbdkit.sock"
    [ramster-r1]="nbd+unix:///ramster?socket=$WORK/bd-r1.sock"
    [ramster-r2]="nbd+unix:///ramster?socket=$WORK/bd-r2.sock"
  )
  local common=(--ioengine=nbd --bs=4k --size=$region --buffer_compress_percentage=50 --refill_buffers
                --percentile_list=1:5:10:25:50:75:90:95:99:99.9:99.99 --output-format=json)
  local t
  for t in nbdkit-memory ramster-r1 ramster-r2; do
    run fio --name=prefill-$t "${common[@]}" --uri="${URI[$t]}" --rw=write --bs=1M --iodepth=4 \
      --output="$RAW/blockdev-prefill-$t.json" >/dev/null 2>"$RAW/blockdev-prefill-$t.err" ||
      { SUITE_REASON="prefill of $t failed: $(tail -1 "$RAW/blockdev-prefill-$t.err")"; return 1; }
  done
  local r rw qd fails=0 waited
  local quiet_pids=("$r1_pid" "$r2_pid" "$NBDKIT_PID" $(cat "$WORK"/bd-cluster/node*.pid))
  for r in $(seq "$RUNS"); do
    for rw in randread randwrite; do
      for qd in 1 4 32; do
        for t in nbdkit-memory ramster-r1 ramster-r2; do
          waited=$(wait_quiet 60 "${quiet_pids[@]}")
          echo "$rw qd$qd $t run $r: waited $waited s for quiet" >>"$RAW/blockdev-quiet.txt"
          [ "$waited" = timeout ] && note "$rw qd$qd on $t run $r: the servers and shims were still busy after 60 s; measured anyway"
          [ "$qd" = 32 ] && python3 "$THREAD_CPU" ramster-shim ramster-server nbdkit \
            >"$RAW/blockdev-cpu-$t-$rw-qd$qd-run$r.before.json" 2>/dev/null
          run fio --name=$rw-qd$qd-$t "${common[@]}" --uri="${URI[$t]}" --rw=$rw --iodepth=$qd \
            --time_based --runtime=$runtime --ramp_time=$ramp \
            --output="$RAW/blockdev-$t-$rw-qd$qd-run$r.json" >/dev/null 2>"$RAW/blockdev-$t-$rw-qd$qd-run$r.err" ||
            { fails=$((fails + 1)); note "fio $rw qd$qd on $t run $r failed: $(tail -1 "$RAW/blockdev-$t-$rw-qd$qd-run$r.err")"; }
          [ "$qd" = 32 ] && python3 "$THREAD_CPU" ramster-shim ramster-server nbdkit \
            >"$RAW/blockdev-cpu-$t-$rw-qd$qd-run$r.after.json" 2>/dev/null
        done
      done
    done
  done
  local cpu
  if [ "$(nproc)" -ge 2 ]; then
    cpu=$(taskset -c -p $$ | sed 's/.*: //; s/.*[,-]//')  # the last CPU the bench may use
    declare -A PIDS=([nbdkit-memory]="$NBDKIT_PID" [ramster-r1]="$r1_pid $(cat "$WORK"/bd-cluster/node*.pid)")
    for r in $(seq "$RUNS"); do
      for t in nbdkit-memory ramster-r1; do
        waited=$(wait_quiet 60 "${quiet_pids[@]}")
        echo "one-CPU randread qd1 $t run $r: waited $waited s for quiet" >>"$RAW/blockdev-quiet.txt"
        pin_pids "$cpu" ${PIDS[$t]}
        run taskset -c "$cpu" fio --name=onecpu-randread-qd1-$t "${common[@]}" --uri="${URI[$t]}" --rw=randread \
          --iodepth=1 --time_based --runtime=$runtime --ramp_time=$ramp \
          --output="$RAW/blockdev_onecpu-$t-randread-qd1-run$r.json" >/dev/null 2>"$RAW/blockdev_onecpu-$t-run$r.err" ||
          { fails=$((fails + 1)); note "fio on one CPU against $t run $r failed: $(tail -1 "$RAW/blockdev_onecpu-$t-run$r.err")"; }
        unpin_pids ${PIDS[$t]}
      done
    done
  else
    note "one CPU only: no one-CPU QD1 runs (they would be the runs above)"
  fi
  cp "$WORK/bd-r1.stats.json" "$RAW/blockdev-shim-r1.stats.json" 2>/dev/null
  cp "$WORK/bd-r2.stats.json" "$RAW/blockdev-shim-r2.stats.json" 2>/dev/null
  [ $fails -eq 0 ] || { SUITE_REASON="$fails fio runs failed"; return 1; }
}
