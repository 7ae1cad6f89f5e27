#include "common/proc_status.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(ProcStatus, ReadsFieldsAndSaysWhenTheyAreMissing) {
  EXPECT_GT(RssBytes(), 0u);
  EXPECT_GT(RssBytes(getpid()), 0u);
  EXPECT_FALSE(ProcKbField("/proc/self/status", "NoSuchField").has_value());
  EXPECT_FALSE(ProcKbField("/proc/self/status", "VmRS").has_value());  // a prefix is not a field
  EXPECT_FALSE(ProcKbField("/nonexistent/status", "VmRSS").has_value());
}

TEST(ProcStatus, RssAndLazyFreeFollowTheMemory) {
  constexpr size_t kBytes = 32 << 20;
  void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const uint64_t before = RssBytes();
  std::memset(p, 1, kBytes);
  EXPECT_GE(RssBytes(), before + kBytes / 2);
  const uint64_t lazy_before = LazyFreeBytes();
  ASSERT_EQ(madvise(p, kBytes, MADV_FREE), 0);
  EXPECT_GE(LazyFreeBytes(), lazy_before + kBytes / 4);
  munmap(p, kBytes);
}

}  // namespace
}  // namespace ramster
