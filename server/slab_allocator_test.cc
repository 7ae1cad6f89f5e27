#include "server/slab_allocator.h"

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(SlabAllocator, ClassSizesRoundUpTo8) {
  EXPECT_EQ(SlabAllocator::ClassSize(1), 8u);
  EXPECT_EQ(SlabAllocator::ClassSize(8), 8u);
  EXPECT_EQ(SlabAllocator::ClassSize(9), 16u);
  EXPECT_EQ(SlabAllocator::ClassSize(2001), 2008u);
  EXPECT_EQ(SlabAllocator::ClassSize(4096), 4096u);
}

// Per object, what its class and chunk waste beyond its own length.
double AverageWaste(const SlabAllocator& slab, uint32_t from, uint32_t to) {
  double total = 0;
  for (uint32_t size = from; size <= to; ++size) {
    const uint32_t cls = SlabAllocator::ClassSize(size);
    const uint32_t chunk = slab.ChunkSizeFor(size);
    total += (cls - size) + static_cast<double>(chunk % cls) / (chunk / cls);
  }
  return total / (to - from + 1);
}

TEST(SlabAllocator, LargeNodesWasteLittlePerObjectSmallOnesKeepChunksSmall) {
  Budget large(uint64_t{16} << 30);
  SlabAllocator big(&large);
  // Compressed pages are mostly 800-3500 bytes.
  EXPECT_LE(AverageWaste(big, 800, 3500), 9.0);
  EXPECT_EQ(big.ChunkSizeFor(4096), 4096u);
  EXPECT_EQ(big.ChunkSizeFor(2048), 4096u);
  Budget small(4 << 20);
  SlabAllocator little(&small);
  for (uint32_t size = 1; size <= SlabAllocator::kMaxObjectSize; size += 7) {
    ASSERT_EQ(little.ChunkSizeFor(size), 4096u) << size;
  }
  EXPECT_GT(AverageWaste(little, 800, 3500), AverageWaste(big, 800, 3500));
}

TEST(SlabAllocator, ChargesChunksToTheBudgetAndReturnsThem) {
  Budget budget(1 << 20);
  {
    SlabAllocator slab(&budget);
    EXPECT_EQ(budget.used(), 0u);
    auto h = slab.Allocate(4096);
    ASSERT_TRUE(h.ok());
    // A 4096-byte class uses one-page chunks: exactly one page plus header.
    EXPECT_GE(budget.used(), 4096u);
    EXPECT_LT(budget.used(), 4096u + 128);
    EXPECT_EQ(slab.chunk_bytes(), 4096u);
    EXPECT_EQ(slab.object_bytes(), 4096u);
    slab.Free(*h);
    EXPECT_EQ(slab.chunk_bytes(), 0u);
    EXPECT_EQ(slab.object_bytes(), 0u);
    // The empty chunk stays mapped (and charged) in the cache for reuse...
    EXPECT_GE(budget.used(), 4096u);
    auto again = slab.Allocate(4000);
    ASSERT_TRUE(again.ok());
    EXPECT_LT(budget.used(), 4096u + 128);  // ...and is reused, not added to
    slab.Free(*again);
    slab.DropCache();
    EXPECT_EQ(budget.used(), 0u);
  }
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, ObjectsKeepTheirBytes) {
  Budget budget(64 << 20);
  SlabAllocator slab(&budget);
  std::mt19937 rng(1);
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> live;
  for (int i = 0; i < 5000; ++i) {
    uint32_t size = 1 + rng() % 4096;
    auto h = slab.Allocate(size);
    ASSERT_TRUE(h.ok());
    std::vector<uint8_t> bytes(size);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    std::memcpy(slab.Resolve(*h), bytes.data(), size);
    live.emplace_back(*h, std::move(bytes));
    if (rng() % 3 == 0) {
      size_t victim = rng() % live.size();
      slab.Free(live[victim].first);
      live[victim] = std::move(live.back());
      live.pop_back();
    }
  }
  uint64_t expect_objects = 0;
  for (const auto& [h, bytes] : live) {
    ASSERT_EQ(std::memcmp(slab.Resolve(h), bytes.data(), bytes.size()), 0);
    expect_objects += SlabAllocator::ClassSize(bytes.size());
  }
  EXPECT_EQ(slab.object_bytes(), expect_objects);
  // Chunks hold the objects, plus the partly used chunks of each class.
  EXPECT_GE(slab.chunk_bytes(), expect_objects);
  for (const auto& [h, bytes] : live) slab.Free(h);
  EXPECT_EQ(slab.chunk_bytes(), 0u);
  // What stays charged is the cache: at most its size plus chunk headers.
  EXPECT_LE(budget.used(), SlabAllocator::kMaxCachedBytes + SlabAllocator::kMaxCachedBytes / 4096 * 64);
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, RefusesBeyondTheBudget) {
  Budget budget(256 * 1024);
  SlabAllocator slab(&budget);
  std::vector<uint64_t> handles;
  for (;;) {
    auto h = slab.Allocate(4096);
    if (!h.ok()) {
      EXPECT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    handles.push_back(*h);
    ASSERT_LE(budget.used(), budget.limit());
  }
  // 4096-byte pages in one-page chunks, each charged a little over a page.
  EXPECT_EQ(handles.size(), 256u * 1024 / 4096 - 1);
  for (uint64_t h : handles) slab.Free(h);
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, CachedChunksMakeWayWhenTheBudgetIsTight) {
  Budget budget(256 * 1024);
  SlabAllocator slab(&budget);
  // Fill with one size, free everything (chunks go to the cache)...
  std::vector<uint64_t> handles;
  for (auto h = slab.Allocate(4096); h.ok(); h = slab.Allocate(4096)) handles.push_back(*h);
  for (uint64_t h : handles) slab.Free(h);
  // ...then another size needs the room: the cache is dropped for it.
  int small = 0;
  while (slab.Allocate(2000).ok()) ++small;
  EXPECT_GE(small, 100);
  EXPECT_LE(budget.used(), budget.limit());
}

TEST(SlabAllocator, RejectsOversizeObjects) {
  Budget budget(1 << 20);
  SlabAllocator slab(&budget);
  EXPECT_EQ(slab.Allocate(4097).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SlabAllocator, ConcurrentAllocationNeverPassesTheLimit) {
  Budget budget(8 << 20);
  SlabAllocator slab(&budget);
  std::vector<std::thread> threads;
  std::atomic<uint64_t> max_seen{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<uint64_t> mine;
      for (int i = 0; i < 20000; ++i) {
        if (mine.empty() || rng() % 3 != 0) {
          auto h = slab.Allocate(16 + rng() % 4080);
          if (h.ok()) {
            std::memset(slab.Resolve(*h), t, 16);
            mine.push_back(*h);
          }
        } else {
          slab.Free(mine.back());
          mine.pop_back();
        }
        uint64_t used = budget.used();
        uint64_t prev = max_seen.load();
        while (used > prev && !max_seen.compare_exchange_weak(prev, used)) {
        }
      }
      for (uint64_t h : mine) {
        EXPECT_EQ(slab.Resolve(h)[0], t);
        slab.Free(h);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(max_seen.load(), budget.limit());
  EXPECT_GT(max_seen.load(), budget.limit() / 2);  // it really filled up
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

}  // namespace
}  // namespace ramster
