#!/usr/bin/env bash
# ramsterctl against two real servers and one address where nobody listens:
# the JSON contract, a down node (shown, exit 1), the mutating commands, and
# the admin token.
set -uo pipefail
RUNFILES="${TEST_SRCDIR:-$PWD/..}/${TEST_WORKSPACE:-ramster}"
SERVER="$RUNFILES/server/ramster-server"
CTL="$RUNFILES/client/ramsterctl"
TMP="${TEST_TMPDIR:-$(mktemp -d)}"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

start() {  # start NAME [flags]: echoes the port
  local name="$1"; shift
  mkdir -p "$TMP/$name"
  "$SERVER" --listen=127.0.0.1:0 --memory-limit=64M --disk-limit=64M --data-dir="$TMP/$name" \
    --node-id="$name" "$@" >/dev/null 2>"$TMP/$name.log" &
  echo $! >"$TMP/$name.pid"
  for _ in $(seq 200); do grep -q "ready on" "$TMP/$name.log" && break; sleep 0.05; done
  sed -n 's/.*ready on [^ ]*:\([0-9]*\).*/\1/p' "$TMP/$name.log"
}
cleanup() { for p in "$TMP"/*.pid; do kill "$(cat "$p")" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

echo "s3cret-token" >"$TMP/token"
P1=$(start alpha)
P2=$(start beta --admin-token-file="$TMP/token")
A1="127.0.0.1:$P1" A2="127.0.0.1:$P2" DEAD="127.0.0.1:1"

# 1. Status of a healthy node: the JSON contract.
out=$("$CTL" --server="$A1" status --json); rc=$?
[ $rc -eq 0 ] || fail "status of a healthy node exited $rc"
for field in node_id address ram_used_bytes ram_limit_bytes disk_used_bytes disk_limit_bytes \
             pages_in_ram pages_on_disk clients; do
  [ "$(echo "$out" | json "'$field' in d['nodes'][0]")" = True ] || fail "status --json lacks $field"
done
[ "$(echo "$out" | json "d['nodes'][0]['node_id']")" = alpha ] || fail "node_id"
[ "$(echo "$out" | json "d['nodes'][0]['ram_limit_bytes']")" = $((64 << 20)) ] || fail "ram_limit_bytes"

# 2. A node that does not answer is shown as down and fails the command.
out=$("$CTL" --server="$A1,$DEAD" --server="$A2" --admin-token-file="$TMP/token" status --json); rc=$?
[ $rc -eq 1 ] || fail "a down node must make the exit status 1, got $rc"
[ "$(echo "$out" | json "len(d['nodes'])")" = 3 ] || fail "every --server must be reported"
[ "$(echo "$out" | json "d['nodes'][1]['up']")" = False ] || fail "dead node not shown down"
[ "$(echo "$out" | json "d['nodes'][2]['up']")" = True ] || fail "token node not up with the token"
table=$("$CTL" --server="$A1,$DEAD" status); rc=$?
[ $rc -eq 1 ] || fail "table status exit $rc"
echo "$table" | grep -q "down" || fail "table does not show the down node"
echo "$table" | grep -q "alpha" || fail "table does not show alpha"

# 3. The admin token: required by beta, refused without it.
"$CTL" --server="$A2" status >/dev/null 2>&1 && fail "beta answered without its admin token"
"$CTL" --server="$A2" --admin-token-file="$TMP/token" status >/dev/null || fail "beta refused its token"

# 4. Mutating commands.
"$CTL" --server="$A1" quota set host-a 32M >/dev/null || fail "quota set"
q=$("$CTL" --server="$A1" clients --json | json "[c['quota_bytes'] for c in d['nodes'][0]['clients'] if c['client_id']=='host-a'][0]")
[ "$q" = $((32 << 20)) ] || fail "quota not applied: $q"
"$CTL" --server="$A1" memory-limit set 16M >/dev/null || fail "memory-limit set"
[ "$("$CTL" --server="$A1" status --json | json "d['nodes'][0]['ram_limit_bytes']")" = $((16 << 20)) ] || fail "memory limit not applied"
"$CTL" --server="$A1" drain >/dev/null || fail "drain"
[ "$("$CTL" --server="$A1" status --json | json "d['nodes'][0]['draining']")" = True ] || fail "not draining"
"$CTL" --server="$A1" undrain >/dev/null || fail "undrain"
[ "$("$CTL" --server="$A1" status --json | json "d['nodes'][0]['draining']")" = False ] || fail "still draining"

# 5. Usage errors exit 2.
"$CTL" status >/dev/null 2>&1; [ $? -eq 2 ] || fail "no --server must exit 2"
"$CTL" --server="$A1" quota set host-a lots >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad size must exit 2"

[ $FAILS -eq 0 ] && echo "PASS" && exit 0
exit 1
