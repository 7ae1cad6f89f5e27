#!/usr/bin/env bash
# ./ramster bench [--quick] [--runs=N] [--suites=codec,store,blockdev,swap,scale] [--out=DIR]
#
# Runs the benchmark suites (bench/README.md) and writes
#   bench/results/<date>/report.md, *.png   (a second full run that day: <date>-2, ...;
#                                            with --quick: bench/results/<date>-quick/)
#   bench/results/<date>/raw/               every raw JSON/CSV/log (git-ignored)
#   bench/results/latest-summary.md         the summary table (full runs of every suite only)
# Each suite is a function in bench/suites/<name>.sh. A suite that fails or
# cannot run is recorded with its reason and the run continues. Everything a
# suite starts (servers, shims, nbdkit, swap devices, loop devices, FUSE
# mounts, zram devices, cgroups) is torn down when it ends, and on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ALL_SUITES="codec,store,blockdev,swap,scale"
QUICK=0 RUNS="" SUITES="$ALL_SUITES" OUT=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --runs=*) RUNS="${arg#*=}" ;;
    --suites=*) SUITES="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ -n "$RUNS" ] || { [ $QUICK = 1 ] && RUNS=1 || RUNS=3; }
MODE=full; [ $QUICK = 1 ] && MODE=quick
PY=/usr/bin/python3   # Debian's, which has python3-matplotlib (a pyenv python3 may not)

log() { printf '\033[1m== %s\033[0m\n' "$*"; }

# Debian packages the suites need.
BENCH_PACKAGES=(nbdkit fio memcached libnbd-bin python3-matplotlib util-linux kmod)
missing=()
for p in "${BENCH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
    echo "bench: could not install ${missing[*]}; suites that need them will say so" >&2
fi

# The default configuration's outputs, whatever the bazel-bin symlink points at.
BIN="${RAMSTER_BIN:-$(bazel info bazel-bin 2>/dev/null)}"
export RAMSTER_BIN="$BIN"
SERVER="$BIN/server/ramster-server"
SHIM="$BIN/kernel-shim/ramster-shim"
CTL="$BIN/client/ramsterctl"
WORKLOAD="$BIN/tests/swap_workload"
CLUSTER="$ROOT/deploy/local/cluster.sh"
SWAPSH="$ROOT/deploy/local/swap.sh"
THREAD_CPU="$ROOT/bench/thread_cpu.py"

DATE=$(date +%Y-%m-%d)
# A full run never replaces an earlier one's report: a second run on one day
# goes to <date>-2, then -3, ... (quick runs are scratch and reuse their dir).
if [ -z "$OUT" ]; then
  OUT="$ROOT/bench/results/$DATE"
  if [ $QUICK = 1 ]; then
    OUT="$OUT-quick"
  else
    n=2
    while [ -e "$OUT/report.md" ]; do OUT="$ROOT/bench/results/$DATE-$n"; n=$((n + 1)); done
  fi
fi
RAW="$OUT/raw"
rm -rf "$RAW"; mkdir -p "$RAW"
rm -f "$OUT"/*.png "$OUT/report.md" "$OUT/summary.md"
# Scratch on the disk, not tmpfs: the loop-file swap backend's file lives here.
WORK=$(mktemp -d /var/tmp/ramster-bench.XXXXXX)
PORT_BASE=$((41000 + ($$ % 700) * 10))

# Cleanup stack: `defer CMD...` registers CMD (a string, eval'ed); `undo`
# runs everything registered, newest first.
DEFERRED=()
defer() { DEFERRED+=("$*"); }
undo() {
  local i
  for ((i = ${#DEFERRED[@]} - 1; i >= 0; i--)); do eval "${DEFERRED[$i]}" >/dev/null 2>&1 || true; done
  DEFERRED=()
}
trap 'undo; rm -rf "$WORK"' EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

# Every command that produces a number is logged, exactly as run.
run() { printf '%s\n' "$*" >>"$RAW/commands.txt"; "$@"; }
note() { printf '%s\n' "$*" >>"$RAW/notes.txt"; echo "   note: $*"; }
json_get() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Foreign swap devices (not ours): recorded, and we wait a little for them to go.
foreign_swaps() { swapon --show=NAME --noheadings 2>/dev/null | grep -v -F -x -f <(printf '%s\n' "${OUR_SWAPS[@]:-/nonexistent}") || true; }
OUR_SWAPS=()

meta() {
  "$PY" - "$RAW/meta.json" "$MODE" "$RUNS" "$BIN" "$ROOT" <<'PYEOF'
import json, os, platform, subprocess, sys
out, mode, runs, bin_, root = sys.argv[1:]
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e: return "?"
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
meta = {
  "mode": mode, "runs": int(runs), "date": sh("date -Iseconds"),
  "host": {"kernel": platform.release(), "os": sh(". /etc/os-release; echo $PRETTY_NAME"),
           "cpu": cpu, "cores": os.cpu_count(),
           "mem_total": sh("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
           "loadavg_start": open("/proc/loadavg").read().strip()},
  "ramster": {"commit": sh(f"git -C {root} rev-parse --short HEAD"),
              "dirty_files": len(sh(f"git -C {root} status --porcelain").splitlines()),
              "bin": bin_, "build": "bazel default configuration (fastbuild, .bazelrc: -O2 -g1)"},
  "versions": {
    "fio": sh("fio --version"), "nbdkit": sh("nbdkit --version"), "memcached": sh("memcached -V"),
    "nbdfuse": sh("nbdfuse --version | head -1"), "lz4": sh("dpkg-query -W -f='${Version}' liblz4-1"),
    "grpc": sh("dpkg-query -W -f='${Version}' libgrpc++1.51 2>/dev/null || dpkg-query -W -f='${Version}' libgrpc++-dev"),
    "python3-matplotlib": sh("dpkg-query -W -f='${Version}' python3-matplotlib"),
    "bazel": sh(f"cd {root} && bazel --version")},
  "swapon_show_start": sh("swapon --show"),
}
json.dump(meta, open(out, "w"), indent=1)
PYEOF
}

# shellcheck disable=SC1091
source "$ROOT/bench/suites/lib.sh"

log "bench ($MODE, $RUNS run(s) per figure) -> ${OUT#$ROOT/}"
for b in "$SERVER" "$SHIM" "$CTL" "$WORKLOAD" "$BIN/bench/codec_bench" "$BIN/bench/server_bench" "$BIN/bench/client_bench" \
         "$BIN/bench/wakeup_probe" "$BIN/bench/wire_probe"; do
  [ -x "$b" ] || { echo "bench: missing $b (run ./ramster build)" >&2; exit 1; }
done
meta
START_ALL=$(date +%s)
# What a wakeup costs here: every hop between processes in the suites pays it.
if [ $QUICK = 1 ]; then probe_size=(--rounds=3 --round_trips=5000); else probe_size=(--rounds=5 --round_trips=20000); fi
run "$BIN/bench/wakeup_probe" "${probe_size[@]}" --json="$RAW/wakeup.json" 2>/dev/null ||
  note "wakeup_probe failed: no wakeup figures in the machine section"
# And what one page's round trip costs before ramster's own work: raw TCP against a gRPC stream.
if [ $QUICK = 1 ]; then wire_size=(--rounds=3 --round_trips=2000); else wire_size=(--rounds=5 --round_trips=10000); fi
run "$BIN/bench/wire_probe" "${wire_size[@]}" --json="$RAW/wire.json" 2>/dev/null ||
  note "wire_probe failed: no wire figures in the machine section"
: >"$RAW/status.tsv"
IFS=',' read -r -a SUITE_LIST <<<"$SUITES"
for s in "${SUITE_LIST[@]}"; do
  f="$ROOT/bench/suites/$s.sh"
  [ "$s" != lib ] && [ -f "$f" ] || { printf '%s\tfailed\tno such suite (bench/suites/%s.sh)\t0\n' "$s" "$s" >>"$RAW/status.tsv"; continue; }
  log "suite $s"
  t0=$(date +%s)
  # Each suite in a subshell: an error in one (even `set -u`) cannot stop the
  # run, and its teardown runs whatever happens.
  (
    SUITE_REASON=""
    trap 'undo; echo "$SUITE_REASON" >"$RAW/.reason-$s"' EXIT
    # shellcheck disable=SC1090
    source "$f"
    "suite_$s"
  )
  rc=$?
  SUITE_REASON=$(cat "$RAW/.reason-$s" 2>/dev/null); rm -f "$RAW/.reason-$s"
  [ $rc -ne 0 ] && [ -z "$SUITE_REASON" ] && SUITE_REASON="exited with status $rc (see the log above)"
  t1=$(date +%s)
  if [ $rc -eq 0 ]; then st=ok; elif [ $rc -eq 77 ]; then st=skipped; else st=failed; fi
  printf '%s\t%s\t%s\t%s\n' "$s" "$st" "${SUITE_REASON:-}" $((t1 - t0)) >>"$RAW/status.tsv"
  echo "   $s: $st ${SUITE_REASON:-} ($((t1 - t0)) s)"
done
END_ALL=$(date +%s)
echo "{\"total_seconds\": $((END_ALL - START_ALL)), \"loadavg_end\": \"$(cat /proc/loadavg)\", \"swapon_show_end\": \"$(swapon --show --noheadings | tr '\n' ';')\"}" >"$RAW/end.json"

log "report"
"$PY" "$ROOT/bench/report.py" "$OUT" || { echo "bench: report.py failed" >&2; exit 1; }
# Only a full run of every suite is the latest summary (a --suites run has
# rows of its own suites only).
if [ $QUICK = 0 ] && [ "$SUITES" = "$ALL_SUITES" ] && [ -z "${BENCH_NO_SUMMARY:-}" ]; then
  cp "$OUT/summary.md" "$ROOT/bench/results/latest-summary.md"
fi
echo "wrote ${OUT#$ROOT/}/report.md ($((END_ALL - START_ALL)) s)"
