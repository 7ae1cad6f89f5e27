#!/usr/bin/env bash
# Fuzzes ramster's parsers with libFuzzer, under AddressSanitizer and
# UndefinedBehaviorSanitizer, each for a bounded time:
#   page_codec_fuzzer  the page decoder (common/page_codec_fuzzer.cc)
#   nbd_fuzzer         the NBD server's handshake and request parsing: whole
#                      client streams into a running server over a
#                      socketpair (kernel-shim/nbd_fuzzer.cc)
#   store_wire_fuzzer  the page link's in-place store request reader
#                      (common/store_wire_fuzzer.cc)
#
#   bash tests/fuzz.sh                    # all, 20 seconds each
#   bash tests/fuzz.sh nbd_fuzzer         # just one
#   FUZZ_SECONDS=600 bash tests/fuzz.sh
#
# Builds with clang++ into .build/fuzz/ (Debian: apt-get install -y clang
# libclang-rt-14-dev), seeds each corpus with valid inputs, and keeps the
# corpus it grows there for the next run. A crash, a sanitizer report, a leak
# or a hang fails the run and leaves the input that caused it in the
# fuzzer's artifacts directory. The output ends with one line per fuzzer,
#   PASS <fuzzer> (<execs> execs)      or      FAIL <fuzzer>
# and the exit status is 0 only when every fuzzer passed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
readonly self=tests/fuzz.sh
readonly out=.build/fuzz
readonly seconds=${FUZZ_SECONDS:-20}
readonly all_fuzzers=(page_codec_fuzzer nbd_fuzzer store_wire_fuzzer)
readonly cxxflags=(-std=c++20 -I.)
readonly fuzz_flags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=all)

fuzzers=("$@")
[[ ${#fuzzers[@]} -gt 0 ]] || fuzzers=("${all_fuzzers[@]}")

# Setup problems fail every requested fuzzer.
fail() {
  local f
  echo "fuzz.sh: $*" >&2
  for f in "${fuzzers[@]}"; do echo "FAIL $f"; done
  exit 1
}

# Says why fuzzer $1 failed; the caller then returns 1.
fail_one() {
  local name=$1
  shift
  echo "fuzz.sh: $name: $*" >&2
  echo "FAIL $name"
}

# True when the first file is missing or older than any of the others.
stale() {
  local target=$1 f
  shift
  [[ -e $target ]] || return 0
  for f in "$@"; do
    [[ $f -nt $target ]] && return 0
  done
  return 1
}

for f in "${fuzzers[@]}"; do
  [[ " ${all_fuzzers[*]} " == *" $f "* ]] || fail "unknown fuzzer '$f' (known: ${all_fuzzers[*]})"
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] ||
  fail "FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'"
command -v clang++ >/dev/null ||
  fail "clang++ not found (apt-get install -y clang libclang-rt-14-dev)"
command -v pkg-config >/dev/null || fail "pkg-config not found"
absl_flags=$(pkg-config --libs absl_status absl_statusor absl_strings absl_time \
  absl_flat_hash_map absl_hash) ||
  fail "pkg-config does not know Abseil (apt-get install -y libabsl-dev)"
read -r -a absl_libs <<<"$absl_flags"

# Runs the built fuzzer $1 in directory $2 (which holds corpus/, seeds/ and
# artifacts/) for the time allowed, on inputs of up to $3 bytes. Prints its
# PASS line, or says why it failed and returns 1.
run_fuzzer() {
  local name=$1 dir=$2 max_len=$3
  local log=$dir/fuzz.log
  echo "fuzz.sh: fuzzing $name for ${seconds}s (log: $log)"
  # The first directory receives new inputs; the seeds stay as they are.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$dir/$name" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    "$dir/corpus" "$dir/seeds" >"$log" 2>&1
  local rc=$?

  local execs first
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  if [[ $rc -ne 0 || -z $execs ]]; then
    # The report from its first line (sanitizer, libFuzzer or trap), else the end.
    first=$(grep -n -m 1 -E '^==[0-9]+==|runtime error:|^INFO: libFuzzer' "$log" | cut -d: -f1)
    if [[ -n $first ]]; then
      sed -n "${first},$((first + 30))p" "$log" >&2
      grep -E 'Test unit written' "$log" >&2
    else
      tail -n 40 "$log" >&2
    fi
    fail_one "$name" "the fuzzer exited with status $rc; the input that failed is in $dir/artifacts/"
    return 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::)' "$log"
  echo "PASS $name ($execs execs)"
}

# common/xxh3_avx2.cc is the one file compiled with -mavx2 (as in common/BUILD):
# built on its own into $xxh3_avx2_obj, which the fuzzers and their seed
# generators link with the codec. It is xxHash's own code, so it is built
# without the sanitizers (the seed generators have none).
readonly xxh3_avx2_obj=$out/xxh3_avx2.o
build_xxh3_avx2() {
  mkdir -p "$out" || return 1
  if stale "$xxh3_avx2_obj" common/xxh3_avx2.cc common/xxh3_avx2.h "$self"; then
    clang++ "${cxxflags[@]}" -O2 -mavx2 -c common/xxh3_avx2.cc \
      -o "$xxh3_avx2_obj.tmp" && mv "$xxh3_avx2_obj.tmp" "$xxh3_avx2_obj"
  fi
}

# ---- page_codec_fuzzer ------------------------------------------------------------
# Its files stay where they always were, directly under .build/fuzz/.

page_codec_fuzzer() {
  local name=page_codec_fuzzer
  local codec_srcs=(common/page_codec.cc "$xxh3_avx2_obj")
  local deps=("${codec_srcs[@]}" common/page_codec.h common/page_codec_fuzzer.cc "$self")
  mkdir -p "$out/seeds" "$out/corpus" "$out/artifacts" ||
    { fail_one "$name" "cannot create $out"; return 1; }
  build_xxh3_avx2 || { fail_one "$name" "building common/xxh3_avx2.cc failed"; return 1; }

  if stale "$out/$name" "${deps[@]}"; then
    echo "fuzz.sh: building $out/$name"
    clang++ "${cxxflags[@]}" "${fuzz_flags[@]}" "${codec_srcs[@]}" common/page_codec_fuzzer.cc \
      -o "$out/$name.tmp" -llz4 -lxxhash "${absl_libs[@]}" ||
      { fail_one "$name" "building the fuzzer failed"; return 1; }
    mv "$out/$name.tmp" "$out/$name"
  fi

  # Seeds: real encodings of a few kinds of page, in the target's input layout
  # [encoding:1][checksum:8][payload], so the fuzzer starts from inputs that
  # decode and mutates its way into the error paths.
  if stale "$out/seed_gen" "${deps[@]}"; then
    cat >"$out/seed_gen.cc" <<'EOF'
// Written by tests/fuzz.sh: writes seed inputs for page_codec_fuzzer.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/page_codec.h"

int main(int argc, char** argv) {
  using namespace ramster;
  if (argc != 2) return 2;
  std::mt19937_64 rng(1);
  const char* kinds[] = {"zero", "filled", "text", "sparse", "random", "half"};
  for (int kind = 0; kind < 6; ++kind) {
    std::vector<uint8_t> page(kPageSize);
    for (size_t i = 0; i < kPageSize; ++i) {
      uint8_t r = static_cast<uint8_t>(rng());
      switch (kind) {
        case 0: page[i] = 0; break;
        case 1: page[i] = static_cast<uint8_t>(0x0123456789abcdefull >> (8 * (i % 8))); break;
        case 2: page[i] = "ramster swaps pages to its peers. "[i % 34]; break;
        case 3: page[i] = i % 64 < 8 ? r : 0; break;
        case 4: page[i] = r; break;
        case 5: page[i] = i < kPageSize / 2 ? r : static_cast<uint8_t>(i / 16); break;
      }
    }
    EncodedPage enc;
    std::vector<uint8_t> back(kPageSize);
    if (!EncodePage(page, &enc).ok() ||
        !DecodePage(static_cast<uint32_t>(enc.encoding), enc.bytes(), kPageSize,
                    enc.checksum, absl::MakeSpan(back)).ok() ||
        back != page) {
      std::fprintf(stderr, "seed %s does not round-trip\n", kinds[kind]);
      return 1;
    }
    std::string path = std::string(argv[1]) + "/seed-" + kinds[kind] + "-" +
                       EncodingName(enc.encoding);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 1;
    uint8_t encoding = static_cast<uint8_t>(enc.encoding);
    bool ok = std::fwrite(&encoding, 1, 1, f) == 1 &&
              std::fwrite(&enc.checksum, 8, 1, f) == 1 &&
              std::fwrite(enc.payload, 1, enc.length, f) == enc.length;
    if (std::fclose(f) != 0 || !ok) return 1;
  }
  return 0;
}
EOF
    clang++ "${cxxflags[@]}" -O1 "$out/seed_gen.cc" "${codec_srcs[@]}" \
      -o "$out/seed_gen" -llz4 -lxxhash "${absl_libs[@]}" ||
      { fail_one "$name" "building the seed generator failed"; return 1; }
    rm -f "$out"/seeds/seed-*
    "$out/seed_gen" "$out/seeds" || { fail_one "$name" "writing the seeds failed"; return 1; }
  fi

  run_fuzzer "$name" "$out" 4200
}

# ---- nbd_fuzzer ---------------------------------------------------------------------
# The NBD server with a real device (a TierStack over a LocalCacheTier)
# behind it. Its files are under .build/fuzz/nbd_fuzzer/.

nbd_fuzzer() {
  local name=nbd_fuzzer
  local dir=$out/nbd_fuzzer
  local srcs=(kernel-shim/nbd_server.cc kernel-shim/nbd_protocol.cc
    kernel-shim/nbd_buffer_pool.cc kernel-shim/nbd_test_client.cc
    kernel-shim/nbd_test_device.cc kernel-shim/tier_stack_device.cc
    client/tier_stack.cc client/local_cache_tier.cc client/local_file_tier.cc
    common/page_codec.cc common/socket_io.cc "$xxh3_avx2_obj")
  local deps=("${srcs[@]}" kernel-shim/nbd_fuzzer.cc kernel-shim/*.h client/*.h common/*.h
    "$self")
  local libs=(-llz4 -lxxhash "${absl_libs[@]}" -lpthread)
  mkdir -p "$dir/seeds" "$dir/corpus" "$dir/artifacts" ||
    { fail_one "$name" "cannot create $dir"; return 1; }
  build_xxh3_avx2 || { fail_one "$name" "building common/xxh3_avx2.cc failed"; return 1; }

  if stale "$dir/$name" "${deps[@]}"; then
    echo "fuzz.sh: building $dir/$name"
    clang++ "${cxxflags[@]}" "${fuzz_flags[@]}" "${srcs[@]}" kernel-shim/nbd_fuzzer.cc \
      -o "$dir/$name.tmp" "${libs[@]}" ||
      { fail_one "$name" "building the fuzzer failed"; return 1; }
    mv "$dir/$name.tmp" "$dir/$name"
  fi

  # Seeds: NbdFuzzSeeds(), the realistic client streams the Bazel driver
  # (kernel-shim/nbd_fuzz_test.cc) starts from.
  if stale "$dir/seed_gen" "${deps[@]}"; then
    cat >"$dir/seed_gen.cc" <<'EOF'
// Written by tests/fuzz.sh: writes seed inputs for nbd_fuzzer.
#include <cstdio>
#include <string>

#include "kernel-shim/nbd_fuzzer.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  int i = 0;
  for (const auto& seed : ramster::NbdFuzzSeeds()) {
    std::string path = std::string(argv[1]) + "/seed-" + std::to_string(i++);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 1;
    bool ok = std::fwrite(seed.data(), 1, seed.size(), f) == seed.size();
    if (std::fclose(f) != 0 || !ok) return 1;
  }
  return 0;
}
EOF
    clang++ "${cxxflags[@]}" -O0 "$dir/seed_gen.cc" "${srcs[@]}" kernel-shim/nbd_fuzzer.cc \
      -o "$dir/seed_gen" "${libs[@]}" ||
      { fail_one "$name" "building the seed generator failed"; return 1; }
    rm -f "$dir"/seeds/seed-*
    "$dir/seed_gen" "$dir/seeds" || { fail_one "$name" "writing the seeds failed"; return 1; }
  fi

  # Up to 70000 bytes: past the largest request payload (16 KiB) and option
  # (64 KiB) the target's server accepts.
  run_fuzzer "$name" "$dir" 70000
}

# ---- store_wire_fuzzer --------------------------------------------------------------
# Its files are under .build/fuzz/store_wire_fuzzer/.

store_wire_fuzzer() {
  local name=store_wire_fuzzer
  local dir=$out/store_wire_fuzzer
  local deps=(common/store_wire.cc common/store_wire.h common/store_wire_fuzzer.cc "$self")
  mkdir -p "$dir/seeds" "$dir/corpus" "$dir/artifacts" ||
    { fail_one "$name" "cannot create $dir"; return 1; }

  if stale "$dir/$name" "${deps[@]}"; then
    echo "fuzz.sh: building $dir/$name"
    clang++ "${cxxflags[@]}" "${fuzz_flags[@]}" common/store_wire.cc common/store_wire_fuzzer.cc \
      -o "$dir/$name.tmp" "${absl_libs[@]}" ||
      { fail_one "$name" "building the fuzzer failed"; return 1; }
    mv "$dir/$name.tmp" "$dir/$name"
  fi

  # Seeds: store requests as the client writes them (FrameStoreRequest,
  # without the frame's length), of 0, 1 and 3 pages.
  if stale "$dir/seed_gen" "${deps[@]}"; then
    cat >"$dir/seed_gen.cc" <<'EOF'
// Written by tests/fuzz.sh: writes seed inputs for store_wire_fuzzer.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/store_wire.h"

int main(int argc, char** argv) {
  using namespace ramster;
  if (argc != 2) return 2;
  const std::string payload(1800, 'p');
  for (size_t n : {0, 1, 3}) {
    std::vector<StorePageFields> pages(n);
    for (size_t i = 0; i < n; ++i) {
      StorePageFields& f = pages[i];
      f.pool = 1;
      f.object = i;
      f.index = 1000 + 300 * i;
      f.encoding = static_cast<int32_t>(1 + i);
      f.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(payload.data()),
                                      payload.size() / (i + 1));
      f.uncompressed_length = 4096;
      f.checksum = 0x0123456789abcdefull * (i + 1);
      f.generation = 7 + i;
    }
    std::string frame;
    FrameStoreRequest(42, pages, &frame);
    std::string path = std::string(argv[1]) + "/seed-" + std::to_string(n);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 1;
    bool ok = std::fwrite(frame.data() + 4, 1, frame.size() - 4, f) == frame.size() - 4;
    if (std::fclose(f) != 0 || !ok) return 1;
  }
  return 0;
}
EOF
    clang++ "${cxxflags[@]}" -O0 "$dir/seed_gen.cc" common/store_wire.cc \
      -o "$dir/seed_gen" "${absl_libs[@]}" ||
      { fail_one "$name" "building the seed generator failed"; return 1; }
    rm -f "$dir"/seeds/seed-*
    "$dir/seed_gen" "$dir/seeds" || { fail_one "$name" "writing the seeds failed"; return 1; }
  fi

  # Up to 16 KiB: room for several pages with their fields.
  run_fuzzer "$name" "$dir" 16384
}

failed=0
for f in "${fuzzers[@]}"; do
  "$f" || failed=1
done
exit "$failed"
