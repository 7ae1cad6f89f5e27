#include "common/busy_poll.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(BusyPoll, ReturnsAsSoonAsTheConditionHolds) {
  int calls = 0;
  EXPECT_TRUE(BusyPoll::Poll(absl::Seconds(10), [&] { return ++calls == 3; }));
  EXPECT_EQ(calls, 3);
}

TEST(BusyPoll, GivesUpAfterItsBudget) {
  int calls = 0;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(BusyPoll::Poll(absl::Milliseconds(20), [&] {
    ++calls;
    return false;
  }));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_GE(calls, 1);
}

TEST(BusyPoll, AZeroBudgetDoesNotPoll) {
  int calls = 0;
  EXPECT_FALSE(BusyPoll::Poll(absl::ZeroDuration(), [&] { return ++calls > 0; }));
  EXPECT_EQ(calls, 0);
}

TEST(BusyPoll, OnlyOneThreadPollsAtATime) {
  std::atomic<bool> inside{false}, release{false};
  std::thread poller([&] {
    BusyPoll::Poll(absl::Seconds(30), [&] {
      inside = true;
      return release.load();
    });
  });
  while (!inside) std::this_thread::yield();
  int calls = 0;
  EXPECT_FALSE(BusyPoll::Poll(absl::Seconds(30), [&] { return ++calls > 0; }));
  EXPECT_EQ(calls, 0);  // the other thread holds the poll: this one sleeps instead
  release = true;
  poller.join();
  EXPECT_TRUE(BusyPoll::Poll(absl::Seconds(1), [&] { return ++calls > 0; }));  // free again
}

}  // namespace
}  // namespace ramster
