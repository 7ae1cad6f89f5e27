#include "client/tier_stack.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "client/fault_tier.h"
#include "client/local_cache_tier.h"
#include "client/local_file_tier.h"
#include "gtest/gtest.h"

namespace ramster {
namespace {

std::string TempFile() {
  std::string tmpl =
      std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") + "/swap_XXXXXX";
  int fd = mkstemp(tmpl.data());
  close(fd);
  return tmpl;
}

std::vector<uint8_t> Page(uint64_t seed, int kind) {
  std::vector<uint8_t> p(kPageSize);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < kPageSize; ++i) {
    switch (kind % 3) {
      case 0: p[i] = static_cast<uint8_t>(seed); break;  // same-filled
      case 1: p[i] = static_cast<uint8_t>("page text "[(i + seed) % 10]); break;
      default: p[i] = static_cast<uint8_t>(rng()); break;
    }
  }
  return p;
}

struct Stack {
  FaultTier* cache;
  FaultTier* file;
  std::unique_ptr<TierStack> stack;
};

Stack MakeStack(uint64_t slots, uint64_t cache_bytes, FaultTier::Faults cache_faults = {},
                FaultTier::Faults file_faults = {}) {
  auto file = LocalFileTier::Open(TempFile(), slots);
  EXPECT_TRUE(file.ok()) << file.status();
  auto cache = std::make_unique<FaultTier>(std::make_unique<LocalCacheTier>(cache_bytes),
                                           cache_faults);
  auto filef = std::make_unique<FaultTier>(std::move(*file), file_faults);
  Stack s{cache.get(), filef.get(), nullptr};
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(cache));
  tiers.push_back(std::move(filef));
  s.stack = std::make_unique<TierStack>(slots, 1, std::move(tiers));
  return s;
}

TEST(TierStack, NeverWrittenSlotsReadAsZerosWithoutAskingAnyTier) {
  auto s = MakeStack(64, 1 << 20, FaultTier::Faults{.fail_load_every = 1});
  std::vector<uint8_t> out(kPageSize, 0xFF);
  ASSERT_TRUE(s.stack->Load(5, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(kPageSize, 0));
  EXPECT_EQ(s.stack->stats().zero_loads, 1u);
}

TEST(TierStack, SameFilledPagesStayInTheSlotMap) {
  auto s = MakeStack(64, 1 << 20, FaultTier::Faults{.refuse_all_stores = true},
                     FaultTier::Faults{.refuse_all_stores = true});
  auto page = Page(0xAB, 0);
  ASSERT_TRUE(s.stack->Store(3, page).ok());  // no tier was needed
  std::vector<uint8_t> out(kPageSize);
  ASSERT_TRUE(s.stack->Load(3, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, page);
  auto st = s.stack->stats();
  EXPECT_EQ(st.same_filled, 1u);
  EXPECT_EQ(st.slots_filled, 1u);
}

TEST(TierStack, FullCacheFallsToTheFile) {
  // Room for about 3 incompressible pages in the cache.
  auto s = MakeStack(64, 3 * (kPageSize + LocalCacheTier::kEntryOverhead));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s.stack->Store(i, Page(i, 2)).ok());
  auto st = s.stack->stats();
  EXPECT_EQ(st.slots_in[0], 3u);
  EXPECT_EQ(st.slots_in[1], 7u);
  EXPECT_EQ(st.refused_by[0], 7u);
  for (int i = 0; i < 10; ++i) {
    std::vector<uint8_t> out(kPageSize);
    ASSERT_TRUE(s.stack->Load(i, absl::MakeSpan(out)).ok());
    EXPECT_EQ(out, Page(i, 2));
  }
}

TEST(TierStack, EveryTierRefusingFailsTheStoreAndKeepsTheOldPage) {
  auto s = MakeStack(8, 1 << 20);
  ASSERT_TRUE(s.stack->Store(1, Page(1, 1)).ok());
  s.cache->set_refuse_all_stores(true);
  s.file->set_refuse_all_stores(true);
  EXPECT_EQ(s.stack->Store(1, Page(2, 1)).code(), absl::StatusCode::kResourceExhausted);
  std::vector<uint8_t> out(kPageSize);
  ASSERT_TRUE(s.stack->Load(1, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, Page(1, 1));
}

TEST(TierStack, CorruptCopyIsAnErrorNeverWrongBytes) {
  auto s = MakeStack(8, 1 << 20, FaultTier::Faults{.corrupt_load_every = 1});
  ASSERT_TRUE(s.stack->Store(2, Page(9, 1)).ok());
  std::vector<uint8_t> out(kPageSize);
  absl::Status st = s.stack->Load(2, absl::MakeSpan(out));
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.stack->stats().load_failures, 1u);
}

TEST(TierStack, InvalidateFreesAndReadsZeros) {
  auto s = MakeStack(16, 1 << 20);
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(s.stack->Store(i, Page(i, 1)).ok());
  s.stack->Invalidate(4, 8);
  s.stack->Invalidate(15, 1000);  // clipped at the device's end
  for (int i = 0; i < 16; ++i) {
    std::vector<uint8_t> out(kPageSize);
    ASSERT_TRUE(s.stack->Load(i, absl::MakeSpan(out)).ok());
    bool gone = (i >= 4 && i < 12) || i == 15;
    EXPECT_EQ(out, gone ? std::vector<uint8_t>(kPageSize, 0) : Page(i, 1)) << i;
  }
  EXPECT_EQ(s.stack->stats().slots_in[0], 7u);
}

TEST(TierStack, OutOfRangeSlotsAreInvalidArgument) {
  auto s = MakeStack(8, 1 << 20);
  std::vector<uint8_t> out(kPageSize);
  EXPECT_EQ(s.stack->Store(8, Page(1, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.stack->Load(8, absl::MakeSpan(out)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TierStack, RangesStoreAndLoadManyPagesAtOnce) {
  // Room for about 20 incompressible pages in the cache; the rest of the
  // range goes to the file in the same call.
  auto s = MakeStack(1024, 20 * (kPageSize + LocalCacheTier::kEntryOverhead));
  const uint64_t kFirst = 100, kPages = 600;  // more than one internal batch
  std::vector<uint8_t> data;
  for (uint64_t i = 0; i < kPages; ++i) {
    auto p = Page(1000 + i, static_cast<int>(i % 3));
    data.insert(data.end(), p.begin(), p.end());
  }
  ASSERT_TRUE(s.stack->StoreRange(kFirst, data).ok());
  auto st = s.stack->stats();
  EXPECT_EQ(st.slots_in[0] + st.slots_in[1] + st.slots_filled, kPages);
  EXPECT_GT(st.slots_in[1], 0u);
  EXPECT_EQ(st.slots_filled, kPages / 3);
  // Read back as a range, and page by page, and across the range's edges.
  std::vector<uint8_t> out(data.size());
  ASSERT_TRUE(s.stack->LoadRange(kFirst, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, data);
  for (uint64_t i = 0; i < kPages; i += 37) {
    std::vector<uint8_t> one(kPageSize);
    ASSERT_TRUE(s.stack->Load(kFirst + i, absl::MakeSpan(one)).ok());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), data.begin() + i * kPageSize));
  }
  std::vector<uint8_t> edge(3 * kPageSize);
  ASSERT_TRUE(s.stack->LoadRange(kFirst - 1, absl::MakeSpan(edge)).ok());
  EXPECT_EQ(std::vector<uint8_t>(edge.begin(), edge.begin() + kPageSize),
            std::vector<uint8_t>(kPageSize, 0));
  EXPECT_TRUE(std::equal(edge.begin() + kPageSize, edge.end(), data.begin()));
  // Bad ranges.
  EXPECT_EQ(s.stack->StoreRange(1020, data).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.stack->StoreRange(0, absl::MakeConstSpan(data.data(), 100)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.stack->LoadRange(1024, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TierStack, RangeFailureLeavesOtherPagesIntact) {
  auto s = MakeStack(64, 1 << 20);
  std::vector<uint8_t> data;
  for (int i = 0; i < 8; ++i) {
    auto p = Page(50 + i, 1);
    data.insert(data.end(), p.begin(), p.end());
  }
  ASSERT_TRUE(s.stack->StoreRange(0, data).ok());
  s.cache->set_refuse_all_stores(true);
  s.file->set_refuse_all_stores(true);
  std::vector<uint8_t> other(data.size(), 0);
  for (size_t i = 0; i < other.size(); ++i) other[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(s.stack->StoreRange(0, other).code(), absl::StatusCode::kResourceExhausted);
  std::vector<uint8_t> out(data.size());
  ASSERT_TRUE(s.stack->LoadRange(0, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, data);  // a refused write leaves the old contents
}

// Random operations from several threads, each on its own slots, checked
// against a model of what every slot must contain. Faults on the first tier
// (refusals, failed stores) must never show in what is read back.
TEST(TierStack, RandomOperationsMatchTheModel) {
  const uint64_t kSlots = 512;
  auto s = MakeStack(kSlots, 200 * kPageSize,
                     FaultTier::Faults{.refuse_store_every = 7, .fail_store_every = 11});
  const int kThreads = 4;
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, checks{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      std::map<uint64_t, std::vector<uint8_t>> model;  // slot -> contents
      for (int op = 0; op < 3000; ++op) {
        uint64_t slot = (rng() % (kSlots / kThreads)) * kThreads + t;
        switch (rng() % 5) {
          case 0:
          case 1: {
            auto page = Page(rng(), static_cast<int>(rng() % 3));
            if (s.stack->Store(slot, page).ok()) model[slot] = page;
            break;
          }
          case 4: {
            // A range of this thread's own slots... which are not adjacent
            // (threads interleave), so read a range and check each page.
            uint64_t base = (rng() % (kSlots / kThreads - 4)) * kThreads;
            std::vector<uint8_t> out(4 * kThreads * kPageSize);
            if (!s.stack->LoadRange(base, absl::MakeSpan(out)).ok()) {
              mismatches++;
              break;
            }
            for (int k = 0; k < 4; ++k) {
              uint64_t mine = base + k * kThreads + t;
              auto it = model.find(mine);
              const auto expect =
                  it == model.end() ? std::vector<uint8_t>(kPageSize, 0) : it->second;
              if (!std::equal(expect.begin(), expect.end(),
                              out.begin() + (mine - base) * kPageSize)) {
                mismatches++;
              }
              checks++;
            }
            break;
          }
          case 2: {
            std::vector<uint8_t> out(kPageSize);
            if (!s.stack->Load(slot, absl::MakeSpan(out)).ok()) {
              mismatches++;
              break;
            }
            auto it = model.find(slot);
            const auto expect = it == model.end() ? std::vector<uint8_t>(kPageSize, 0) : it->second;
            if (out != expect) mismatches++;
            checks++;
            break;
          }
          case 3:
            s.stack->Invalidate(slot, 1);
            model.erase(slot);
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(checks.load(), 2000);
  auto st = s.stack->stats();
  EXPECT_GT(st.refused_by[0], 0u);  // the faults really happened
  EXPECT_GT(st.stored_in[1], 0u);   // and the file took over
  EXPECT_EQ(st.load_failures, 0u);
}

// ---- scattered batches (StoreSlots / LoadSlots) ---------------------------------

std::vector<uint8_t> Zeros() { return std::vector<uint8_t>(kPageSize, 0); }

// A stack of one tier (a cache, behind a FaultTier), so that a refused
// store or a failed load is final.
struct OneTier {
  FaultTier* cache;
  std::unique_ptr<TierStack> stack;
};
OneTier MakeOneTierStack(uint64_t slots, FaultTier::Faults faults) {
  auto cache = std::make_unique<FaultTier>(std::make_unique<LocalCacheTier>(8 << 20), faults);
  OneTier s{cache.get(), nullptr};
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(cache));
  s.stack = std::make_unique<TierStack>(slots, 1, std::move(tiers));
  return s;
}

TEST(TierStack, ScatteredSlotsStoreAndLoadEachWithItsOwnOutcome) {
  auto s = MakeStack(1024, 1 << 20);
  // More than one group of locks (70 pages), slots in no order, spread
  // over the stripes, one repeated within a group (the later store wins),
  // one beyond the device (fails alone), same-filled pages among them.
  std::vector<uint64_t> slots;
  for (uint64_t i = 0; i < 70; ++i) slots.push_back((i * 389) % 1000);
  slots.insert(slots.begin() + 10, slots[3]);
  slots.push_back(5000);
  std::vector<std::vector<uint8_t>> pages;
  for (size_t i = 0; i < slots.size(); ++i) pages.push_back(Page(700 + i, static_cast<int>(i)));
  std::vector<TierStack::SlotStore> stores;
  for (size_t i = 0; i < slots.size(); ++i) stores.push_back({slots[i], pages[i], {}});
  s.stack->StoreSlots(absl::MakeSpan(stores));
  for (size_t i = 0; i + 1 < stores.size(); ++i) EXPECT_TRUE(stores[i].status.ok()) << i;
  EXPECT_EQ(stores.back().status.code(), absl::StatusCode::kInvalidArgument);

  std::map<uint64_t, std::vector<uint8_t>> expect;
  for (size_t i = 0; i + 1 < slots.size(); ++i) expect[slots[i]] = pages[i];
  // Read back in another order, with never-written slots, a repeat and a
  // short buffer among them.
  std::vector<uint64_t> order(expect.size());
  std::transform(expect.begin(), expect.end(), order.begin(), [](auto& kv) { return kv.first; });
  std::reverse(order.begin(), order.end());
  order.push_back(1001);
  order.push_back(1002);
  order.push_back(order[0]);
  std::vector<std::vector<uint8_t>> out(order.size(), std::vector<uint8_t>(kPageSize, 0xEE));
  std::vector<uint8_t> shorter(100);
  std::vector<TierStack::SlotLoad> loads;
  for (size_t i = 0; i < order.size(); ++i) loads.push_back({order[i], absl::MakeSpan(out[i]), {}});
  loads.push_back({3, absl::MakeSpan(shorter), {}});
  s.stack->LoadSlots(absl::MakeSpan(loads));
  for (size_t i = 0; i < order.size(); ++i) {
    ASSERT_TRUE(loads[i].status.ok()) << i << ": " << loads[i].status;
    auto it = expect.find(order[i]);
    EXPECT_EQ(out[i], it == expect.end() ? Zeros() : it->second) << order[i];
  }
  EXPECT_EQ(loads.back().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(expect[slots[3]], pages[10]);  // what the loop above compared
}

TEST(TierStack, PagesThatFailInABatchFailAloneAndKeepTheirOldContents) {
  // Every third store and every fourth load of the one tier fails.
  auto s = MakeOneTierStack(256, FaultTier::Faults{.refuse_store_every = 3});
  std::vector<std::vector<uint8_t>> old_pages, new_pages;
  std::vector<TierStack::SlotStore> stores;
  for (uint64_t i = 0; i < 30; ++i) old_pages.push_back(Page(100 + i, 1));
  for (uint64_t i = 0; i < 30; ++i) stores.push_back({i * 7, old_pages[i], {}});
  s.stack->StoreSlots(absl::MakeSpan(stores));
  // Calls 3, 6, 9, ... of the tier were refused: pages 2, 5, 8, ...
  for (uint64_t i = 0; i < 30; ++i) {
    EXPECT_EQ(stores[i].status.code(), i % 3 == 2 ? absl::StatusCode::kResourceExhausted
                                                  : absl::StatusCode::kOk)
        << i;
  }
  // One more store moves the count on, so that the overwrite below has
  // pages 1, 4, 7, ... refused (tier calls 33, 36, ...): they keep the old
  // page; pages 2, 5, ... (refused before) now get theirs.
  ASSERT_TRUE(s.stack->Store(250, Page(99, 1)).ok());
  for (uint64_t i = 0; i < 30; ++i) new_pages.push_back(Page(200 + i, 1));
  for (uint64_t i = 0; i < 30; ++i) stores[i] = {i * 7, new_pages[i], {}};
  s.stack->StoreSlots(absl::MakeSpan(stores));
  std::vector<std::vector<uint8_t>> expect(30);
  for (uint64_t i = 0; i < 30; ++i) {
    const bool refused_now = i % 3 == 1;
    EXPECT_EQ(stores[i].status.ok(), !refused_now) << i;
    expect[i] = refused_now ? old_pages[i] : new_pages[i];
  }
  for (uint64_t i = 0; i < 30; ++i) {
    std::vector<uint8_t> out(kPageSize);
    ASSERT_TRUE(s.stack->Load(i * 7, absl::MakeSpan(out)).ok());
    EXPECT_EQ(out, expect[i]) << i;
  }

  // Loads: every fourth load of the tier fails, and only its page.
  auto l = MakeOneTierStack(256, FaultTier::Faults{.fail_load_every = 4});
  std::vector<TierStack::SlotStore> fill;
  for (uint64_t i = 0; i < 30; ++i) fill.push_back({i * 5, new_pages[i], {}});
  l.stack->StoreSlots(absl::MakeSpan(fill));
  for (auto& f : fill) ASSERT_TRUE(f.status.ok());
  std::vector<std::vector<uint8_t>> out(30, std::vector<uint8_t>(kPageSize));
  std::vector<TierStack::SlotLoad> loads;
  for (uint64_t i = 0; i < 30; ++i) loads.push_back({i * 5, absl::MakeSpan(out[i]), {}});
  l.stack->LoadSlots(absl::MakeSpan(loads));
  for (uint64_t i = 0; i < 30; ++i) {
    if (i % 4 == 3) {
      EXPECT_EQ(loads[i].status.code(), absl::StatusCode::kDataLoss) << i;
    } else {
      ASSERT_TRUE(loads[i].status.ok()) << i;
      EXPECT_EQ(out[i], new_pages[i]) << i;
    }
  }
  EXPECT_EQ(l.stack->stats().load_failures, 7u);
}

// Threads storing and loading scattered batches of their own slots, in
// every order, with the slots of different threads on the same stripes: no
// deadlock, and every load matches the model.
TEST(TierStack, ConcurrentScatteredBatchesMatchTheModel) {
  const uint64_t kSlots = 2 * 4096;  // each stripe holds two slots
  auto s = MakeStack(kSlots, 300 * kPageSize,
                     FaultTier::Faults{.refuse_store_every = 5, .fail_store_every = 13});
  const int kThreads = 4;
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, failures{0}, checks{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 11);
      std::map<uint64_t, std::vector<uint8_t>> model;
      // Thread t owns the slots s with (s + s / 4096) % 4 == t; slots s and
      // s + 4096 share a stripe and belong to neighbouring threads.
      const auto my_slot = [&](uint64_t r) {
        const uint64_t half = r % 2, base = (r / 2) % 1024;
        return half * 4096 + 4 * base + (static_cast<uint64_t>(t) + 4 - half) % 4;
      };
      for (int round = 0; round < 200; ++round) {
        const size_t n = 1 + rng() % 40;
        std::vector<uint64_t> slots(n);
        for (auto& slot : slots) slot = my_slot(rng());
        if (rng() % 2 == 0) {
          std::vector<std::vector<uint8_t>> pages(n);
          std::vector<TierStack::SlotStore> stores(n);
          for (size_t i = 0; i < n; ++i) {
            pages[i] = Page(rng(), static_cast<int>(rng() % 3));
            stores[i] = {slots[i], pages[i], {}};
          }
          s.stack->StoreSlots(absl::MakeSpan(stores));
          for (size_t i = 0; i < n; ++i) {
            if (stores[i].status.ok()) {
              model[slots[i]] = pages[i];
            } else {
              failures++;  // every tier refused: the file never does
            }
          }
        } else {
          std::vector<std::vector<uint8_t>> out(n, std::vector<uint8_t>(kPageSize));
          std::vector<TierStack::SlotLoad> loads(n);
          for (size_t i = 0; i < n; ++i) loads[i] = {slots[i], absl::MakeSpan(out[i]), {}};
          s.stack->LoadSlots(absl::MakeSpan(loads));
          for (size_t i = 0; i < n; ++i) {
            auto it = model.find(slots[i]);
            if (!loads[i].status.ok() || out[i] != (it == model.end() ? Zeros() : it->second)) {
              mismatches++;
            }
            checks++;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(checks.load(), 1000);
  auto st = s.stack->stats();
  EXPECT_GT(st.refused_by[0], 0u);
  EXPECT_GT(st.stored_in[1], 0u);
}

}  // namespace
}  // namespace ramster
