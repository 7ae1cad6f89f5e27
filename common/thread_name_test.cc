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

TEST(ThreadNameTest, NamesTheCallingThreadOnly) {
  const std::string before = CommOf(syscall(SYS_gettid));
  std::string seen;
  std::thread t([&] {
    NameThisThread("rs-test");
    seen = CommOf(syscall(SYS_gettid));
  });
  t.join();
  EXPECT_EQ(seen, "rs-test");
  EXPECT_EQ(CommOf(syscall(SYS_gettid)), before);
}

TEST(ThreadNameTest, KeepsTheFirstFifteenBytes) {
  std::string seen;
  std::thread t([&] {
    NameThisThread("a-name-longer-than-fifteen");
    seen = CommOf(syscall(SYS_gettid));
  });
  t.join();
  EXPECT_EQ(seen, "a-name-longer-t");
}

}  // namespace
}  // namespace ramster
