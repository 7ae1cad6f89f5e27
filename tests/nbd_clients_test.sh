#!/usr/bin/env bash
# The NBD server (//kernel-shim:nbd_server, behind nbd_test_server: a
# TierStack of a LocalCacheTier and a LocalFileTier) driven by real
# third-party NBD clients, as the kernel and qemu will drive ramster-shim:
#
#   nbdinfo    the handshake: size, flags, block sizes, export list, TCP
#   nbdsh      libnbd: random unaligned writes/reads against a model, 64
#              requests in flight, TRIM, WRITE_ZEROES, FLUSH, FUA, and the
#              server's errors for out-of-range and oversize requests
#   qemu-io    patterns, unaligned, discard, write -z, flush, aio
#   qemu-img   convert with 8 coroutines out of order, compare
#   nbdcopy    32 MiB over 4 connections both ways, byte for byte
#   fio        (ioengine=nbd) 4 jobs of random 4 KiB writes and 1 job of
#              unaligned 3001-byte writes, all verified, alongside nbdcopy
#   python3    a raw client: WRITE past the end then READ (in sync), bad
#              magic (dropped), and the server serves on
#
# Usage (Bazel passes the first argument):
#   bash tests/nbd_clients_test.sh PATH/TO/nbd_test_server
# A tool that is not installed skips its part with a "SKIP:" line; the
# ./ramster deps list installs all of them (nbdsh is Debian python3-libnbd).
set -uo pipefail

server_bin=${1:-bazel-bin/kernel-shim/nbd_test_server}
[[ -x $server_bin ]] || { echo "FAIL: no server binary at $server_bin"; exit 1; }
server_bin=$(cd "$(dirname "$server_bin")" && pwd)/$(basename "$server_bin")

# Unix socket paths must be short; TEST_TMPDIR can be long.
dir=$(mktemp -d /tmp/nbd_clients.XXXXXX) || exit 1
sock=$dir/nbd.sock
uri="nbd+unix:///ramster?socket=$sock"
server_pid=
failures=0

cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
skip() { echo "SKIP: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }
# nbdsh runs "python3 -m nbd"; the nbd module is in Debian's python3, which
# a python3 earlier on PATH (pyenv, venv) may not see.
nbdsh_() { PATH=/usr/bin:$PATH nbdsh "$@"; }

readonly size=$((128 << 20))
"$server_bin" --unix="$sock" --tcp=127.0.0.1:0 --file="$dir/swap" --size=128M --cache=16M \
  --workers=4 >"$dir/server.out" 2>"$dir/server.err" &
server_pid=$!
for _ in $(seq 1 200); do
  grep -q '^READY ' "$dir/server.out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.05
done
if ! grep -q '^READY ' "$dir/server.out"; then
  echo "FAIL: the server did not start"
  cat "$dir/server.err"
  exit 1
fi
tcp_port=$(sed -n 's/^READY .*tcp_port=\([0-9]*\).*/\1/p' "$dir/server.out")
echo "server: $(head -n 1 "$dir/server.out")"

# ---- nbdinfo: the handshake ------------------------------------------------------
if have nbdinfo; then
  if nbdinfo --json "$uri" >"$dir/info.json" 2>"$dir/info.err" &&
    python3 - "$dir/info.json" "$size" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
size = int(sys.argv[2])
assert info["protocol"] == "newstyle-fixed", info["protocol"]
(e,) = info["exports"]
want = {"export-name": "ramster", "export-size": size, "is_read_only": False,
        "can_flush": True, "can_fua": True, "can_trim": True, "can_zero": True,
        "can_multi_conn": True, "block_size_minimum": 1, "block_size_preferred": 4096,
        "block_size_maximum": 32 << 20}
for k, v in want.items():
    assert e.get(k) == v, f"{k}: {e.get(k)!r} != {v!r}"
EOF
  then
    pass "nbdinfo: size, flags and block sizes"
  else
    fail "nbdinfo: $(cat "$dir/info.err")"
  fi
  if nbdinfo --list "nbd+unix:///?socket=$sock" 2>&1 | grep -q 'export="ramster"'; then
    pass "nbdinfo --list: NBD_OPT_LIST names the export"
  else
    fail "nbdinfo --list"
  fi
  if [[ $(nbdinfo --size "nbd://127.0.0.1:$tcp_port/ramster" 2>&1) == "$size" ]]; then
    pass "nbdinfo over TCP (127.0.0.1:$tcp_port)"
  else
    fail "nbdinfo over TCP"
  fi
  if [[ $(nbdinfo --size "nbd+unix:///?socket=$sock" 2>&1) == "$size" ]]; then
    pass "nbdinfo: the default (empty) export name"
  else
    fail "nbdinfo with the default export name"
  fi
  if nbdinfo --size "nbd+unix:///nosuch?socket=$sock" >/dev/null 2>&1; then
    fail "nbdinfo: an unknown export name was accepted"
  else
    pass "nbdinfo: an unknown export name is refused"
  fi
else
  skip "nbdinfo not installed (libnbd-bin)"
fi

# ---- nbdsh (libnbd) ------------------------------------------------------------------
if have nbdsh && nbdsh_ --version >/dev/null 2>&1; then
  if nbdsh_ -u "$uri" -c '
import errno, random
rng = random.Random(1)
assert h.get_size() == 128 << 20
assert h.get_block_size(nbd.SIZE_MINIMUM) == 1
assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
assert not h.get_structured_replies_negotiated()
assert h.can_multi_conn() and h.can_trim() and h.can_zero() and h.can_flush() and h.can_fua()

# Random unaligned writes and reads in an 8 MiB window, against a model.
base = 16 << 20
model = bytearray(8 << 20)
for i in range(600):
    n = rng.randint(1, 70000)
    off = rng.randrange(0, len(model) - n)
    data = rng.randbytes(n)
    h.pwrite(data, base + off, nbd.CMD_FLAG_FUA if i % 50 == 0 else 0)
    model[off:off + n] = data
    if i % 7 == 0:
        m = rng.randint(1, 70000)
        o = rng.randrange(0, len(model) - m)
        assert h.pread(m, base + o) == model[o:o + m], f"read {o}+{m} after {i} writes"
for o in range(0, len(model), 1 << 20):
    assert h.pread(1 << 20, base + o) == model[o:o + (1 << 20)], f"final read at {o}"

# TRIM and WRITE_ZEROES (aligned and not) read back as zeros.
h.trim(3 * 4096, base + 4096)
model[4096:4 * 4096] = bytes(3 * 4096)
h.zero(10000, base + 100001)
model[100001:110001] = bytes(10000)
h.zero(4096, base + 8 * 4096, nbd.CMD_FLAG_NO_HOLE)
model[8 * 4096:9 * 4096] = bytes(4096)
h.flush()
assert h.pread(200000, base) == model[:200000]

# 64 requests in flight; replies may come in any order.
pages = {}
cookies = []
for i in range(64):
    off = (32 << 20) + rng.randrange(0, 4096) * 4096
    data = rng.randbytes(4096)
    pages[off] = data
for off, data in pages.items():
    cookies.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off))
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
bufs = {off: nbd.Buffer(4096) for off in pages}
cookies = [h.aio_pread(bufs[off], off) for off in pages]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
for off, data in pages.items():
    assert bufs[off].to_bytearray() == data, f"aio page at {off}"

# The server checks too (with the client-side checks off).
h.set_strict_mode(0)
def err(f):
    try:
        f()
    except nbd.Error as e:
        # libnbd gives the name ("EINVAL"); older versions the number.
        return errno.errorcode.get(e.errno, e.errno)
    return None
size = h.get_size()
assert err(lambda: h.pread(4096, size - 100)) == "EINVAL"
assert err(lambda: h.pwrite(b"x" * 4096, size - 100)) == "ENOSPC"
assert err(lambda: h.zero(8192, size - 4096)) == "ENOSPC"
assert err(lambda: h.trim(8192, size - 4096)) == "EINVAL"
assert err(lambda: h.pread((32 << 20) + 1, 0)) == "EINVAL"
assert err(lambda: h.pwrite(bytes((32 << 20) + 1), 0)) == "EINVAL"
assert h.pread(200000, base) == model[:200000]  # still in sync
h.shutdown()
' 2>"$dir/nbdsh.err"; then
    pass "nbdsh: unaligned I/O, 64 in flight, trim, zero, flush, FUA, server-side errors"
  else
    fail "nbdsh: $(tail -n 5 "$dir/nbdsh.err")"
  fi
  if nbdsh_ -c '
h.set_opt_mode(True)
h.connect_uri("'"$uri"'")
names = []
h.opt_list(lambda name, desc: names.append(name))
assert names == ["ramster"], names
h.set_export_name("nosuch")
try:
    h.opt_info()
    raise AssertionError("NBD_OPT_INFO for an unknown export succeeded")
except nbd.Error:
    pass
h.set_export_name("ramster")
h.opt_info()
assert h.get_size() == 128 << 20
h.opt_go()
assert h.pread(4, 0) is not None
h.shutdown()
' 2>"$dir/nbdsh2.err"; then
    pass "nbdsh: NBD_OPT_LIST, NBD_OPT_INFO (known and unknown export), NBD_OPT_GO"
  else
    fail "nbdsh options: $(tail -n 5 "$dir/nbdsh2.err")"
  fi
else
  skip "nbdsh not usable (Debian package python3-libnbd)"
fi

# ---- qemu-io and qemu-img ---------------------------------------------------------------
if have qemu-io; then
  qemu-io -f raw "$uri" \
    -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' \
    -c 'write -P 0xcd 4095 3' -c 'read -P 0xcd 4095 3' -c 'read -P 0xab 0 4095' \
    -c 'read -P 0xab 4098 1000' \
    -c 'write -P 0x11 1048575 8193' -c 'read -P 0x11 1048575 8193' \
    -c 'discard 0 64k' -c 'read -P 0 0 64k' -c 'read -P 0xab 64k 4k' \
    -c 'write -z 100000 50000' -c 'read -P 0 100000 50000' -c 'read -P 0xab 150000 4k' \
    -c 'aio_write -P 0x21 2M 64k' -c 'aio_write -P 0x22 3M 64k' -c 'aio_write -P 0x23 4M 64k' \
    -c 'aio_flush' -c 'flush' \
    -c 'read -P 0x21 2M 64k' -c 'read -P 0x22 3M 64k' -c 'read -P 0x23 4M 64k' \
    >"$dir/qemu-io.out" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]] && ! grep -qiE 'fail|error' "$dir/qemu-io.out"; then
    pass "qemu-io: patterns, unaligned, discard, write -z, aio, flush"
  else
    fail "qemu-io (exit $rc): $(grep -iE 'fail|error' "$dir/qemu-io.out" | head -n 5)"
  fi
  # The server must still be serving the same bytes to a new connection.
  if qemu-io -f raw "$uri" -c 'read -P 0x22 3M 64k' -c 'read -P 0 0 64k' 2>&1 |
    grep -c '^read 65536/65536' | grep -qx 2; then
    pass "qemu-io: a new connection reads what the last one wrote"
  else
    fail "qemu-io: data did not persist across connections"
  fi
else
  skip "qemu-io not installed (qemu-utils)"
fi
if have qemu-img; then
  head -c $((24 << 20)) /dev/urandom >"$dir/img.raw"
  truncate -s "$size" "$dir/img.raw"
  if qemu-img convert -n -W -m 8 -f raw -O raw "$dir/img.raw" "$uri" 2>"$dir/qemu-img.err" &&
    qemu-img compare -q -f raw -F raw "$dir/img.raw" "$uri" 2>>"$dir/qemu-img.err"; then
    pass "qemu-img: convert (8 coroutines, out of order) and compare"
  else
    fail "qemu-img: $(cat "$dir/qemu-img.err")"
  fi
else
  skip "qemu-img not installed (qemu-utils)"
fi

# ---- nbdcopy and fio together: many connections at once -------------------------------
have_fio_nbd=0
if have fio && fio --enghelp=nbd >/dev/null 2>&1; then
  have_fio_nbd=1
else
  skip "fio or its nbd engine not installed (fio)"
fi
if have nbdcopy; then
  # 32 MiB at the start of the device over 4 connections, while fio (below)
  # works on [64 MiB, 128 MiB).
  head -c $((32 << 20)) /dev/urandom >"$dir/src.bin"
  (nbdcopy --connections=4 --threads=4 --requests=16 --flush "$dir/src.bin" "$uri" \
    >"$dir/nbdcopy.out" 2>&1; echo $? >"$dir/nbdcopy.rc") &
  copy_pid=$!
fi
if [[ $have_fio_nbd -eq 1 ]]; then
  cat >"$dir/verify.fio" <<EOF
[global]
ioengine=nbd
uri=$uri
iodepth=16
verify=crc32c
verify_fatal=1
do_verify=1
group_reporting=1

[rand4k]
rw=randwrite
bs=4k
numjobs=4
offset=64m
size=8m
offset_increment=8m

[unaligned]
new_group
rw=randwrite
bs=3001
offset=$(((96 << 20) + 1234))
size=$((3001 * 2000))
EOF
  if timeout 300 fio --output="$dir/fio.out" "$dir/verify.fio" &&
    ! grep -q 'err= *[1-9]' "$dir/fio.out"; then
    pass "fio: 4 jobs of random 4 KiB writes and unaligned 3001-byte writes, verified"
    grep -E '^ *(READ|WRITE): bw=' "$dir/fio.out" | sed 's/^ */  fio /'
  else
    fail "fio: $(grep -iE 'verify|err=|error' "$dir/fio.out" | head -n 5)"
  fi
fi
if have nbdcopy; then
  wait "$copy_pid"
  if [[ $(cat "$dir/nbdcopy.rc") -ne 0 ]]; then
    fail "nbdcopy to the server: $(cat "$dir/nbdcopy.out")"
  elif ! nbdcopy --connections=4 --threads=4 "$uri" "$dir/dst.bin" 2>"$dir/nbdcopy.err"; then
    fail "nbdcopy from the server: $(cat "$dir/nbdcopy.err")"
  elif ! cmp -n $((32 << 20)) "$dir/src.bin" "$dir/dst.bin" >/dev/null; then
    fail "nbdcopy: what came back differs from what was copied in"
  else
    pass "nbdcopy: 32 MiB over 4 connections in and out, byte for byte (alongside fio)"
  fi
else
  skip "nbdcopy not installed (libnbd-bin)"
fi

# ---- a raw client: malformed input -----------------------------------------------------
if python3 - "$sock" "$size" <<'EOF' 2>"$dir/raw.err"; then
import socket, struct, sys

path, size = sys.argv[1], int(sys.argv[2])

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    greeting = recv_exact(s, 18)
    assert greeting[:16] == b"NBDMAGICIHAVEOPT", greeting
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 7) + b"ramster")  # EXPORT_NAME
    export_size, flags = struct.unpack(">QH", recv_exact(s, 10))
    assert export_size == size, export_size
    return s

def request(s, cmd, handle, offset, length, payload=b"", magic=0x25609513):
    s.sendall(struct.pack(">IHHQQI", magic, 0, cmd, handle, offset, length) + payload)

def reply(s):
    magic, error, handle = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == 0x67446698, hex(magic)
    return error, handle

s = connect()
request(s, 1, 1, 4096, 5, b"hello")
assert reply(s) == (0, 1)
# A WRITE past the end: ENOSPC, its payload skipped (it holds a READ header
# that must not be obeyed), then a READ still parses.
bogus = struct.pack(">IHHQQI", 0x25609513, 0, 0, 99, 0, 4)
request(s, 1, 2, size - 10, len(bogus) * 2, bogus * 2)
assert reply(s) == (28, 2)
request(s, 0, 3, 4096, 5)
assert reply(s) == (0, 3)
assert recv_exact(s, 5) == b"hello"
request(s, 0, 4, 0, (32 << 20) + 1)  # longer than the maximum: EINVAL
assert reply(s) == (22, 4)
request(s, 9, 5, 0, 0)  # unknown command
assert reply(s) == (22, 5)
request(s, 0, 6, 0, 4, magic=0xDEADBEEF)  # bad magic: dropped
try:
    assert s.recv(1) == b""
except ConnectionResetError:
    pass
# Others are still served.
t = connect()
request(t, 0, 7, 4096, 5)
assert reply(t) == (0, 7)
assert recv_exact(t, 5) == b"hello"
request(t, 2, 8, 0, 0)  # NBD_CMD_DISC: no reply, the server closes
assert t.recv(1) == b""
EOF
  pass "raw client: ENOSPC past the end (payload skipped, in sync), EINVAL, bad magic dropped, others served"
else
  fail "raw client: $(tail -n 3 "$dir/raw.err")"
fi

# ---- the server stops cleanly ----------------------------------------------------------
kill -TERM "$server_pid"
wait "$server_pid"
rc=$?
server_pid=
stats=$(grep '^STATS ' "$dir/server.out")
echo "server: $stats"
if [[ $rc -ne 0 ]]; then
  fail "the server exited with $rc: $(tail -n 5 "$dir/server.err")"
elif [[ $stats != *" protocol_errors=1 "* ]]; then
  fail "expected exactly 1 protocol error (the raw client's bad magic): $stats"
elif [[ $stats != *" device_errors=0 "* ]]; then
  fail "device errors: $(tail -n 5 "$dir/server.err")"
elif [[ -e $sock ]]; then
  fail "the server left its socket behind"
else
  pass "the server stopped on SIGTERM, removed its socket, saw only the expected bad input"
fi

if [[ $failures -ne 0 ]]; then
  echo "FAILED: $failures check(s)"
  exit 1
fi
echo "all NBD client checks passed"
