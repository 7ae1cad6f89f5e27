#include "common/thread_name.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace ramster {
namespace {

std::string CommOf(long tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(f, name);
  return name;
}

// Starts a thread that names itself `name`, and returns what /proc then
// shows as that thread's name.
std::string NameSeenInNewThread(const char* name) {
  std::string seen;
  std::thread t([&] {
    NameThisThread(name);
    seen = CommOf(syscall(SYS_gettid));
  });
  t.join();
  return seen;
}

TEST(ThreadNameTest, NamesTheCallingThreadOnly) {
  const std::string before = CommOf(syscall(SYS_gettid));
  EXPECT_EQ(NameSeenInNewThread("rs-test"), "rs-test");
  EXPECT_EQ(CommOf(syscall(SYS_gettid)), before);
}

TEST(ThreadNameTest, KeepsTheFirstFifteenBytes) {
  EXPECT_EQ(NameSeenInNewThread("a-name-longer-than-fifteen"), "a-name-longer-t");
}

}  // namespace
}  // namespace ramster
