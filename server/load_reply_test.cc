#include "server/load_reply.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace ramster {
namespace {

struct Item {
  bool found = true;
  v1::PageKey key;
  v1::Encoding encoding = v1::ENCODING_LZ4;
  uint32_t uncompressed_length = 4096;
  uint64_t checksum = 0;
  uint64_t generation = 0;
  std::string payload;
  absl::Status miss;
};

Item Found(uint32_t pool, uint64_t object, uint64_t index, size_t payload_size,
           uint64_t checksum = 0x0123456789abcdef, uint64_t generation = 7) {
  Item it;
  it.key.set_pool(pool);
  it.key.set_object(object);
  it.key.set_index(index);
  it.checksum = checksum;
  it.generation = generation;
  it.payload.resize(payload_size);
  for (size_t i = 0; i < payload_size; ++i) it.payload[i] = static_cast<char>(i * 131 + index);
  return it;
}

Item Miss(absl::Status status) {
  Item it;
  it.found = false;
  it.miss = std::move(status);
  return it;
}

void Feed(const std::vector<Item>& items, LoadSink* sink) {
  for (const Item& it : items) {
    if (!it.found) {
      sink->AddMiss(it.miss);
      continue;
    }
    LoadedPage page;
    page.key = &it.key;
    page.encoding = it.encoding;
    page.uncompressed_length = it.uncompressed_length;
    page.checksum = it.checksum;
    page.generation = it.generation;
    page.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(it.payload.data()),
                                       it.payload.size());
    sink->AddPage(page);
  }
}

// The encoder's bytes must be exactly protobuf's serialization of the
// message the other sink builds from the same results.
void ExpectSameBytes(const std::vector<Item>& items, size_t expected_pages) {
  v1::LoadResponse message;
  LoadResponseSink message_sink(&message);
  Feed(items, &message_sink);
  std::string want;
  ASSERT_TRUE(message.SerializeToString(&want));

  LoadReplyEncoder encoder(expected_pages);
  Feed(items, &encoder);
  LoadReplyEncoder::Encoded got = encoder.Release();
  ASSERT_EQ(got.size, want.size());
  if (got.size > 0) {
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data.get()), got.size), want);
  }
}

TEST(LoadReplyTest, PagesAndMissesEncodeAsProtobufDoes) {
  ExpectSameBytes({Found(1, 0, 5, 1800), Miss(absl::NotFoundError("no such page")),
                   Found(3, 9, 1u << 20, 8),
                   Miss(absl::DataLossError("disk record does not match the index")),
                   Found(1, 2, 3, 4096)},
                  5);
}

TEST(LoadReplyTest, DefaultValuesAreLeftOutAsProtobufDoes) {
  Item zero = Found(0, 0, 0, 0, /*checksum=*/0, /*generation=*/0);
  zero.encoding = v1::ENCODING_UNSPECIFIED;
  zero.uncompressed_length = 0;
  ExpectSameBytes({zero}, 1);
}

TEST(LoadReplyTest, LargestValues) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  Item big = Found(std::numeric_limits<uint32_t>::max(), max, max, 4096, max, max);
  big.encoding = v1::ENCODING_RAW;
  ExpectSameBytes({big, Miss(absl::Status(absl::StatusCode::kUnauthenticated, ""))}, 2);
}

TEST(LoadReplyTest, GrowsPastItsFirstBuffer) {
  std::vector<Item> items;
  for (int i = 0; i < 300; ++i) items.push_back(Found(1, 0, i, i % 3 == 0 ? 4096 : 100 + i));
  ExpectSameBytes(items, 1);
  ExpectSameBytes(items, 0);
}

TEST(LoadReplyTest, NothingAdded) {
  LoadReplyEncoder encoder(4);
  LoadReplyEncoder::Encoded got = encoder.Release();
  EXPECT_EQ(got.size, 0u);
}

TEST(LoadReplyTest, ParsesBackToTheResults) {
  std::vector<Item> items = {Found(1, 4, 77, 1234), Miss(absl::NotFoundError("no such page"))};
  LoadReplyEncoder encoder(items.size());
  Feed(items, &encoder);
  LoadReplyEncoder::Encoded got = encoder.Release();
  v1::LoadResponse parsed;
  ASSERT_TRUE(parsed.ParseFromArray(got.data.get(), static_cast<int>(got.size)));
  ASSERT_EQ(parsed.results_size(), 2);
  const v1::LoadResult& hit = parsed.results(0);
  EXPECT_TRUE(hit.has_status());
  EXPECT_EQ(hit.status().code(), 0);
  ASSERT_TRUE(hit.has_page());
  EXPECT_EQ(hit.page().key().pool(), 1u);
  EXPECT_EQ(hit.page().key().object(), 4u);
  EXPECT_EQ(hit.page().key().index(), 77u);
  EXPECT_EQ(hit.page().encoding(), v1::ENCODING_LZ4);
  EXPECT_EQ(hit.page().payload(), items[0].payload);
  EXPECT_EQ(hit.page().uncompressed_length(), 4096u);
  EXPECT_EQ(hit.page().checksum(), 0x0123456789abcdefu);
  EXPECT_EQ(hit.page().generation(), 7u);
  const v1::LoadResult& miss = parsed.results(1);
  EXPECT_FALSE(miss.has_page());
  EXPECT_EQ(miss.status().code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(miss.status().message(), "no such page");
}

}  // namespace
}  // namespace ramster
