#include "kernel-shim/nbd_buffer_pool.h"

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace ramster {
namespace {

constexpr size_t kUnit = NbdBufferPool::kUnit;

TEST(NbdBufferPool, CapacityIsRoundedUpToWholeUnits) {
  EXPECT_EQ(NbdBufferPool(1).capacity(), kUnit);
  EXPECT_EQ(NbdBufferPool(0).capacity(), kUnit);
  EXPECT_EQ(NbdBufferPool(3 * kUnit + 1).capacity(), 4 * kUnit);
}

TEST(NbdBufferPool, BuffersAreDisjointAndAccounted) {
  NbdBufferPool pool(16 * kUnit);
  NbdBufferPool::Buffer a = pool.Acquire(1);
  NbdBufferPool::Buffer b = pool.Acquire(2 * kUnit + 7);
  NbdBufferPool::Buffer c = pool.Acquire(kUnit);
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(b.size(), 2 * kUnit + 7);
  EXPECT_EQ(pool.bytes_in_use(), 5 * kUnit);  // 1 + 3 + 1 units
  // No overlap: a ends before b starts, b before c.
  EXPECT_LE(a.data() + kUnit, b.data());
  EXPECT_LE(b.data() + 3 * kUnit, c.data());
  pool.Release(&b);
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(pool.bytes_in_use(), 2 * kUnit);
  // The hole b left is reused first (first fit).
  NbdBufferPool::Buffer d = pool.Acquire(3 * kUnit);
  EXPECT_EQ(d.data(), a.data() + kUnit);
  pool.Release(&a);
  pool.Release(&c);
  pool.Release(&d);
  EXPECT_EQ(pool.bytes_in_use(), 0u);
  EXPECT_EQ(pool.waits(), 0u);
}

TEST(NbdBufferPool, TryAcquireTakesFreeSpaceOnlyAndNeverCutsInLine) {
  NbdBufferPool pool(4 * kUnit);
  NbdBufferPool::Buffer a, b, c, none;
  ASSERT_TRUE(pool.TryAcquire(3 * kUnit, &a));
  EXPECT_EQ(a.size(), 3 * kUnit);
  EXPECT_FALSE(pool.TryAcquire(2 * kUnit, &b));  // no room: nothing taken, no wait
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(pool.bytes_in_use(), 3 * kUnit);
  EXPECT_FALSE(pool.TryAcquire(5 * kUnit, &b));  // larger than the pool
  ASSERT_TRUE(pool.TryAcquire(0, &none));
  EXPECT_EQ(none.data(), nullptr);
  // A waiter for two units comes first: one free unit is not for TryAcquire.
  std::thread waiter([&] { b = pool.Acquire(2 * kUnit); });
  while (pool.waiting() == 0) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(pool.TryAcquire(kUnit, &c));
  pool.Release(&a);
  waiter.join();
  EXPECT_EQ(b.size(), 2 * kUnit);
  ASSERT_TRUE(pool.TryAcquire(2 * kUnit, &c));
  EXPECT_EQ(pool.bytes_in_use(), 4 * kUnit);
  pool.Release(&b);
  pool.Release(&c);
  EXPECT_EQ(pool.bytes_in_use(), 0u);
  EXPECT_EQ(pool.waits(), 1u);
}

TEST(NbdBufferPool, ZeroBytesNeedNoSpace) {
  NbdBufferPool pool(kUnit);
  NbdBufferPool::Buffer all = pool.Acquire(kUnit);
  NbdBufferPool::Buffer none = pool.Acquire(0);  // does not wait
  EXPECT_EQ(none.size(), 0u);
  pool.Release(&none);
  pool.Release(&all);
}

TEST(NbdBufferPool, TheWholeArenaInOneBuffer) {
  NbdBufferPool pool(64 * kUnit);
  NbdBufferPool::Buffer b = pool.Acquire(64 * kUnit);
  std::memset(b.data(), 0xAB, b.size());  // all of it is ours (ASan checks)
  pool.Release(&b);
}

TEST(NbdBufferPool, ALargeRequestWaitsAndLaterOnesQueueBehindIt) {
  NbdBufferPool pool(8 * kUnit);
  NbdBufferPool::Buffer small = pool.Acquire(kUnit);  // 7 units left, not contiguous 8
  std::atomic<int> order{0};
  int large_done = 0, tiny_done = 0;
  std::thread large([&] {
    NbdBufferPool::Buffer b = pool.Acquire(8 * kUnit);
    large_done = ++order;
    pool.Release(&b);
  });
  while (pool.waiting() < 1) absl::SleepFor(absl::Milliseconds(1));
  std::thread tiny([&] {
    // There is room for it now, but it must not overtake the large one.
    NbdBufferPool::Buffer b = pool.Acquire(kUnit);
    tiny_done = ++order;
    pool.Release(&b);
  });
  while (pool.waiting() < 2) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(order.load(), 0);  // both are waiting
  pool.Release(&small);
  large.join();
  tiny.join();
  EXPECT_EQ(large_done, 1);
  EXPECT_EQ(tiny_done, 2);
  EXPECT_GE(pool.waits(), 2u);
  EXPECT_EQ(pool.bytes_in_use(), 0u);
}

TEST(NbdBufferPool, ConcurrentUsersNeverShareBytes) {
  NbdBufferPool pool(32 * kUnit);
  std::vector<std::thread> threads;
  std::atomic<int> corrupt{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 2000; ++i) {
        size_t n = 1 + rng() % (6 * kUnit);
        NbdBufferPool::Buffer b = pool.Acquire(n);
        const auto mark = static_cast<uint8_t>(t * 31 + i);
        std::memset(b.data(), mark, n);
        std::this_thread::yield();
        for (size_t k = 0; k < n; ++k) {
          if (b.data()[k] != mark) {
            ++corrupt;
            break;
          }
        }
        pool.Release(&b);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(corrupt.load(), 0);
  EXPECT_EQ(pool.bytes_in_use(), 0u);
}

}  // namespace
}  // namespace ramster
