// Runs the decoder's fuzz target (page_codec_fuzzer.cc) on a deterministic
// set of inputs without libFuzzer: valid encodings of several kinds of page,
// then every one of them truncated, extended and with bytes flipped. The
// target traps on any violated property, which fails this test.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/page_codec.h"
#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace ramster {
namespace {

std::vector<uint8_t> Input(const EncodedPage& enc) {
  std::vector<uint8_t> in(9 + enc.length);
  in[0] = static_cast<uint8_t>(enc.encoding);
  std::memcpy(in.data() + 1, &enc.checksum, 8);
  std::memcpy(in.data() + 9, enc.payload, enc.length);
  return in;
}

TEST(PageCodecFuzzDriver, MutatedEncodingsNeverMisbehave) {
  std::mt19937_64 rng(42);
  std::vector<std::vector<uint8_t>> seeds;
  for (int kind = 0; kind < 4; ++kind) {
    std::vector<uint8_t> page(kPageSize);
    for (size_t i = 0; i < kPageSize; ++i) {
      switch (kind) {
        case 0: page[i] = 0; break;                                  // zero
        case 1: page[i] = static_cast<uint8_t>(rng()); break;        // random
        case 2: page[i] = "ramster page text "[i % 18]; break;       // text
        case 3: page[i] = (i % 64 < 8) ? static_cast<uint8_t>(rng()) : 0; break;
      }
    }
    EncodedPage enc;
    ASSERT_TRUE(EncodePage(page, &enc).ok());
    seeds.push_back(Input(enc));
  }
  // Besides the target's own traps, count outcomes so that the test also
  // shows the mutations reach both the success and the error paths.
  int decoded = 0, rejected = 0;
  std::vector<uint8_t> out(kPageSize);
  auto run = [&](const std::vector<uint8_t>& in) {
    LLVMFuzzerTestOneInput(in.data(), in.size());
    if (in.size() < 9) return;
    uint64_t checksum;
    std::memcpy(&checksum, in.data() + 1, 8);
    absl::Status s = DecodePage(in[0] % 5, absl::MakeConstSpan(in).subspan(9),
                                kPageSize, checksum, absl::MakeSpan(out));
    (s.ok() ? decoded : rejected)++;
  };
  for (const auto& seed : seeds) {
    run(seed);
    for (int i = 0; i < 3000; ++i) {
      std::vector<uint8_t> in = seed;
      switch (rng() % 4) {
        case 0: in.resize(rng() % (in.size() + 1)); break;
        case 1: in.resize(in.size() + rng() % 64, static_cast<uint8_t>(rng())); break;
        default:
          for (int flips = 1 + rng() % 4; flips > 0 && !in.empty(); --flips) {
            in[rng() % in.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
          }
      }
      run(in);
    }
  }
  EXPECT_GE(decoded, 4);     // at least the unmutated seeds
  EXPECT_GT(rejected, 9000);  // nearly every mutation is caught
}

}  // namespace
}  // namespace ramster
