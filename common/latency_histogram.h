// LatencyHistogram: how long something took, counted in buckets a quarter
// of a power of two wide, so that a percentile is known to within 19%
// (HdrHistogram's idea at its coarsest). Recording is one relaxed atomic
// add; reading walks 252 counters. Values are nanoseconds.
//
//   LatencyHistogram h;
//   h.Record(absl::GetCurrentTimeNanos() - start);
//   LatencyHistogram::Summary s = h.Summarize();  // s.p50_ns, s.p99_ns, ...
//
// Thread safety: Record and Summarize may run concurrently; a summary taken
// while others record is a consistent enough snapshot for statistics.
#ifndef RAMSTER_COMMON_LATENCY_HISTOGRAM_H_
#define RAMSTER_COMMON_LATENCY_HISTOGRAM_H_

#include <atomic>
#include <cstdint>

namespace ramster {

class LatencyHistogram {
 public:
  // Values 0..3 have a bucket each; from 4 on, each power of two has four.
  static constexpr int kBuckets = 4 + 4 * 62;

  void Record(int64_t ns) {
    counts_[Bucket(ns < 0 ? 0 : static_cast<uint64_t>(ns))].fetch_add(
        1, std::memory_order_relaxed);
  }

  struct Summary {
    uint64_t count = 0;
    // Upper bounds of the buckets holding the percentiles (0 when empty).
    uint64_t p50_ns = 0, p90_ns = 0, p99_ns = 0;
  };
  Summary Summarize() const {
    uint64_t counts[kBuckets];
    Summary s;
    for (int i = 0; i < kBuckets; ++i) {
      counts[i] = counts_[i].load(std::memory_order_relaxed);
      s.count += counts[i];
    }
    s.p50_ns = Percentile(counts, s.count, 50);
    s.p90_ns = Percentile(counts, s.count, 90);
    s.p99_ns = Percentile(counts, s.count, 99);
    return s;
  }

  static int Bucket(uint64_t v) {
    if (v < 4) return static_cast<int>(v);
    const int e = 63 - __builtin_clzll(v);  // 2..63
    return 4 * (e - 1) + static_cast<int>((v >> (e - 2)) & 3);
  }
  // The smallest value of bucket `i`; of bucket kBuckets, 2^64 - 1.
  static uint64_t LowerBound(int i) {
    if (i < 4) return static_cast<uint64_t>(i);
    if (i >= kBuckets) return ~uint64_t{0};
    const int e = i / 4 + 1;
    return (uint64_t{4} + static_cast<uint64_t>(i % 4)) << (e - 2);
  }

 private:
  static uint64_t Percentile(const uint64_t* counts, uint64_t total, int percent) {
    if (total == 0) return 0;
    // The smallest bucket that holds at least percent% of the values.
    const uint64_t want = (total * static_cast<uint64_t>(percent) + 99) / 100;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts[i];
      if (seen >= want) return LowerBound(i + 1) - 1;
    }
    return ~uint64_t{0};
  }

  std::atomic<uint64_t> counts_[kBuckets] = {};
};

}  // namespace ramster

#endif  // RAMSTER_COMMON_LATENCY_HISTOGRAM_H_
