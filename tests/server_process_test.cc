// A real ramster-server over a real loopback port, driven by a real gRPC
// client: spill to RocksDB, graceful restart, crash restart, bad requests.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <thread>

#include "common/client_identity.h"
#include "common/page_codec.h"
#include "common/test_temp_dir.h"
#include "gtest/gtest.h"
#include "server/test_wire_page.h"
#include "ramster/v1/admin.grpc.pb.h"
#include "ramster/v1/page_store.grpc.pb.h"
#include "tests/server_process.h"

namespace ramster {
namespace {

constexpr uint32_t kPool = 1;

// Deterministic content for (index, generation): a mix of compressible and
// incompressible pages, like a real swap stream.
std::vector<uint8_t> Content(uint64_t index, uint64_t generation) {
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(index * 1000003 + generation);
  bool text = index % 4 != 0;
  for (size_t i = 0; i < kPageSize; ++i) {
    page[i] = text ? static_cast<uint8_t>("the quick brown fox "[(i + rng() % 3) % 20])
                   : static_cast<uint8_t>(rng());
  }
  return page;
}

v1::Page Wire(uint64_t index, uint64_t generation) {
  return WirePage(kPool, index, Content(index, generation), generation);
}

class Client {
 public:
  Client(const std::string& address, std::string id, uint64_t epoch)
      : channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        stub_(v1::PageStore::NewStub(channel_)),
        admin_(v1::Admin::NewStub(channel_)),
        id_(std::move(id)),
        epoch_(epoch) {}

  void Prepare(grpc::ClientContext* ctx) {
    if (!id_.empty()) ctx->AddMetadata(kClientIdMetadataKey, id_);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  }

  grpc::Status Open() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::OpenSessionRequest req;
    req.set_boot_epoch(epoch_);
    auto* p = req.add_pools();
    p->set_id(kPool);
    p->set_kind(v1::POOL_KIND_PERSISTENT);
    v1::OpenSessionResponse resp;
    return stub_->OpenSession(&ctx, req, &resp);
  }

  grpc::Status Store(const std::vector<v1::Page>& pages, v1::StoreResponse* resp) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::StoreRequest req;
    req.set_boot_epoch(epoch_);
    for (const auto& p : pages) *req.add_pages() = p;
    return stub_->Store(&ctx, req, resp);
  }

  grpc::Status Load(const std::vector<uint64_t>& indexes, v1::LoadResponse* resp) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::LoadRequest req;
    req.set_boot_epoch(epoch_);
    for (uint64_t i : indexes) {
      auto* k = req.add_keys();
      k->set_pool(kPool);
      k->set_index(i);
    }
    return stub_->Load(&ctx, req, resp);
  }

  v1::NodeStatus Status() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::NodeStatus st;
    grpc::Status s = admin_->GetStatus(&ctx, v1::GetStatusRequest(), &st);
    EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    return st;
  }

  v1::PageStore::Stub* stub() { return stub_.get(); }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PageStore::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::string id_;
  uint64_t epoch_;
};

// Checks a load result against Content(index, generation).
::testing::AssertionResult Matches(const v1::LoadResult& r, uint64_t index,
                                   uint64_t generation) {
  if (r.status().code() != 0) {
    return ::testing::AssertionFailure()
           << "page " << index << ": code " << r.status().code() << " " << r.status().message();
  }
  std::vector<uint8_t> out(kPageSize);
  const auto& p = r.page();
  absl::Status s = DecodePage(
      p.encoding(),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                          p.payload().size()),
      p.uncompressed_length(), p.checksum(), absl::MakeSpan(out));
  if (!s.ok()) return ::testing::AssertionFailure() << "page " << index << ": " << s;
  if (p.generation() != generation || out != Content(index, generation)) {
    return ::testing::AssertionFailure() << "page " << index << ": wrong bytes or generation";
  }
  return ::testing::AssertionSuccess();
}

std::vector<std::string> ServerArgs(const std::string& dir, const std::string& ram) {
  return {"--memory-limit=" + ram, "--disk-limit=512M", "--data-dir=" + dir,
          "--node-id=test-node"};
}

TEST(ServerProcess, FillPastRamIntoRocksDBRestartAndReadBack) {
  std::string dir = MakeTestTempDir("srv");
  ServerProcess server(RunfilePath("server/ramster-server"), ServerArgs(dir, "4M"));
  ASSERT_TRUE(server.Start()) << server.log();
  const int kPages = 4000;  // ~16 MiB of pages into 4 MiB of RAM
  {
    Client c(server.address(), "host-a", 42);
    ASSERT_TRUE(c.Open().ok());
    for (int base = 0; base < kPages; base += 64) {
      std::vector<v1::Page> batch;
      for (int i = base; i < base + 64 && i < kPages; ++i) batch.push_back(Wire(i, 1));
      v1::StoreResponse resp;
      ASSERT_TRUE(c.Store(batch, &resp).ok());
      for (const auto& r : resp.results()) ASSERT_EQ(r.code(), 0) << r.message();
    }
    auto st = c.Status();
    EXPECT_EQ(st.node_id(), "test-node");
    EXPECT_EQ(st.address(), server.address());
    EXPECT_LE(st.ram_used_bytes(), 4u << 20);
    EXPECT_GT(st.pages_on_disk(), 0u);
    EXPECT_GT(st.pages_in_ram(), 0u);
    EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), static_cast<uint64_t>(kPages));
    ASSERT_EQ(st.clients_size(), 1);
    EXPECT_EQ(st.clients(0).client_id(), "host-a");
  }
  ASSERT_EQ(server.Stop(), 0) << server.log();
  EXPECT_NE(server.log().find("stopped;"), std::string::npos) << server.log();

  ASSERT_TRUE(server.Start()) << server.log();
  Client c(server.address(), "host-a", 42);
  auto st = c.Status();
  EXPECT_EQ(st.pages_on_disk(), static_cast<uint64_t>(kPages));
  // The session survived the restart: the same boot reads without reopening.
  for (int base = 0; base < kPages; base += 128) {
    std::vector<uint64_t> keys;
    for (int i = base; i < base + 128 && i < kPages; ++i) keys.push_back(i);
    v1::LoadResponse resp;
    ASSERT_TRUE(c.Load(keys, &resp).ok());
    ASSERT_EQ(resp.results_size(), static_cast<int>(keys.size()));
    for (size_t k = 0; k < keys.size(); ++k) {
      ASSERT_TRUE(Matches(resp.results(k), keys[k], 1));
    }
  }
  // Another client sees none of it.
  Client other(server.address(), "host-b", 1);
  ASSERT_TRUE(other.Open().ok());
  v1::LoadResponse resp;
  ASSERT_TRUE(other.Load({0, 1, 2}, &resp).ok());
  for (const auto& r : resp.results()) {
    EXPECT_EQ(r.status().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  }
  EXPECT_EQ(server.Stop(), 0);
}

TEST(ServerProcess, SigkillMidWriteLeavesDiskConsistent) {
  std::string dir = MakeTestTempDir("srv");
  ServerProcess server(RunfilePath("server/ramster-server"), ServerArgs(dir, "2M"));
  ASSERT_TRUE(server.Start()) << server.log();
  std::atomic<uint64_t> acked_batches{0};
  std::atomic<bool> stop{false};
  const int kSlots = 1500;
  std::thread writer([&] {
    Client c(server.address(), "host-a", 7);
    if (!c.Open().ok()) return;
    for (uint64_t gen = 1; !stop; ++gen) {
      for (int base = 0; base < kSlots && !stop; base += 50) {
        std::vector<v1::Page> batch;
        for (int i = base; i < base + 50; ++i) batch.push_back(Wire(i, gen));
        v1::StoreResponse resp;
        if (!c.Store(batch, &resp).ok()) return;
        acked_batches++;
      }
    }
  });
  // Kill while writes (and write-back to RocksDB) are under way.
  while (acked_batches < 90) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  server.Kill();
  stop = true;
  writer.join();

  ASSERT_TRUE(server.Start()) << server.log();
  Client c(server.address(), "host-a", 7);
  auto st = c.Status();
  EXPECT_GT(st.pages_on_disk(), 0u);  // what had been written back survived
  EXPECT_EQ(st.pages_in_ram(), 0u);   // RAM died with the process
  // Every page the restarted node has is intact and one of the generations
  // that was written; nothing is corrupt.
  uint64_t found = 0;
  for (int base = 0; base < kSlots; base += 100) {
    std::vector<uint64_t> keys;
    for (int i = base; i < base + 100; ++i) keys.push_back(i);
    v1::LoadResponse resp;
    ASSERT_TRUE(c.Load(keys, &resp).ok());
    for (size_t k = 0; k < keys.size(); ++k) {
      const auto& r = resp.results(k);
      if (r.status().code() == static_cast<int>(grpc::StatusCode::NOT_FOUND)) continue;
      ++found;
      ASSERT_TRUE(Matches(r, keys[k], r.page().generation()));
    }
  }
  EXPECT_EQ(found, st.pages_on_disk());
  EXPECT_EQ(server.Stop(), 0);
}

TEST(ServerProcess, MalformedRequestsAreRejectedAndTheServerLivesOn) {
  std::string dir = MakeTestTempDir("srv");
  ServerProcess server(RunfilePath("server/ramster-server"), ServerArgs(dir, "8M"));
  ASSERT_TRUE(server.Start()) << server.log();
  Client c(server.address(), "host-a", 1);
  ASSERT_TRUE(c.Open().ok());

  // No identity at all.
  Client anonymous(server.address(), "", 1);
  EXPECT_EQ(anonymous.Open().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A malformed identity.
  Client weird(server.address(), std::string(200, 'x'), 1);
  EXPECT_EQ(weird.Open().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Bad pages are refused one by one; the good one in the batch is stored.
  v1::Page good = Wire(1, 1);
  v1::Page bad_checksum = Wire(2, 1);
  bad_checksum.set_checksum(bad_checksum.checksum() + 1);
  v1::Page bad_encoding = Wire(3, 1);
  bad_encoding.set_encoding(static_cast<v1::Encoding>(9));
  v1::Page oversize = Wire(4, 1);
  oversize.set_encoding(v1::ENCODING_RAW);
  oversize.set_payload(std::string(kPageSize + 1, 'z'));
  v1::Page garbage_lz4 = Wire(5, 1);
  garbage_lz4.set_encoding(v1::ENCODING_LZ4);
  garbage_lz4.set_payload(std::string(100, '\xff'));
  v1::StoreResponse resp;
  ASSERT_TRUE(c.Store({good, bad_checksum, bad_encoding, oversize, garbage_lz4}, &resp).ok());
  ASSERT_EQ(resp.results_size(), 5);
  EXPECT_EQ(resp.results(0).code(), 0);
  for (int i = 1; i < 5; ++i) {
    EXPECT_EQ(resp.results(i).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << i;
    EXPECT_FALSE(resp.results(i).message().empty());
  }
  // Too many pages in one batch.
  std::vector<v1::Page> many(300, good);
  EXPECT_EQ(c.Store(many, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A message larger than the server accepts.
  std::vector<v1::Page> huge(250, oversize);
  for (auto& p : huge) p.set_payload(std::string(20000, 'q'));
  EXPECT_EQ(c.Store(huge, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Still alive and correct.
  v1::LoadResponse lr;
  ASSERT_TRUE(c.Load({1, 2}, &lr).ok());
  EXPECT_TRUE(Matches(lr.results(0), 1, 1));
  EXPECT_EQ(lr.results(1).status().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  auto st = c.Status();
  EXPECT_EQ(st.pages_in_ram(), 1u);
  EXPECT_GE(st.ops().requests_rejected(), 2u);
  EXPECT_EQ(server.Stop(), 0);
}

TEST(ServerProcess, BadCommandLinesFailClearly) {
  std::string dir = MakeTestTempDir("srv");
  ServerProcess no_dir(RunfilePath("server/ramster-server"), {"--memory-limit=8M"});
  EXPECT_FALSE(no_dir.Start());
  EXPECT_NE(no_dir.log().find("--data-dir is required"), std::string::npos) << no_dir.log();
  ServerProcess bad_size(RunfilePath("server/ramster-server"),
                         {"--memory-limit=lots", "--data-dir=" + dir});
  EXPECT_FALSE(bad_size.Start());
  EXPECT_NE(bad_size.log().find("memory_limit"), std::string::npos) << bad_size.log();
  for (const char* io_threads : {"--io-threads=0", "--io-threads=65"}) {
    ServerProcess bad_io(RunfilePath("server/ramster-server"), {io_threads, "--data-dir=" + dir});
    EXPECT_FALSE(bad_io.Start());
    EXPECT_NE(bad_io.log().find("--io-threads must be 1..64"), std::string::npos) << bad_io.log();
  }
}

}  // namespace
}  // namespace ramster
