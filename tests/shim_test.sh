#!/usr/bin/env bash
# ramster-shim as a process: three real servers, real NBD clients (qemu-io,
# nbdcopy, fio at queue depth 32), the shim's Admin endpoint through
# ramsterctl, a server killed under it, a clean SIGTERM, and command lines it
# must refuse.
set -uo pipefail
RUNFILES="${TEST_SRCDIR:-$PWD/..}/${TEST_WORKSPACE:-ramster}"
SERVER="$RUNFILES/server/ramster-server"
SHIM="$RUNFILES/kernel-shim/ramster-shim"
CTL="$RUNFILES/client/ramsterctl"
export PATH="/usr/bin:$PATH"
# Unix socket paths must be short; TEST_TMPDIR can be long.
TMP=$(mktemp -d /tmp/shim_test.XXXXXX) || exit 1
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

ready_port() {  # ready_port LOG PATTERN: waits for the ready line, echoes the port
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && break; sleep 0.05; done
  sed -n "s/.*$2 [^ ]*:\([0-9]*\).*/\1/p" "$1" | head -1
}

ADDRS=()
for i in 0 1 2; do
  mkdir -p "$TMP/node$i"
  "$SERVER" --listen=127.0.0.1:0 --memory-limit=64M --disk-limit=64M --data-dir="$TMP/node$i" \
    --node-id="node$i" </dev/null >/dev/null 2>"$TMP/node$i.log" &
  PIDS+=($!)
  ADDRS+=("127.0.0.1:$(ready_port "$TMP/node$i.log" "ready on")")
done
PEERS=$(IFS=,; echo "${ADDRS[*]}")

"$SHIM" --size=64M --peers="$PEERS" --replicas=2 --local-swap="$TMP/local.swap" \
  --nbd-unix="$TMP/nbd.sock" --admin-listen=127.0.0.1:0 --client-id=test-host \
  --stats-file="$TMP/stats.json" \
  </dev/null >/dev/null 2>"$TMP/shim.log" &
SHIM_PID=$!
PIDS+=($SHIM_PID)
ADMIN="127.0.0.1:$(ready_port "$TMP/shim.log" "Admin on")"
grep -q "ready: NBD on unix:$TMP/nbd.sock, Admin on" "$TMP/shim.log" || { cat "$TMP/shim.log"; fail "shim ready line"; }
URI="nbd+unix:///ramster?socket=$TMP/nbd.sock"

# 1. Real NBD I/O through the cluster. 8 MiB of swap-like pages (text with
#    numbers, random, zero) written with nbdcopy; then qemu-io overwrites a
#    page, unaligned bytes and a zeroed range; the whole device is read back
#    with nbdcopy and compared with the same edits made locally.
/usr/bin/python3 - "$TMP" <<'PY'
import random, sys
tmp = sys.argv[1]
rng = random.Random(7)
pages = []
for i in range(2048):
    kind = i % 5
    if kind == 0:
        pages.append(bytes(4096))
    elif kind == 1:
        pages.append(bytes(rng.getrandbits(8) for _ in range(4096)))
    else:
        text = ("page %d of the working set, cold and compressible. " % i).encode()
        pages.append((text * (4096 // len(text) + 1))[:4096])
data = bytearray(b"".join(pages))
open(tmp + "/data.bin", "wb").write(data)
data[2 << 20:(2 << 20) + 4096] = b"\x3c" * 4096          # write -P 0x3c 2M 4k
data[3000:8000] = b"\x11" * 5000                          # write -P 0x11 3000 5000
data[7 << 20:(7 << 20) + (512 << 10)] = bytes(512 << 10)   # write -z 7M 512k
open(tmp + "/expect.bin", "wb").write(data + bytes((64 << 20) - len(data)))
PY
nbdcopy "$TMP/data.bin" "$URI" || fail "nbdcopy into the shim"
qemu-io -f raw "$URI" -c "write -P 0x3c 2M 4k" -c "write -P 0x11 3000 5000" -c "write -z 7M 512k" \
  >"$TMP/qio.log" 2>&1 || fail "qemu-io writes: $(cat "$TMP/qio.log")"
# The first 32 MiB (fio below has the rest).
check() {
  rm -f "$TMP/out.bin"
  nbdcopy "$URI" "$TMP/out.bin" && cmp -s -n $((32 << 20)) "$TMP/out.bin" "$TMP/expect.bin"
}
check || fail "read back differs: $(cmp -n $((32 << 20)) "$TMP/out.bin" "$TMP/expect.bin" 2>&1 | head -1)"

# 1b. Many requests in flight: fio at queue depth 32 writes random 4 KiB
#     pages over the last 32 MiB, reading back and verifying written pages as
#     it goes (reads and writes in flight together), then all of them. The
#     shim runs the waiting requests as batches (one request per peer).
if fio --enghelp=nbd >/dev/null 2>&1; then
  fio --name=qd32 --ioengine=nbd --uri="$URI" --offset=32M --size=32M --bs=4k --rw=randwrite \
    --iodepth=32 --buffer_compress_percentage=50 --refill_buffers --verify=crc32c \
    --verify_backlog=256 --verify_fatal=1 --do_verify=1 --output="$TMP/fio.out" \
    >/dev/null 2>&1 || fail "fio at queue depth 32: $(grep -iE 'verify|err' "$TMP/fio.out" | head -3)"
  grep -q 'err= *0' "$TMP/fio.out" || fail "fio reports errors: $(grep 'err=' "$TMP/fio.out")"
  sleep 1.2  # the stats file is written every second
  batches=$(json "d['nbd']['batches']" <"$TMP/stats.json")
  [ "$batches" -gt 0 ] || fail "no batches at queue depth 32 (stats: $(cat "$TMP/stats.json"))"
  # The writes were acknowledged from the write-behind area and have all
  # gone out to the tiers since (the reads above verified them either way).
  staged=$(json "d['write_behind']['staged_writes']" <"$TMP/stats.json")
  [ "$staged" -ge 8192 ] || fail "only $staged pages went through the write-behind area"
  [ "$(json "d['write_behind']['staged_pages']" <"$TMP/stats.json")" = 0 ] ||
    fail "pages still staged a second after fio: $(cat "$TMP/stats.json")"
  [ "$(json "d['write_behind']['flush_failures']" <"$TMP/stats.json")" = 0 ] || fail "flush failures"
else
  echo "SKIP: fio with its nbd engine is not installed (fio): no queue depth 32 check"
fi

# 2. ramsterctl sees the shim and the servers holding its pages.
out=$("$CTL" --server="$ADMIN,$PEERS" status --json) || fail "ramsterctl status exit $?"
[ "$(echo "$out" | json "d['nodes'][0]['node_id']")" = "shim:test-host" ] || fail "shim node id"
shim_pages=$(echo "$out" | json "d['nodes'][0]['pages_in_ram']")
# 2048 pages written; the zero ones (and the trimmed range) are fill words.
[ "$shim_pages" -ge 1500 ] || fail "shim reports $shim_pages pages held in memory"
server_pages=$(echo "$out" | json "sum(n['pages_in_ram'] for n in d['nodes'][1:])")
[ "$server_pages" -ge 2800 ] || fail "servers hold $server_pages pages (2 copies of ~1500 expected)"
"$CTL" --server="$ADMIN" drain >/dev/null 2>&1 && fail "drain on a shim must be refused"

# 3. One server dies: every byte still reads back (replicas 2).
kill -KILL "${PIDS[1]}"
check || fail "read back after SIGKILL of node1 differs"

# 4. SIGTERM: clean exit.
kill -TERM $SHIM_PID
wait $SHIM_PID; rc=$?
[ $rc -eq 0 ] || fail "shim exit $rc after SIGTERM"
grep -q "stopped after" "$TMP/shim.log" || fail "no stop line"
grep -q "0 load failures" "$TMP/shim.log" || fail "load failures: $(tail -1 "$TMP/shim.log")"

# 5. Command lines it must refuse, with a reason.
"$SHIM" --size=64G --peers="$PEERS" --local-swap="$TMP/x" --nbd-unix="$TMP/x.sock" \
  --memory-budget=64M 2>"$TMP/err" && fail "a 1 GiB slot map fit in 64 MiB?"
grep -q "memory-budget" "$TMP/err" || fail "budget refusal says why: $(cat "$TMP/err")"
"$SHIM" --size=64M --nbd-unix="$TMP/y.sock" 2>"$TMP/err" && fail "no --local-swap accepted"
grep -q "local-swap is required" "$TMP/err" || fail "missing --local-swap message"
"$SHIM" --size=1000 --local-swap="$TMP/z" --nbd-unix="$TMP/z.sock" 2>"$TMP/err" && fail "size not a page multiple accepted"

[ $FAILS -eq 0 ] && echo "PASS" && exit 0
echo "$FAILS failures"; tail -5 "$TMP/shim.log"
exit 1
