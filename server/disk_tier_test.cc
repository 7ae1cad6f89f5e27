#include "server/disk_tier.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "common/test_temp_dir.h"
#include "gtest/gtest.h"

namespace ramster {
namespace {

TEST(DiskTier, KeysSortByClientPoolObjectIndex) {
  std::vector<DiskPageKey> keys = {{1, 0, 0, 0}, {1, 0, 0, 1}, {1, 0, 1, 0},
                                   {1, 1, 0, 0}, {2, 0, 0, 0}, {0xFFFFFFFF, 7, 9, 300}};
  for (size_t i = 1; i < keys.size(); ++i) {
    EXPECT_LT(EncodeDiskPageKey(keys[i - 1]), EncodeDiskPageKey(keys[i]));
  }
  DiskPageKey back;
  ASSERT_TRUE(DecodeDiskPageKey(EncodeDiskPageKey(keys.back()), &back));
  EXPECT_EQ(back.client, 0xFFFFFFFFu);
  EXPECT_EQ(back.pool, 7u);
  EXPECT_EQ(back.object, 9u);
  EXPECT_EQ(back.index, 300u);
  EXPECT_FALSE(DecodeDiskPageKey("p123", &back));
}

TEST(DiskTier, PutGetDeleteAndRanges) {
  std::string dir = MakeTestTempDir("disk_tier");
  auto tier = DiskTier::Open(dir);
  ASSERT_TRUE(tier.ok()) << tier.status();
  std::vector<uint8_t> payload(100, 0x5A);
  DiskTier::Batch batch;
  for (uint32_t client : {1u, 2u}) {
    for (uint32_t pool : {0u, 1u}) {
      for (uint64_t object : {0u, 1u}) {
        for (uint64_t index = 0; index < 10; ++index) {
          DiskPageHeader h{2, 100, index + 1, 0xABCDEF};
          batch.PutPage({client, pool, object, index}, h, payload);
        }
      }
    }
  }
  ASSERT_TRUE((*tier)->Commit(&batch).ok());
  auto count = [&] {
    int n = 0;
    EXPECT_TRUE((*tier)->ForEachPage([&](const DiskPageKey&, const DiskPageHeader&) { ++n; },
                                     [](absl::string_view) { ADD_FAILURE(); })
                    .ok());
    return n;
  };
  EXPECT_EQ(count(), 80);

  DiskPageHeader h;
  std::string got;
  ASSERT_TRUE((*tier)->GetPage({2, 1, 1, 9}, &h, &got).ok());
  EXPECT_EQ(h.generation, 10u);
  EXPECT_EQ(h.checksum, 0xABCDEFu);
  EXPECT_EQ(h.encoding, 2);
  EXPECT_EQ(got, std::string(100, 0x5A));

  ASSERT_TRUE((*tier)->DeleteObject(1, 0, 1).ok());
  EXPECT_EQ(count(), 70);
  EXPECT_EQ((*tier)->GetPage({1, 0, 1, 3}, &h, &got).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*tier)->GetPage({1, 0, 0, 3}, &h, &got).ok());
  ASSERT_TRUE((*tier)->DeletePool(1, 1).ok());
  EXPECT_EQ(count(), 50);
  ASSERT_TRUE((*tier)->DeleteClient(2).ok());
  EXPECT_EQ(count(), 10);
  EXPECT_TRUE((*tier)->GetPage({1, 0, 0, 3}, &h, &got).ok());

  DiskTier::Batch del;
  del.DeletePage({1, 0, 0, 3});
  ASSERT_TRUE((*tier)->Commit(&del).ok());
  EXPECT_EQ(count(), 9);
}

TEST(DiskTier, ReopenKeepsPagesAndClientMeta) {
  std::string dir = MakeTestTempDir("disk_tier");
  {
    auto tier = DiskTier::Open(dir);
    ASSERT_TRUE(tier.ok());
    DiskTier::Batch batch;
    std::vector<uint8_t> payload(8, 1);
    batch.PutPage({0, 0, 0, 42}, DiskPageHeader{1, 8, 3, 77}, payload);
    ASSERT_TRUE((*tier)->Commit(&batch).ok());
    ASSERT_TRUE((*tier)->PutClientMeta("host-a", "v1 0 5 0 0").ok());
    ASSERT_TRUE((*tier)->Flush().ok());
  }
  auto tier = DiskTier::Open(dir);
  ASSERT_TRUE(tier.ok());
  std::vector<std::pair<std::string, std::string>> meta;
  ASSERT_TRUE((*tier)->ForEachClientMeta([&](absl::string_view n, absl::string_view v) {
                        meta.emplace_back(std::string(n), std::string(v));
                      }).ok());
  ASSERT_EQ(meta.size(), 1u);
  EXPECT_EQ(meta[0].first, "host-a");
  EXPECT_EQ(meta[0].second, "v1 0 5 0 0");
  DiskPageHeader h;
  std::string got;
  ASSERT_TRUE((*tier)->GetPage({0, 0, 0, 42}, &h, &got).ok());
  EXPECT_EQ(h.generation, 3u);
  EXPECT_EQ(got.size(), 8u);
}

}  // namespace
}  // namespace ramster
