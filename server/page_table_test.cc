#include "server/page_table.h"

#include <map>
#include <random>
#include <set>
#include <tuple>

#include "gtest/gtest.h"

namespace ramster {
namespace {

using Model = std::map<std::tuple<uint32_t, uint32_t, uint64_t, uint64_t>, uint32_t>;

PageEntry EntryFor(uint32_t generation) {
  return PageEntry(generation, 0x0123456789abcdefULL ^ generation, generation % 4097,
                   generation % 4, PageEntry::kInRam);
}

TEST(PageEntry, PacksEveryFieldIn20Bytes) {
  PageEntry e(0xfffffffeu, 0xfedcba9876543210ULL, 4096, 3, PageEntry::kEphemeral);
  e.set_handle(PageEntry::kMaxHandle);
  EXPECT_EQ(e.generation(), 0xfffffffeu);
  EXPECT_EQ(e.checksum(), 0xfedcba9876543210ULL);
  EXPECT_EQ(e.length(), 4096u);
  EXPECT_EQ(e.encoding(), 3);
  EXPECT_EQ(e.handle(), PageEntry::kMaxHandle);
  EXPECT_FALSE(e.in_ram());
  e.set_flag(PageEntry::kInRam);
  e.clear_flag(PageEntry::kEphemeral);
  EXPECT_EQ(e.flags(), PageEntry::kInRam);
  e.set_handle(0x12'3456'789aULL);
  EXPECT_EQ(e.handle(), 0x12'3456'789aULL);
}

TEST(PageTable, DenseRunsCostTheirEntriesAndLittleMore) {
  PageTable t;
  uint64_t grew = 0;
  for (uint64_t i = 0; i < 64 * 100; ++i) {
    int64_t g = t.Insert({1, 2, 3, i}, EntryFor(static_cast<uint32_t>(i)));
    ASSERT_GE(g, 0);
    grew += g;
  }
  EXPECT_EQ(t.entries(), 6400u);
  EXPECT_EQ(t.bytes(), grew);
  // 100 full blocks: 64 entries each plus one block's overhead.
  EXPECT_EQ(t.bytes(), 100 * (PageTable::kBlockOverhead + 64 * sizeof(PageEntry)));
  EXPECT_LE(static_cast<double>(t.bytes()) / t.entries(), 21.6);
  for (uint64_t i = 0; i < 6400; ++i) {
    PageEntry* e = t.Find({1, 2, 3, i});
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->generation(), i);
  }
  EXPECT_EQ(t.Find({1, 2, 3, 6400}), nullptr);
  EXPECT_EQ(t.Find({1, 2, 4, 0}), nullptr);  // another object
  EXPECT_EQ(t.Find({2, 2, 3, 0}), nullptr);  // another client
}

TEST(PageTable, EmptyingABlockShrinksItStepByStepThenFreesIt) {
  PageTable t;
  for (uint64_t i = 0; i < 64; ++i) ASSERT_GE(t.Insert({1, 0, 0, i}, EntryFor(1)), 0);
  const uint64_t full = t.bytes();
  uint64_t freed = 0;
  int shrinks = 0;
  for (uint64_t i = 0; i < 63; ++i) {
    const uint64_t f = t.Erase({1, 0, 0, i});
    shrinks += f > 0;
    freed += f;
    // Never more than two growth steps unused.
    EXPECT_LT(t.bytes(), PageTable::kBlockOverhead +
                             (64 - i - 1 + 2 * PageTable::kGrowthStep) * sizeof(PageEntry));
    EXPECT_EQ(t.bytes(), full - freed);
  }
  EXPECT_EQ(shrinks, 7);  // at 56, 48, ..., 8 entries left
  ASSERT_NE(t.Find({1, 0, 0, 63}), nullptr);
  freed += t.Erase({1, 0, 0, 63});
  EXPECT_EQ(freed, full);
  EXPECT_EQ(t.bytes(), 0u);
}

TEST(PageTable, ScatteredPagesCostOneSmallBlockEach) {
  PageTable t;
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(t.Insert({1, 0, i * 7919, i * 1000003}, EntryFor(1)),
              static_cast<int64_t>(PageTable::kMaxInsertBytes));
  }
  EXPECT_EQ(t.bytes(), 1000 * PageTable::kMaxInsertBytes);
  // Removing them all gives every byte back.
  uint64_t freed = 0;
  for (uint64_t i = 0; i < 1000; ++i) freed += t.Erase({1, 0, i * 7919, i * 1000003});
  EXPECT_EQ(freed, 1000 * PageTable::kMaxInsertBytes);
  EXPECT_EQ(t.bytes(), 0u);
  EXPECT_EQ(t.entries(), 0u);
}

// Random inserts, erases, RemoveIf and RemoveRange against a std::map; the
// byte count always equals what the calls reported.
TEST(PageTable, AWalkInPiecesSeesEveryEntryOnceThenStartsOver) {
  PageTable t;
  std::set<uint64_t> keys;
  for (uint64_t i = 0; i < 40; ++i) {
    const uint64_t index = i * 97;  // scattered: blocks of one or two entries
    keys.insert(index);
    ASSERT_GE(t.Insert({1, 1, 0, index}, EntryFor(1)), 0);
  }
  for (uint64_t i = 0; i < 64; ++i) {  // and one full block
    keys.insert(100000 + i);
    ASSERT_GE(t.Insert({1, 1, 0, 100000 + i}, EntryFor(1)), 0);
  }
  for (int round = 0; round < 2; ++round) {
    PageTable::Cursor cursor;
    std::multiset<uint64_t> seen;
    int calls = 0;
    bool more = true;
    while (more) {
      ++calls;
      more = t.ForEachFrom(&cursor, 3, [&](const PageTableKey& k, PageEntry&) {
        seen.insert(k.index);
      });
      ASSERT_LT(calls, 100);
    }
    EXPECT_EQ(seen, std::multiset<uint64_t>(keys.begin(), keys.end()));
    EXPECT_GT(calls, 5);  // it really went in pieces
    // At the end the cursor starts over: the next piece is the first one.
    std::multiset<uint64_t> again;
    t.ForEachFrom(&cursor, 1000, [&](const PageTableKey& k, PageEntry&) { again.insert(k.index); });
    EXPECT_EQ(again, seen);
  }
}

TEST(PageTable, AWalkWhoseBlockIsGoneStartsOver) {
  PageTable t;
  for (uint64_t b = 0; b < 10; ++b) ASSERT_GE(t.Insert({1, 1, 0, b * 64}, EntryFor(1)), 0);
  PageTable::Cursor cursor;
  uint64_t last = 0;
  int n = 0;
  ASSERT_TRUE(t.ForEachFrom(&cursor, 4, [&](const PageTableKey& k, PageEntry&) {
    last = k.index;
    ++n;
  }));
  ASSERT_EQ(n, 4);
  t.Erase({1, 1, 0, last});  // the block the cursor stopped at
  std::set<uint64_t> seen;
  while (t.ForEachFrom(&cursor, 2, [&](const PageTableKey& k, PageEntry&) {
    seen.insert(k.index);
  })) {
  }
  EXPECT_EQ(seen.size(), 9u);  // all that is left, from the first block on
  EXPECT_EQ(seen.count(last), 0u);
  // An empty table has nothing to walk.
  PageTable empty;
  PageTable::Cursor c2;
  EXPECT_FALSE(empty.ForEachFrom(&c2, 4, [&](const PageTableKey&, PageEntry&) { ADD_FAILURE(); }));
}

TEST(PageTable, BehavesLikeAMapAndAccountsEveryByte) {
  std::mt19937_64 rng(7);
  PageTable t;
  Model model;
  int64_t accounted = 0;
  for (int step = 0; step < 200000; ++step) {
    const uint32_t client = rng() % 3, pool = rng() % 2;
    const uint64_t object = rng() % 3, index = rng() % 300;
    const auto key = std::make_tuple(client, pool, object, index);
    const int op = static_cast<int>(rng() % 100);
    if (op < 55) {
      PageEntry* e = t.Find({client, pool, object, index});
      if (model.count(key)) {
        ASSERT_NE(e, nullptr);
        ASSERT_EQ(e->generation(), model[key]);
        *e = EntryFor(model[key] = static_cast<uint32_t>(step));
      } else {
        ASSERT_EQ(e, nullptr);
        int64_t g = t.Insert({client, pool, object, index}, EntryFor(static_cast<uint32_t>(step)));
        ASSERT_GE(g, 0);
        ASSERT_LE(static_cast<uint64_t>(g), PageTable::kMaxInsertBytes);
        accounted += g;
        model[key] = static_cast<uint32_t>(step);
      }
    } else if (op < 95) {
      accounted -= t.Erase({client, pool, object, index});
      model.erase(key);
    } else if (op < 98) {
      // Drop the entries of odd generation.
      t.RemoveIf(
          [&](const PageTableKey& k, PageEntry& e) {
            EXPECT_EQ(model.at({k.client, k.pool, k.object, k.index}), e.generation());
            return e.generation() % 2 == 1;
          },
          [&](uint32_t, uint64_t bytes) { accounted -= bytes; });
      for (auto it = model.begin(); it != model.end();) {
        it = it->second % 2 == 1 ? model.erase(it) : std::next(it);
      }
    } else {
      const int depth = static_cast<int>(rng() % 3);
      uint64_t seen = 0;
      accounted -= t.RemoveRange(client, depth, pool, object,
                                 [&](const PageTableKey& k, PageEntry&) {
                                   EXPECT_EQ(k.client, client);
                                   ++seen;
                                 });
      uint64_t expect = 0;
      for (auto it = model.begin(); it != model.end();) {
        auto [c, p, o, i] = it->first;
        if (c == client && (depth < 1 || p == pool) && (depth < 2 || o == object)) {
          it = model.erase(it);
          ++expect;
        } else {
          ++it;
        }
      }
      ASSERT_EQ(seen, expect);
    }
    ASSERT_EQ(t.entries(), model.size());
    ASSERT_EQ(static_cast<int64_t>(t.bytes()), accounted);
  }
  // ForEach sees exactly the model.
  Model seen;
  t.ForEach([&](const PageTableKey& k, PageEntry& e) {
    seen[{k.client, k.pool, k.object, k.index}] = e.generation();
  });
  EXPECT_EQ(seen, model);
  // No block keeps two growth steps or more of unused entries.
  std::map<std::tuple<uint32_t, uint32_t, uint64_t, uint64_t>, int> blocks;
  for (auto& [k, g] : model) {
    auto [c, p, o, i] = k;
    blocks[{c, p, o, i / PageTable::kBlockPages}]++;
  }
  EXPECT_LE(t.bytes(), blocks.size() * PageTable::kBlockOverhead +
                           (model.size() + blocks.size() * (2 * PageTable::kGrowthStep - 1)) *
                               sizeof(PageEntry));
  EXPECT_GE(t.bytes(), blocks.size() * PageTable::kBlockOverhead + model.size() * sizeof(PageEntry));
  const uint64_t before = t.bytes();
  for (auto& [k, g] : model) {
    auto [c, p, o, i] = k;
    accounted -= t.Erase({c, p, o, i});
  }
  EXPECT_EQ(t.entries(), 0u);
  EXPECT_EQ(t.bytes(), 0u);
  EXPECT_EQ(accounted, 0);
  EXPECT_GT(before, 0u);
}

}  // namespace
}  // namespace ramster
