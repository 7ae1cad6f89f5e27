#include "common/latency_histogram.h"

#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(LatencyHistogram, BucketsAreAQuarterOfAPowerOfTwoAndCoverEverything) {
  for (uint64_t v = 0; v < 4; ++v) EXPECT_EQ(LatencyHistogram::Bucket(v), static_cast<int>(v));
  EXPECT_EQ(LatencyHistogram::Bucket(4), 4);
  EXPECT_EQ(LatencyHistogram::Bucket(5), 5);
  EXPECT_EQ(LatencyHistogram::Bucket(7), 7);
  EXPECT_EQ(LatencyHistogram::Bucket(8), 8);
  EXPECT_EQ(LatencyHistogram::Bucket(9), 8);    // 8..9
  EXPECT_EQ(LatencyHistogram::Bucket(10), 9);   // 10..11
  EXPECT_EQ(LatencyHistogram::Bucket(~uint64_t{0}), LatencyHistogram::kBuckets - 1);
  // Every value lies within its bucket's bounds, and a bucket is at most
  // a quarter of its lower bound wide.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const int b = LatencyHistogram::Bucket(v);
    ASSERT_GE(b, 0);
    ASSERT_LT(b, LatencyHistogram::kBuckets);
    ASSERT_LE(LatencyHistogram::LowerBound(b), v) << v;
    ASSERT_LT(v, LatencyHistogram::LowerBound(b + 1)) << v;
    if (v >= 4) {
      ASSERT_LE(LatencyHistogram::LowerBound(b + 1) - LatencyHistogram::LowerBound(b),
                LatencyHistogram::LowerBound(b) / 4 + 1)
          << v;
    }
  }
}

TEST(LatencyHistogram, PercentilesAreTheBoundsOfTheirBuckets) {
  LatencyHistogram h;
  EXPECT_EQ(h.Summarize().count, 0u);
  EXPECT_EQ(h.Summarize().p50_ns, 0u);
  // 1..1000 us: p50 ~500 us, p90 ~900 us, p99 ~990 us, each within 25%.
  for (int us = 1; us <= 1000; ++us) h.Record(us * 1000);
  h.Record(-5);  // a clock step backwards counts as 0
  const LatencyHistogram::Summary s = h.Summarize();
  EXPECT_EQ(s.count, 1001u);
  EXPECT_GE(s.p50_ns, 500000u);
  EXPECT_LE(s.p50_ns, 625000u);
  EXPECT_GE(s.p90_ns, 900000u);
  EXPECT_LE(s.p90_ns, 1125000u);
  EXPECT_GE(s.p99_ns, 990000u);
  EXPECT_LE(s.p99_ns, 1237500u);
  EXPECT_LE(s.p50_ns, s.p90_ns);
  EXPECT_LE(s.p90_ns, s.p99_ns);
}

TEST(LatencyHistogram, ConcurrentRecordsAreAllCounted) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 50000; ++i) h.Record(1000 * (t + 1));
    });
  }
  for (auto& t : threads) t.join();
  const LatencyHistogram::Summary s = h.Summarize();
  EXPECT_EQ(s.count, 200000u);
  EXPECT_GE(s.p50_ns, 2000u);
  EXPECT_GE(s.p99_ns, 4000u);
  EXPECT_LT(s.p99_ns, 5000u);
}

}  // namespace
}  // namespace ramster
