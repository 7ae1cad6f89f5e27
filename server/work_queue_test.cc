#include "server/work_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(WorkQueue, RunsEverythingSubmittedFromManyThreads) {
  std::atomic<int> ran{0};
  {
    WorkQueue q(3, 100000);
    std::vector<std::thread> producers;
    for (int t = 0; t < 4; ++t) {
      producers.emplace_back([&] {
        for (int i = 0; i < 5000; ++i) ASSERT_TRUE(q.Submit([&] { ran++; }));
      });
    }
    for (auto& p : producers) p.join();
  }  // the destructor runs what is still queued
  EXPECT_EQ(ran.load(), 20000);
}

TEST(WorkQueue, RefusesBeyondItsBound) {
  std::atomic<bool> release{false};
  std::atomic<int> ran{0};
  WorkQueue q(1, 2);
  // Occupy the only worker, then fill the queue.
  ASSERT_TRUE(q.Submit([&] {
    while (!release) std::this_thread::yield();
    ran++;
  }));
  // Wait until the worker has taken it, so that the queue is empty.
  while (q.pending() != 0) std::this_thread::yield();
  EXPECT_TRUE(q.Submit([&] { ran++; }));
  EXPECT_TRUE(q.Submit([&] { ran++; }));
  EXPECT_FALSE(q.Submit([&] { ran++; }));
  EXPECT_FALSE(q.Submit([&] { ran++; }));
  release = true;
  while (ran.load() < 3) std::this_thread::yield();
  EXPECT_TRUE(q.Submit([&] { ran++; }));
}

}  // namespace
}  // namespace ramster
