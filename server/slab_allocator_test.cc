#include "server/slab_allocator.h"

#include <sys/resource.h>

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

TEST(SlabAllocator, ObjectsStraddlePagesSoOnlyTheirClassRoundingIsWasted) {
  Budget budget(uint64_t{1} << 30);
  SlabAllocator slab(&budget);
  // 10000 objects of 1850 bytes (class 1856): 4529 pages' worth, no tails.
  std::vector<uint64_t> handles;
  for (int i = 0; i < 10000; ++i) {
    auto h = slab.Allocate(1850);
    ASSERT_TRUE(h.ok());
    std::memset(slab.Resolve(*h), i & 0xff, 1850);
    handles.push_back(*h);
  }
  const uint64_t pages = (10000 * 1856 + 4095) / 4096;
  EXPECT_EQ(slab.page_bytes(), pages * 4096);
  EXPECT_EQ(budget.used(), pages * 4096);
  for (int i = 0; i < 10000; ++i) {
    const uint8_t* p = slab.Resolve(handles[i]);
    ASSERT_EQ(p[0], i & 0xff);
    ASSERT_EQ(p[1849], i & 0xff);
  }
  // Freeing the upper half gives its pages back (a few stay cached).
  for (int i = 5000; i < 10000; ++i) slab.Free(handles[i]);
  EXPECT_EQ(slab.page_bytes(), (5000 * 1856 + 4095) / 4096 * 4096);
  EXPECT_LE(budget.used(), slab.page_bytes() + SlabAllocator::kMaxCachedBytes);
  slab.DropCache();
  EXPECT_EQ(budget.used(), slab.page_bytes());
  // Freed slots are reused lowest first: a hole in the middle is filled
  // before the array grows.
  slab.Free(handles[100]);
  auto again = slab.Allocate(1849);  // same class
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, handles[100]);
  for (int i = 0; i < 5000; ++i) slab.Free(handles[i]);
  slab.DropCache();
  EXPECT_EQ(slab.page_bytes(), 0u);
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, ChargesPagesToTheBudgetAndReturnsThem) {
  Budget budget(1 << 20);
  {
    SlabAllocator slab(&budget);
    EXPECT_EQ(budget.used(), 0u);
    auto h = slab.Allocate(4096);
    ASSERT_TRUE(h.ok());
    // A 4096-byte object takes exactly one page.
    EXPECT_EQ(budget.used(), 4096u);
    EXPECT_EQ(slab.page_bytes(), 4096u);
    EXPECT_EQ(slab.object_bytes(), 4096u);
    slab.Free(*h);
    EXPECT_EQ(slab.page_bytes(), 0u);
    EXPECT_EQ(slab.object_bytes(), 0u);
    // The empty page stays committed (and charged) in the cache for reuse...
    EXPECT_EQ(budget.used(), 4096u);
    auto again = slab.Allocate(4090);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(budget.used(), 4096u);  // ...and is reused, not added to
    slab.Free(*again);
    slab.DropCache();
    EXPECT_EQ(budget.used(), 0u);
    // An object that is never freed is given back with the allocator.
    ASSERT_TRUE(slab.Allocate(100).ok());
    EXPECT_EQ(budget.used(), 4096u);
  }
  EXPECT_EQ(budget.used(), 0u);
}

// Minor page faults of the calling thread so far.
long ThreadMinorFaults() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return u.ru_minflt;
}

// Fills `pages` one-page objects, writing each; returns the page faults that
// took. The handles go to `handles`.
long FillAndCountFaults(SlabAllocator* slab, int pages, std::vector<uint64_t>* handles) {
  handles->clear();
  const long before = ThreadMinorFaults();
  for (int i = 0; i < pages; ++i) {
    auto h = slab->Allocate(4096);
    if (!h.ok()) return -1;
    std::memset(slab->Resolve(*h), i & 0xff, 4096);
    handles->push_back(*h);
  }
  return ThreadMinorFaults() - before;
}

TEST(SlabAllocator, PagesGivenBackLazilyAreReusedWithoutFaultsButAnEvictionGivesAtOnce) {
  // Four times the cache: most emptied pages go back to the kernel.
  constexpr int kPages = 4 * SlabAllocator::kMaxCachedBytes / 4096;
  Budget budget(uint64_t{1} << 30);
  SlabAllocator slab(&budget);
  std::vector<uint64_t> handles;
  // The first fill faults every page in.
  EXPECT_GE(FillAndCountFaults(&slab, kPages, &handles), kPages);
  for (uint64_t h : handles) slab.Free(h);
  // Uncharged at once, cache aside...
  EXPECT_EQ(slab.page_bytes(), 0u);
  EXPECT_LE(budget.used(), SlabAllocator::kMaxCachedBytes);
  // ...but given back lazily (MADV_FREE): with the kernel under no pressure
  // it still has them, and refilling them faults few (if any) in. The bound
  // leaves room for pages the kernel (or DAMON) took meanwhile.
  const long lazy = FillAndCountFaults(&slab, kPages, &handles);
  ASSERT_GE(lazy, 0);
  EXPECT_LT(lazy, kPages / 4);
  EXPECT_EQ(budget.used(), uint64_t{kPages} * 4096);
  // While the node evicts or shrinks (caching off), a freed page goes back
  // at once (MADV_DONTNEED): using it again faults a zeroed page in.
  slab.set_caching(false);
  for (uint64_t h : handles) slab.Free(h);
  slab.set_caching(true);
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_GE(FillAndCountFaults(&slab, kPages, &handles), kPages);
  for (int i = 0; i < kPages; ++i) {
    ASSERT_EQ(slab.Resolve(handles[i])[4095], i & 0xff);
  }
  for (uint64_t h : handles) slab.Free(h);
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, ReleaseLazyPagesGivesBackAtOnceWhatWentLazily) {
  constexpr int kPages = 4 * SlabAllocator::kMaxCachedBytes / 4096;
  constexpr int kCachePages = SlabAllocator::kMaxCachedBytes / 4096;
  Budget budget(uint64_t{1} << 30);
  SlabAllocator slab(&budget);
  std::vector<uint64_t> handles;
  ASSERT_GE(FillAndCountFaults(&slab, kPages, &handles), kPages);
  for (uint64_t h : handles) slab.Free(h);
  slab.ReleaseLazyPages();
  // The cache keeps its pages (committed and charged); every other page
  // faults in again.
  EXPECT_GE(FillAndCountFaults(&slab, kPages, &handles), kPages - kCachePages);
  for (int i = 0; i < kPages; ++i) {
    ASSERT_EQ(slab.Resolve(handles[i])[0], i & 0xff);
  }
  // Live objects are untouched by it.
  slab.ReleaseLazyPages();
  for (int i = 0; i < kPages; ++i) {
    ASSERT_EQ(slab.Resolve(handles[i])[4095], i & 0xff);
  }
  for (uint64_t h : handles) slab.Free(h);
  slab.DropCache();
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
    if (i % 2 == 0) {
      slab.PrepareWrite(*h, size);
      slab.Write(*h, bytes.data(), size);
    } else {
      std::memcpy(slab.Resolve(*h), bytes.data(), size);
    }
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
  // Pages hold the objects, plus the partly used pages of each class.
  EXPECT_GE(slab.page_bytes(), expect_objects);
  for (const auto& [h, bytes] : live) slab.Free(h);
  EXPECT_EQ(slab.page_bytes(), 0u);
  // What stays charged is the cache.
  EXPECT_LE(budget.used(), SlabAllocator::kMaxCachedBytes);
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

// Write streams whole cache lines and copies the partial ones at the ends:
// every start within a line (objects are 8-byte aligned) and every length
// around line boundaries writes exactly its bytes, and nothing beside them.
TEST(SlabAllocator, WriteCopiesExactlyItsBytesAtEveryAlignment) {
  Budget budget(64 << 20);
  SlabAllocator slab(&budget);
  std::mt19937 rng(7);
  const uint32_t sizes[] = {1, 7, 8, 63, 64, 65, 127, 128, 129, 191, 192, 200,
                            255, 256, 1000, 2047, 2048, 2100, 4095, 4096};
  for (uint32_t size : sizes) {
    const uint32_t object = SlabAllocator::ClassSize(size);
    // Neighbours of one class start at different places within a line
    // (every multiple of 8 for class sizes such as 200 or 2104); for a class
    // size that is a multiple of 64 all of them start a line (each class's
    // array starts on a page).
    std::vector<uint64_t> handles;
    for (int i = 0; i < 10; ++i) {
      auto h = slab.Allocate(size);
      ASSERT_TRUE(h.ok());
      handles.push_back(*h);
    }
    for (size_t i = 1; i < handles.size(); ++i) {
      ASSERT_EQ(slab.Resolve(handles[i]), slab.Resolve(handles[i - 1]) + object);
    }
    uint8_t* first = slab.Resolve(handles[0]);
    const size_t span = handles.size() * object;
    std::memset(first, 0xA5, span);
    std::vector<uint8_t> expect(first, first + span);
    for (size_t i = 1; i + 1 < handles.size(); ++i) {
      // The object's own length, and less: a payload shorter than its class.
      const uint32_t length = i % 2 == 0 ? size : 1 + rng() % size;
      std::vector<uint8_t> bytes(length);
      for (auto& b : bytes) b = static_cast<uint8_t>(rng());
      slab.PrepareWrite(handles[i], length);
      slab.Write(handles[i], bytes.data(), length);
      std::memcpy(expect.data() + i * object, bytes.data(), length);
    }
    for (size_t at = 0; at < span; ++at) {
      ASSERT_EQ(first[at], expect[at]) << "size " << size << ", byte " << at
                                       << " (object " << at / object << ")";
    }
    for (uint64_t h : handles) slab.Free(h);
  }
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
  // 4096-byte objects, one page each.
  EXPECT_EQ(handles.size(), 256u * 1024 / 4096);
  for (uint64_t h : handles) slab.Free(h);
  slab.DropCache();
  EXPECT_EQ(budget.used(), 0u);
}

TEST(SlabAllocator, CachedChunksMakeWayWhenTheBudgetIsTight) {
  Budget budget(256 * 1024);
  SlabAllocator slab(&budget);
  // Fill with one size, free everything (pages go to the cache)...
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
