#include "common/store_wire.h"

#include <arpa/inet.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/page_link_wire.h"
#include "gtest/gtest.h"
#include "ramster/v1/page_store.pb.h"

namespace ramster {
namespace {

// Values where varint lengths change, and the extremes.
uint64_t Pick(std::mt19937_64& rng) {
  static const uint64_t kEdges[] = {0, 1, 127, 128, 16383, 16384, UINT32_MAX,
                                    uint64_t{UINT32_MAX} + 1, UINT64_MAX};
  return rng() % 3 == 0 ? kEdges[rng() % 9] : rng() >> (rng() % 64);
}

// A store request of `n` pages with random fields (zeros and extremes
// included), its payloads in `storage`.
std::vector<StorePageFields> RandomPages(std::mt19937_64& rng, size_t n,
                                         std::vector<std::string>* storage) {
  storage->assign(n, "");
  std::vector<StorePageFields> pages(n);
  for (size_t i = 0; i < n; ++i) {
    StorePageFields& f = pages[i];
    f.pool = static_cast<uint32_t>(Pick(rng));
    f.object = Pick(rng);
    f.index = Pick(rng);
    f.encoding = static_cast<int32_t>(static_cast<uint32_t>(Pick(rng)));
    const size_t length = rng() % 4 == 0 ? 0 : rng() % 4200;
    for (size_t k = 0; k < length; ++k) (*storage)[i].push_back(static_cast<char>(rng()));
    f.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>((*storage)[i].data()),
                                    (*storage)[i].size());
    f.uncompressed_length = static_cast<uint32_t>(Pick(rng));
    f.checksum = Pick(rng);
    f.generation = Pick(rng);
  }
  return pages;
}

v1::PagesRequest AsMessage(uint64_t boot_epoch, const std::vector<StorePageFields>& pages) {
  v1::PagesRequest request;
  v1::StoreRequest* store = request.mutable_store();
  store->set_boot_epoch(boot_epoch);
  for (const StorePageFields& f : pages) {
    v1::Page* p = store->add_pages();
    p->mutable_key()->set_pool(f.pool);
    p->mutable_key()->set_object(f.object);
    p->mutable_key()->set_index(f.index);
    p->set_encoding(static_cast<v1::Encoding>(f.encoding));
    p->set_payload(f.payload.data(), f.payload.size());
    p->set_uncompressed_length(f.uncompressed_length);
    p->set_checksum(f.checksum);
    p->set_generation(f.generation);
  }
  return request;
}

// What protobuf makes of `message`, as fields; false when it does not
// parse as a store request.
bool ParseWithProtobuf(const std::string& message, uint64_t* boot_epoch,
                       std::vector<StorePageFields>* pages, v1::PagesRequest* request) {
  if (!request->ParseFromString(message) ||
      request->op_case() != v1::PagesRequest::kStore) {
    return false;
  }
  *boot_epoch = request->store().boot_epoch();
  pages->clear();
  for (const v1::Page& p : request->store().pages()) {
    StorePageFields f;
    f.pool = p.key().pool();
    f.object = p.key().object();
    f.index = p.key().index();
    f.encoding = p.encoding();
    f.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                                    p.payload().size());
    f.uncompressed_length = p.uncompressed_length();
    f.checksum = p.checksum();
    f.generation = p.generation();
    pages->push_back(f);
  }
  return true;
}

void ExpectSameFields(const std::vector<StorePageFields>& a,
                      const std::vector<StorePageFields>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].pool, b[i].pool) << i;
    EXPECT_EQ(a[i].object, b[i].object) << i;
    EXPECT_EQ(a[i].index, b[i].index) << i;
    EXPECT_EQ(a[i].encoding, b[i].encoding) << i;
    EXPECT_EQ(a[i].payload, b[i].payload) << i;
    EXPECT_EQ(a[i].uncompressed_length, b[i].uncompressed_length) << i;
    EXPECT_EQ(a[i].checksum, b[i].checksum) << i;
    EXPECT_EQ(a[i].generation, b[i].generation) << i;
  }
}

absl::Span<const uint8_t> Body(const std::string& frame) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(frame.data()) + 4,
                             frame.size() - 4);
}

TEST(StoreWire, RequestFramesAreWhatProtobufWritesAndParseBack) {
  std::mt19937_64 rng(1);
  std::string frame;
  for (int round = 0; round < 300; ++round) {
    std::vector<std::string> storage;
    const std::vector<StorePageFields> pages = RandomPages(rng, rng() % 70, &storage);
    const uint64_t epoch = Pick(rng);
    FrameStoreRequest(epoch, pages, &frame);
    std::string expected;
    FrameMessage(AsMessage(epoch, pages), &expected);
    ASSERT_EQ(frame, expected) << "round " << round;

    uint64_t parsed_epoch = 0;
    std::vector<StorePageFields> parsed;
    ASSERT_TRUE(ParseStoreRequest(Body(frame), 256, &parsed_epoch, &parsed)) << round;
    EXPECT_EQ(parsed_epoch, epoch);
    ExpectSameFields(parsed, pages);
    // The payloads are views into the frame, not copies.
    for (const StorePageFields& f : parsed) {
      if (f.payload.empty()) continue;
      EXPECT_GE(f.payload.data(), reinterpret_cast<const uint8_t*>(frame.data()));
      EXPECT_LE(f.payload.data() + f.payload.size(),
                reinterpret_cast<const uint8_t*>(frame.data() + frame.size()));
    }
  }
}

TEST(StoreWire, ParseTakesOnlyWhatProtobufReadsTheSameWay) {
  // Mutated requests: whenever the parser takes one, protobuf must read the
  // same fields from it; where it declines, the caller asks protobuf.
  std::mt19937_64 rng(2);
  int taken = 0, declined = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::string> storage;
    const std::vector<StorePageFields> pages = RandomPages(rng, 1 + rng() % 3, &storage);
    std::string frame;
    FrameStoreRequest(Pick(rng), pages, &frame);
    std::string message = frame.substr(4);
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !message.empty(); ++e) {
      const size_t at = rng() % message.size();
      switch (rng() % 5) {
        case 0: message[at] = static_cast<char>(rng()); break;
        case 1: message[at] ^= static_cast<char>(1 << (rng() % 8)); break;
        case 2: message.resize(at); break;
        case 3: message.insert(at, 1, static_cast<char>(rng())); break;
        case 4: message.erase(at, 1 + rng() % 4); break;
      }
    }
    uint64_t epoch = 0, expected_epoch = 0;
    std::vector<StorePageFields> parsed, expected;
    v1::PagesRequest request;
    const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(message.data()),
                                          message.size());
    if (!ParseStoreRequest(bytes, 256, &epoch, &parsed)) {
      ++declined;
      continue;
    }
    ++taken;
    ASSERT_TRUE(ParseWithProtobuf(message, &expected_epoch, &expected, &request))
        << "round " << round;
    EXPECT_EQ(epoch, expected_epoch) << round;
    ExpectSameFields(parsed, expected);
  }
  // Both outcomes were exercised.
  EXPECT_GT(taken, 1000);
  EXPECT_GT(declined, 1000);
}

TEST(StoreWire, ParseDeclinesWhatItDoesNotKnow) {
  std::vector<std::string> storage;
  std::mt19937_64 rng(3);
  std::vector<StorePageFields> pages = RandomPages(rng, 3, &storage);
  v1::PagesRequest request = AsMessage(7, pages);
  uint64_t epoch = 0;
  std::vector<StorePageFields> parsed;
  auto parse = [&](const v1::PagesRequest& r, size_t max_pages = 256) {
    const std::string s = r.SerializeAsString();
    return ParseStoreRequest(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size()), max_pages,
        &epoch, &parsed);
  };
  EXPECT_TRUE(parse(request));
  EXPECT_FALSE(parse(request, 2));  // more pages than allowed
  v1::PagesRequest load;
  load.mutable_load()->add_keys()->set_index(1);
  EXPECT_FALSE(parse(load));
  EXPECT_FALSE(parse(v1::PagesRequest()));  // empty: no op at all
  // A field this parser does not know (PagesRequest.load after the store).
  std::string twice = request.SerializeAsString() + load.SerializeAsString();
  EXPECT_FALSE(ParseStoreRequest(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(twice.data()), twice.size()), 256,
      &epoch, &parsed));
  // A store with no pages is a store.
  v1::PagesRequest empty_store;
  empty_store.mutable_store()->set_boot_epoch(9);
  EXPECT_TRUE(parse(empty_store));
  EXPECT_EQ(epoch, 9u);
  EXPECT_TRUE(parsed.empty());
}

TEST(StoreWire, ReplyFramesAreWhatProtobufWrites) {
  const std::vector<absl::Status> results = {
      absl::OkStatus(),
      absl::ResourceExhaustedError("client quota of 4096 bytes reached"),
      absl::OkStatus(),
      absl::InvalidArgumentError(""),
      absl::FailedPreconditionError(std::string(300, 'x')),
  };
  for (size_t n = 0; n <= results.size(); ++n) {
    const auto part = absl::MakeConstSpan(results).first(n);
    std::string frame;
    FrameStoreReply(part, &frame);
    v1::PagesReply reply;
    reply.mutable_store();  // set even with no results, as the server sets it
    for (const absl::Status& s : part) {
      v1::PageStatus* r = reply.mutable_store()->add_results();
      r->set_code(static_cast<int32_t>(s.code()));
      if (!s.ok()) r->set_message(std::string(s.message()));
    }
    std::string expected;
    FrameMessage(reply, &expected);
    EXPECT_EQ(frame, expected) << n;
  }
}

}  // namespace
}  // namespace ramster
