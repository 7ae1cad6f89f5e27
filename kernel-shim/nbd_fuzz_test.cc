// Runs the NBD server's fuzz target (nbd_fuzzer.cc) on a deterministic set
// of inputs without libFuzzer: the seeds, then each of them truncated,
// extended, with bytes flipped, with header fields set to boundary values,
// and spliced with another. The target traps on any violated property,
// which fails this test; afterwards the server must still be healthy.
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernel-shim/nbd_fuzzer.h"
#include "kernel-shim/nbd_protocol.h"

namespace ramster {
namespace {

std::vector<uint8_t> Mutate(const std::vector<uint8_t>& seed,
                            const std::vector<std::vector<uint8_t>>& all, std::mt19937_64& rng) {
  std::vector<uint8_t> in = seed;
  switch (rng() % 6) {
    case 0:
      in.resize(1 + rng() % in.size());
      break;
    case 1:
      in.resize(in.size() + rng() % 256, static_cast<uint8_t>(rng()));
      break;
    case 2: {  // a 32-bit field set to a boundary value
      static const uint32_t kValues[] = {0,          1,          0xFFFFFFFF, 0x80000000,
                                         16 << 10,   (16 << 10) + 1, 256 << 10, 4096,
                                         nbd::kRequestMagic, 0x49484156};
      if (in.size() < 5) break;
      size_t at = 1 + rng() % (in.size() - 4);
      nbd::PutU32(in.data() + at, kValues[rng() % (sizeof(kValues) / sizeof(kValues[0]))]);
      break;
    }
    case 3: {  // splice: our head, another seed's tail
      const std::vector<uint8_t>& other = all[rng() % all.size()];
      size_t cut = 1 + rng() % in.size();
      size_t from = 1 + rng() % other.size();
      in.resize(cut);
      if (from < other.size()) in.insert(in.end(), other.begin() + from, other.end());
      break;
    }
    default:
      for (int flips = 1 + rng() % 4; flips > 0; --flips) {
        in[rng() % in.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      }
  }
  if (in.empty()) in.push_back(0);
  return in;
}

TEST(NbdFuzzDriver, MutatedClientStreamsNeverMisbehave) {
  const std::vector<std::vector<uint8_t>> seeds = NbdFuzzSeeds();
  ASSERT_GE(seeds.size(), 10u);
  for (const auto& seed : seeds) LLVMFuzzerTestOneInput(seed.data(), seed.size());
  NbdServerStats after_seeds = NbdFuzzServerStats();
  // The seeds alone reach the success paths, every error path, and the
  // disconnects.
  EXPECT_GT(after_seeds.reads, 0u);
  EXPECT_GT(after_seeds.writes, 0u);
  EXPECT_GT(after_seeds.bytes_written, 0u);
  EXPECT_GT(after_seeds.errors, 10u);
  EXPECT_GE(after_seeds.protocol_errors, 4u);
  EXPECT_GE(after_seeds.disconnects, 1u);

  std::mt19937_64 rng(7);
  for (const auto& seed : seeds) {
    for (int i = 0; i < 150; ++i) {
      std::vector<uint8_t> in = Mutate(seed, seeds, rng);
      LLVMFuzzerTestOneInput(in.data(), in.size());
    }
  }
  NbdServerStats s = NbdFuzzServerStats();
  EXPECT_GT(s.protocol_errors, after_seeds.protocol_errors + 100);
  EXPECT_GT(s.errors, after_seeds.errors + 100);
  EXPECT_GT(s.reads, after_seeds.reads + 100);
  EXPECT_EQ(s.connections_rejected, 0u);
  EXPECT_EQ(NbdFuzzCheckServerHealthy(), "");
}

// Inputs libFuzzer once found a problem with, kept as regressions.
TEST(NbdFuzzDriver, FoundInputsStayFixed) {
  // A zero-length WRITE with FUA: its payload read had no buffer (a null
  // memcpy destination, which UBSan reports).
  const std::vector<uint8_t> zero_length_write = {
      0x01, 0x25, 0x60, 0x95, 0x13, 0x00, 0x01, 0x00, 0x01, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x23, 0x00, 0x13};
  LLVMFuzzerTestOneInput(zero_length_write.data(), zero_length_write.size());
  EXPECT_EQ(NbdFuzzCheckServerHealthy(), "");
}

}  // namespace
}  // namespace ramster
