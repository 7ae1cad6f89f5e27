#!/usr/bin/env bash
# Fuzzes the page decoder (common/page_codec_fuzzer.cc) with libFuzzer, under
# AddressSanitizer and UndefinedBehaviorSanitizer, for a bounded time.
#
#   bash tests/fuzz.sh                    # 20 seconds
#   FUZZ_SECONDS=600 bash tests/fuzz.sh
#
# Builds with clang++ into .build/fuzz/ (Debian: apt-get install -y clang
# libclang-rt-14-dev), seeds the corpus with valid encodings of a few kinds of
# page, and keeps the corpus it grows there for the next run. A crash, a
# sanitizer report, a leak or a hang fails the run and leaves the input that
# caused it in .build/fuzz/artifacts/. The last line of output is
#   PASS page_codec_fuzzer (<execs> execs)      or      FAIL page_codec_fuzzer
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
readonly name=page_codec_fuzzer
readonly self=tests/fuzz.sh
readonly out=.build/fuzz
readonly seconds=${FUZZ_SECONDS:-20}

fail() {
  echo "fuzz.sh: $*" >&2
  echo "FAIL $name"
  exit 1
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

[[ $seconds =~ ^[1-9][0-9]*$ ]] ||
  fail "FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'"
command -v clang++ >/dev/null ||
  fail "clang++ not found (apt-get install -y clang libclang-rt-14-dev)"
command -v pkg-config >/dev/null || fail "pkg-config not found"
absl_libs=$(pkg-config --libs absl_status absl_strings) ||
  fail "pkg-config does not know Abseil (apt-get install -y libabsl-dev)"

mkdir -p "$out/seeds" "$out/corpus" "$out/artifacts" || fail "cannot create $out"

codec_srcs=(common/page_codec.cc)
deps=("${codec_srcs[@]}" common/page_codec.h common/page_codec_fuzzer.cc "$self")

if stale "$out/$name" "${deps[@]}"; then
  echo "fuzz.sh: building $out/$name"
  # shellcheck disable=SC2086  # absl_libs is a list of flags
  clang++ -std=c++20 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. \
    "${codec_srcs[@]}" common/page_codec_fuzzer.cc \
    -o "$out/$name.tmp" -llz4 -lxxhash $absl_libs ||
    fail "building the fuzzer failed"
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
  # shellcheck disable=SC2086
  clang++ -std=c++20 -O1 -I. "$out/seed_gen.cc" "${codec_srcs[@]}" \
    -o "$out/seed_gen" -llz4 -lxxhash $absl_libs ||
    fail "building the seed generator failed"
  rm -f "$out"/seeds/seed-*
  "$out/seed_gen" "$out/seeds" || fail "writing the seeds failed"
fi

log=$out/fuzz.log
echo "fuzz.sh: fuzzing $name for ${seconds}s (log: $log)"
# The first directory receives new inputs; the seeds stay as they are.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$out/$name" -max_total_time="$seconds" -max_len=4200 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
  "$out/corpus" "$out/seeds" >"$log" 2>&1
rc=$?

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
  fail "the fuzzer exited with status $rc; the input that failed is in $out/artifacts/"
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::)' "$log"
echo "PASS $name ($execs execs)"
