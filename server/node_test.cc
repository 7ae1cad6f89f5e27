#include "server/node.h"

#include <atomic>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/page_codec.h"
#include "common/proc_status.h"
#include "common/test_temp_dir.h"
#include "gtest/gtest.h"
#include "server/test_wire_page.h"

namespace ramster {
namespace {

constexpr uint32_t kSwapPool = 1;
constexpr uint32_t kCachePool = 2;

// A page whose content depends on (seed, compressibility): text-like pages
// compress about 2:1, random ones not at all.
std::vector<uint8_t> MakePage(uint64_t seed, bool compressible = true) {
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < kPageSize; ++i) {
    page[i] = compressible ? static_cast<uint8_t>('a' + (rng() % 16 < 12 ? i % 7 : rng() % 26))
                           : static_cast<uint8_t>(rng());
  }
  return page;
}

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTestTempDir("node"); }

  void Start(uint64_t ram, uint64_t disk, uint64_t quota = 0) {
    NodeOptions o;
    o.ram_limit = ram;
    o.disk_limit = disk;
    o.data_dir = dir_;
    o.default_client_quota = quota;
    o.recompress_level = recompress_level_;
    o.recompress_thread = recompress_thread_;
    o.recompress_age = recompress_age_;
    if (step_clock_) o.recompress_clock = [this] { return now_; };
    // Tests drive maintenance themselves.
    o.maintenance_interval = absl::Hours(1);
    node_.reset();
    auto n = Node::Open(o);
    ASSERT_TRUE(n.ok()) << n.status();
    node_ = std::move(*n);
  }

  void Open(const std::string& client, uint64_t epoch) {
    v1::OpenSessionRequest req;
    req.set_boot_epoch(epoch);
    auto* p = req.add_pools();
    p->set_id(kSwapPool);
    p->set_kind(v1::POOL_KIND_PERSISTENT);
    p = req.add_pools();
    p->set_id(kCachePool);
    p->set_kind(v1::POOL_KIND_EPHEMERAL);
    v1::OpenSessionResponse resp;
    ASSERT_TRUE(node_->OpenSession(client, req, &resp).ok());
    last_reclaimed_ = resp.pages_reclaimed();
  }

  // Stores one page; returns its per-page status code.
  absl::StatusCode StorePage(const std::string& client, uint64_t epoch, const v1::Page& page) {
    v1::StoreRequest req;
    req.set_boot_epoch(epoch);
    *req.add_pages() = page;
    v1::StoreResponse resp;
    absl::Status s = node_->Store(client, req, &resp);
    if (!s.ok()) return s.code();
    EXPECT_EQ(resp.results_size(), 1);
    return static_cast<absl::StatusCode>(resp.results(0).code());
  }

  absl::StatusCode LoadPage(const std::string& client, uint64_t epoch, uint32_t pool,
                            uint64_t index, std::vector<uint8_t>* out,
                            uint64_t* generation = nullptr) {
    v1::LoadRequest req;
    req.set_boot_epoch(epoch);
    auto* k = req.add_keys();
    k->set_pool(pool);
    k->set_index(index);
    v1::LoadResponse resp;
    absl::Status s = node_->Load(client, req, &resp);
    if (!s.ok()) return s.code();
    const auto& r = resp.results(0);
    if (r.status().code() != 0) return static_cast<absl::StatusCode>(r.status().code());
    out->assign(kPageSize, 0);
    absl::Status d = DecodePage(
        r.page().encoding(),
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(r.page().payload().data()),
                            r.page().payload().size()),
        r.page().uncompressed_length(), r.page().checksum(), absl::MakeSpan(*out));
    EXPECT_TRUE(d.ok()) << d;
    if (generation) *generation = r.page().generation();
    return absl::StatusCode::kOk;
  }

  // Invalidates the client's whole pool; returns the pages freed (or -1 when
  // the request failed as a whole).
  int64_t InvalidatePool(const std::string& client, uint64_t epoch, uint32_t pool) {
    v1::InvalidateRequest req;
    req.set_boot_epoch(epoch);
    req.add_ranges()->set_pool(pool);
    v1::InvalidateResponse resp;
    if (!node_->Invalidate(client, req, &resp).ok()) return -1;
    return static_cast<int64_t>(resp.pages_freed());
  }

  v1::NodeStatus Status() {
    v1::NodeStatus st;
    node_->GetStatus(&st);
    return st;
  }

  std::string dir_;
  int recompress_level_ = 0;
  bool recompress_thread_ = false;  // tests call RecompressSome themselves
  absl::Duration recompress_age_ = absl::ZeroDuration();
  // True: recompression walks are timed by now_, which the test steps.
  bool step_clock_ = false;
  absl::Time now_ = absl::UnixEpoch();

  // Recompression walks until nothing is left; returns the copies marked or
  // recompressed on the way.
  uint64_t RecompressAll() {
    uint64_t total = 0;
    for (uint64_t n; (n = node_->RecompressSome(64)) > 0;) total += n;
    return total;
  }
  std::unique_ptr<Node> node_;
  uint64_t last_reclaimed_ = 0;
};

TEST_F(NodeTest, StoreLoadRoundTripAndMiss) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  auto page = MakePage(1);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 7, page)), absl::StatusCode::kOk);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 7, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, page);
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 8, &out), absl::StatusCode::kNotFound);
  auto st = Status();
  EXPECT_EQ(st.pages_in_ram(), 1u);
  EXPECT_EQ(st.pages_on_disk(), 0u);
  EXPECT_EQ(st.ops().stores(), 1u);
  EXPECT_EQ(st.ops().loads(), 2u);
  EXPECT_EQ(st.ops().load_misses(), 1u);
  EXPECT_GT(st.compression_ratio(), 1.0);
}

TEST_F(NodeTest, RequestsNeedASessionAndTheCurrentEpoch) {
  Start(16 << 20, 64 << 20);
  auto p = WirePage(kSwapPool, 1, MakePage(1));
  EXPECT_EQ(StorePage("a", 1, p), absl::StatusCode::kFailedPrecondition);
  Open("a", 5);
  EXPECT_EQ(StorePage("a", 4, p), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StorePage("a", 6, p), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StorePage("a", 5, p), absl::StatusCode::kOk);
  // An older boot cannot take the session back.
  v1::OpenSessionRequest req;
  req.set_boot_epoch(4);
  v1::OpenSessionResponse resp;
  EXPECT_EQ(node_->OpenSession("a", req, &resp).code(), absl::StatusCode::kFailedPrecondition);
  req.set_boot_epoch(0);
  EXPECT_EQ(node_->OpenSession("a", req, &resp).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(NodeTest, ClientsCannotSeeEachOthersPages) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  Open("b", 1);
  auto pa = MakePage(1), pb = MakePage(2);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 7, pa)), absl::StatusCode::kOk);
  ASSERT_EQ(StorePage("b", 1, WirePage(kSwapPool, 7, pb)), absl::StatusCode::kOk);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 7, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, pa);
  ASSERT_EQ(LoadPage("b", 1, kSwapPool, 7, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, pb);
  // b invalidating "its" page 7 leaves a's alone.
  EXPECT_EQ(InvalidatePool("b", 1, kSwapPool), 1);
  EXPECT_EQ(LoadPage("b", 1, kSwapPool, 7, &out), absl::StatusCode::kNotFound);
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 7, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, pa);
}

TEST_F(NodeTest, OlderGenerationNeverReplacesNewer) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  auto v1p = MakePage(1), v2p = MakePage(2);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 3, v2p, 2)), absl::StatusCode::kOk);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 3, v1p, 1)),
            absl::StatusCode::kFailedPrecondition);
  std::vector<uint8_t> out;
  uint64_t gen = 0;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 3, &out, &gen), absl::StatusCode::kOk);
  EXPECT_EQ(out, v2p);
  EXPECT_EQ(gen, 2u);
  // Same generation again (a retry) is accepted; a newer one replaces it.
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 3, v2p, 2)), absl::StatusCode::kOk);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 3, v1p, 3)), absl::StatusCode::kOk);
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 3, &out, &gen), absl::StatusCode::kOk);
  EXPECT_EQ(out, v1p);
  EXPECT_EQ(Status().pages_in_ram(), 1u);
}

TEST_F(NodeTest, GenerationBoundedInvalidateSparesNewerCopies) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 3, MakePage(1), 5)), absl::StatusCode::kOk);
  v1::InvalidateRequest inv;
  inv.set_boot_epoch(1);
  auto* r = inv.add_ranges();
  r->mutable_page()->set_pool(kSwapPool);
  r->mutable_page()->set_index(3);
  r->set_up_to_generation(4);  // meant for an older copy
  v1::InvalidateResponse ir;
  ASSERT_TRUE(node_->Invalidate("a", inv, &ir).ok());
  EXPECT_EQ(ir.pages_freed(), 0u);
  std::vector<uint8_t> out;
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 3, &out), absl::StatusCode::kOk);
  r->set_up_to_generation(5);
  ASSERT_TRUE(node_->Invalidate("a", inv, &ir).ok());
  EXPECT_EQ(ir.pages_freed(), 1u);
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 3, &out), absl::StatusCode::kNotFound);
}

TEST_F(NodeTest, EveryMalformedFieldIsInvalidArgument) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  const auto good = WirePage(kSwapPool, 1, MakePage(1));
  auto expect_invalid = [&](v1::Page p, const char* what) {
    EXPECT_EQ(StorePage("a", 1, p), absl::StatusCode::kInvalidArgument) << what;
  };
  v1::Page p = good;
  p.set_encoding(v1::ENCODING_UNSPECIFIED);
  expect_invalid(p, "unspecified encoding");
  p = good;
  p.set_encoding(static_cast<v1::Encoding>(17));
  expect_invalid(p, "unknown encoding");
  p = good;
  p.set_uncompressed_length(8192);
  expect_invalid(p, "uncompressed length");
  p = good;
  p.set_checksum(good.checksum() ^ 1);
  expect_invalid(p, "checksum");
  p = good;
  p.mutable_payload()->append(5000, 'x');
  expect_invalid(p, "oversize payload");
  p = good;
  p.mutable_payload()->resize(3);
  expect_invalid(p, "truncated payload");
  p = good;
  p.set_encoding(v1::ENCODING_RAW);
  expect_invalid(p, "wrong encoding for payload");
  p = good;
  p.clear_payload();
  expect_invalid(p, "empty payload");
  // A pool the session did not open.
  p = good;
  p.mutable_key()->set_pool(99);
  EXPECT_EQ(StorePage("a", 1, p), absl::StatusCode::kFailedPrecondition);
  // Too many pages in one batch fails the whole request.
  v1::StoreRequest req;
  req.set_boot_epoch(1);
  for (int i = 0; i <= kMaxPagesPerBatch; ++i) *req.add_pages() = good;
  v1::StoreResponse resp;
  EXPECT_EQ(node_->Store("a", req, &resp).code(), absl::StatusCode::kInvalidArgument);
  // Nothing bad was stored.
  EXPECT_EQ(Status().pages_in_ram() + Status().pages_on_disk(), 0u);
  EXPECT_EQ(Status().ops().stores_refused(), 9u);
  // Bad sessions.
  v1::OpenSessionRequest os;
  os.set_boot_epoch(2);
  os.add_pools()->set_id(1);  // kind unspecified
  v1::OpenSessionResponse osr;
  EXPECT_EQ(node_->OpenSession("a", os, &osr).code(), absl::StatusCode::kInvalidArgument);
  os.mutable_pools(0)->set_kind(v1::POOL_KIND_PERSISTENT);
  *os.add_pools() = os.pools(0);
  EXPECT_EQ(node_->OpenSession("a", os, &osr).code(), absl::StatusCode::kInvalidArgument);
  v1::InvalidateRequest inv;
  inv.set_boot_epoch(1);
  inv.add_ranges();  // no scope
  v1::InvalidateResponse ir;
  EXPECT_EQ(node_->Invalidate("a", inv, &ir).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(NodeTest, QuotaRefusesPerPageNotPerBatch) {
  // Room for a handful of pages for this client.
  Start(16 << 20, 64 << 20, /*quota=*/5 * ClientCharge(kPageSize));
  Open("a", 1);
  v1::StoreRequest req;
  req.set_boot_epoch(1);
  for (int i = 0; i < 8; ++i) *req.add_pages() = WirePage(kSwapPool, i, MakePage(i, false));
  v1::StoreResponse resp;
  ASSERT_TRUE(node_->Store("a", req, &resp).ok());
  int ok = 0, refused = 0;
  for (const auto& r : resp.results()) {
    if (r.code() == 0) ++ok;
    if (r.code() == static_cast<int>(absl::StatusCode::kResourceExhausted)) ++refused;
  }
  EXPECT_EQ(ok, 5);
  EXPECT_EQ(refused, 3);
  v1::ListClientsResponse clients;
  node_->ListClients(&clients);
  ASSERT_EQ(clients.clients_size(), 1);
  EXPECT_EQ(clients.clients(0).pages_in_ram(), 5u);
  // Other clients are not affected by a's quota... but have their own.
  Open("b", 1);
  EXPECT_EQ(StorePage("b", 1, WirePage(kSwapPool, 0, MakePage(0, false))), absl::StatusCode::kOk);
  // An admin raises a's quota; it can store again.
  v1::ClientUsage usage;
  ASSERT_TRUE(node_->SetClientQuota("a", 100 * ClientCharge(kPageSize), &usage).ok());
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 9, MakePage(9, false))), absl::StatusCode::kOk);
}

TEST_F(NodeTest, ConcurrentStoresNeverPassTheLimits) {
  const uint64_t kRam = 4 << 20;
  const uint64_t kQuota = 1 << 20;
  Start(kRam, /*disk=*/0, kQuota);  // no disk: RAM is the only tier
  const int kClients = 6;
  for (int c = 0; c < kClients; ++c) Open("c" + std::to_string(c), 1);
  std::atomic<uint64_t> max_ram{0};
  std::vector<std::thread> threads;
  std::vector<int> accepted(kClients * 2, 0);
  for (int t = 0; t < kClients * 2; ++t) {
    threads.emplace_back([&, t] {
      std::string client = "c" + std::to_string(t % kClients);
      for (int i = 0; i < 400; ++i) {
        uint64_t index = static_cast<uint64_t>(t) * 1000 + i;
        auto code = StorePage(client, 1, WirePage(kSwapPool, index, MakePage(index, i % 2)));
        if (code == absl::StatusCode::kOk) {
          ++accepted[t];
        } else {
          EXPECT_EQ(code, absl::StatusCode::kResourceExhausted);
        }
        uint64_t used = node_->ram_used(), prev = max_ram.load();
        while (used > prev && !max_ram.compare_exchange_weak(prev, used)) {
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(max_ram.load(), kRam);
  auto st = Status();
  EXPECT_LE(st.ram_used_bytes(), kRam);
  uint64_t total_pages = 0;
  for (const auto& c : st.clients()) {
    // Each client's charge stays within its grant.
    EXPECT_LE(c.ram_bytes() + c.index_bytes(), kQuota) << c.client_id();
    EXPECT_GE(c.index_bytes(), c.pages_in_ram() * sizeof(PageEntry)) << c.client_id();
    total_pages += c.pages_in_ram();
  }
  int sum = 0;
  for (int a : accepted) sum += a;
  EXPECT_EQ(total_pages, static_cast<uint64_t>(sum));
  EXPECT_GT(sum, 100);  // it really stored
  EXPECT_GT(st.ops().stores_refused(), 0u);  // and really hit the limits
}

TEST_F(NodeTest, PersistentPagesSpillToDiskAndComeBack) {
  Start(2 << 20, 64 << 20);
  Open("a", 1);
  const int kPages = 1500;  // ~6 MiB raw, far more than 2 MiB of RAM
  for (int i = 0; i < kPages; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, i % 3 == 0))),
              absl::StatusCode::kOk)
        << i;
    ASSERT_LE(node_->ram_used(), 2u << 20);
  }
  auto st = Status();
  EXPECT_GT(st.pages_on_disk(), 0u);
  EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), static_cast<uint64_t>(kPages));
  for (int i = 0; i < kPages; ++i) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk) << i;
    ASSERT_EQ(out, MakePage(i, i % 3 == 0)) << i;
  }
}

TEST_F(NodeTest, WriteBackMovesColdPagesBelowTheLowWatermark) {
  Start(4 << 20, 64 << 20);
  Open("a", 1);
  for (int i = 0; i < 1500; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))),
              absl::StatusCode::kOk);
  }
  node_->RunMaintenanceForTest();
  auto st = Status();
  EXPECT_LE(st.ram_used_bytes(), static_cast<uint64_t>(0.8 * (4 << 20)));
  EXPECT_GT(st.ops().pages_written_back(), 0u);
  EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), 1500u);
}

TEST_F(NodeTest, EphemeralPagesAreDroppedFirstAndNeverSpill) {
  Start(2 << 20, 64 << 20);
  Open("a", 1);
  int stored = 0;
  for (int i = 0; i < 1000; ++i) {
    if (StorePage("a", 1, WirePage(kCachePool, i, MakePage(i, false))) == absl::StatusCode::kOk) {
      ++stored;
    }
    ASSERT_LE(node_->ram_used(), 2u << 20);
  }
  EXPECT_EQ(stored, 1000);  // room made by dropping older ephemeral pages
  auto st = Status();
  EXPECT_EQ(st.pages_on_disk(), 0u);
  EXPECT_GT(st.ops().ephemeral_dropped(), 0u);
  EXPECT_LT(st.pages_in_ram(), 1000u);
  // The newest is there; the oldest were dropped (a miss, not an error).
  std::vector<uint8_t> out;
  int misses = 0;
  for (int i = 0; i < 1000; ++i) {
    auto code = LoadPage("a", 1, kCachePool, i, &out);
    if (code == absl::StatusCode::kNotFound) {
      ++misses;
    } else {
      ASSERT_EQ(code, absl::StatusCode::kOk);
      ASSERT_EQ(out, MakePage(i, false));
    }
  }
  EXPECT_EQ(static_cast<uint64_t>(1000 - misses), st.pages_in_ram());
  // Persistent pages push ephemeral ones out of RAM.
  uint64_t dropped_before = st.ops().ephemeral_dropped();
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  node_->RunMaintenanceForTest();
  EXPECT_GT(Status().ops().ephemeral_dropped(), dropped_before);
}

TEST_F(NodeTest, RangeInvalidation) {
  Start(1 << 20, 64 << 20);  // small RAM: some pages on disk too
  Open("a", 1);
  for (uint64_t object = 0; object < 3; ++object) {
    for (uint64_t i = 0; i < 200; ++i) {
      auto p = WirePage(kSwapPool, i, MakePage(object * 1000 + i, false));
      p.mutable_key()->set_object(object);
      ASSERT_EQ(StorePage("a", 1, p), absl::StatusCode::kOk);
    }
  }
  ASSERT_GT(Status().pages_on_disk(), 0u);
  v1::InvalidateRequest inv;
  inv.set_boot_epoch(1);
  inv.add_ranges()->mutable_object()->set_pool(kSwapPool);
  inv.mutable_ranges(0)->mutable_object()->set_object(1);
  auto* one = inv.add_ranges()->mutable_page();
  one->set_pool(kSwapPool);
  one->set_object(2);
  one->set_index(5);
  v1::InvalidateResponse ir;
  ASSERT_TRUE(node_->Invalidate("a", inv, &ir).ok());
  EXPECT_EQ(ir.pages_freed(), 201u);
  auto st = Status();
  EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), 399u);
  v1::LoadRequest lr;
  lr.set_boot_epoch(1);
  for (uint64_t object = 0; object < 3; ++object) {
    auto* k = lr.add_keys();
    k->set_pool(kSwapPool);
    k->set_object(object);
    k->set_index(5);
  }
  v1::LoadResponse lresp;
  ASSERT_TRUE(node_->Load("a", lr, &lresp).ok());
  EXPECT_EQ(lresp.results(0).status().code(), 0);
  EXPECT_EQ(lresp.results(1).status().code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(lresp.results(2).status().code(), static_cast<int>(absl::StatusCode::kNotFound));
  // The whole pool.
  EXPECT_EQ(InvalidatePool("a", 1, kSwapPool), 399);
  st = Status();
  EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), 0u);
  EXPECT_EQ(st.disk_used_bytes(), 0u);
  EXPECT_EQ(st.payload_bytes(), 0u);
}

TEST_F(NodeTest, NewEpochReclaimsTheOldOnesPages) {
  Start(1 << 20, 64 << 20);
  Open("a", 1);
  Open("b", 1);
  for (int i = 0; i < 400; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  ASSERT_EQ(StorePage("b", 1, WirePage(kSwapPool, 0, MakePage(0))), absl::StatusCode::kOk);
  Open("a", 2);
  EXPECT_EQ(last_reclaimed_, 400u);
  std::vector<uint8_t> out;
  EXPECT_EQ(LoadPage("a", 2, kSwapPool, 3, &out), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 3, &out), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(LoadPage("b", 1, kSwapPool, 0, &out), absl::StatusCode::kOk);
  auto st = Status();
  EXPECT_EQ(st.pages_in_ram() + st.pages_on_disk(), 1u);
  // Reopening with the same epoch resumes: nothing is reclaimed.
  ASSERT_EQ(StorePage("a", 2, WirePage(kSwapPool, 1, MakePage(1))), absl::StatusCode::kOk);
  Open("a", 2);
  EXPECT_EQ(last_reclaimed_, 0u);
  EXPECT_EQ(LoadPage("a", 2, kSwapPool, 1, &out), absl::StatusCode::kOk);
}

TEST_F(NodeTest, ExpiredLeaseReclaims) {
  NodeOptions o;
  o.ram_limit = 8 << 20;
  o.disk_limit = 8 << 20;
  o.data_dir = dir_;
  o.lease = absl::Milliseconds(50);
  o.maintenance_interval = absl::Hours(1);
  auto n = Node::Open(o);
  ASSERT_TRUE(n.ok());
  node_ = std::move(*n);
  Open("a", 1);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 1, MakePage(1))), absl::StatusCode::kOk);
  absl::SleepFor(absl::Milliseconds(120));
  node_->RunMaintenanceForTest();
  EXPECT_EQ(Status().pages_in_ram(), 0u);
  std::vector<uint8_t> out;
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 1, &out), absl::StatusCode::kFailedPrecondition);
  Open("a", 1);  // the same boot may come back, with nothing stored
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 1, &out), absl::StatusCode::kNotFound);
}

TEST_F(NodeTest, ShutdownAndReopenKeepsPersistentPages) {
  Start(1 << 20, 64 << 20);
  Open("a", 7);
  for (int i = 0; i < 600; ++i) {
    ASSERT_EQ(StorePage("a", 7, WirePage(kSwapPool, i, MakePage(i, i % 2), i + 1)),
              absl::StatusCode::kOk);
  }
  // RAM is full of persistent pages; write-back (not left to the background
  // thread's timing) makes room for the ephemeral ones, which may not push
  // persistent pages out themselves.
  node_->RunMaintenanceForTest();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(StorePage("a", 7, WirePage(kCachePool, i, MakePage(i))), absl::StatusCode::kOk);
  }
  v1::ClientUsage usage;
  ASSERT_TRUE(node_->SetClientQuota("a", 1ull << 30, &usage).ok());
  auto lost = node_->Shutdown();
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(*lost, 0u);
  uint64_t disk_before = Status().disk_used_bytes();
  Start(1 << 20, 64 << 20);
  auto st = Status();
  EXPECT_EQ(st.pages_on_disk(), 600u);  // ephemeral pages are not kept
  EXPECT_EQ(st.disk_used_bytes(), disk_before);
  ASSERT_EQ(st.clients_size(), 1);
  EXPECT_EQ(st.clients(0).quota_bytes(), 1ull << 30);
  EXPECT_EQ(st.clients(0).boot_epoch(), 7u);
  // The same boot resumes without reopening (its session survived).
  for (int i = 0; i < 600; ++i) {
    std::vector<uint8_t> out;
    uint64_t gen;
    ASSERT_EQ(LoadPage("a", 7, kSwapPool, i, &out, &gen), absl::StatusCode::kOk) << i;
    ASSERT_EQ(out, MakePage(i, i % 2));
    ASSERT_EQ(gen, static_cast<uint64_t>(i + 1));
  }
  // And can overwrite and invalidate them.
  EXPECT_EQ(StorePage("a", 7, WirePage(kSwapPool, 0, MakePage(5000), 99)), absl::StatusCode::kOk);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 7, kSwapPool, 0, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, MakePage(5000));
}

TEST_F(NodeTest, LoweringTheMemoryLimitMovesPagesOut) {
  Start(8 << 20, 64 << 20);
  Open("a", 1);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kCachePool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  ASSERT_GT(node_->ram_used(), 4u << 20);
  v1::SetMemoryLimitResponse r;
  node_->SetMemoryLimit(2 << 20, &r);
  EXPECT_EQ(r.ram_limit_bytes(), 2u << 20);
  EXPECT_LE(r.ram_used_bytes(), 2u << 20);
  EXPECT_EQ(r.ram_over_limit_bytes(), 0u);
  EXPECT_EQ(r.ephemeral_dropped(), 200u);
  EXPECT_GT(r.pages_written_back(), 0u);
  for (int i = 0; i < 1000; i += 37) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk);
    EXPECT_EQ(out, MakePage(i, false));
  }
}

TEST_F(NodeTest, LoweringTheLimitGivesBackAtOnceWhatWentBackLazily) {
  Start(256 << 20, 64 << 20);
  Open("a", 1);
  // Incompressible pages: a slab page each, 32 MiB.
  for (int i = 0; i < 8192; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  ASSERT_EQ(InvalidatePool("a", 1, kSwapPool), 8192);
  // The empty pages the slab keeps for the next stores are reported (and
  // still charged).
  const v1::NodeStatus st = Status();
  EXPECT_GT(st.slab_cached_bytes(), 0u);
  EXPECT_LE(st.slab_cached_bytes(), SlabAllocator::kMaxCachedBytes);
  EXPECT_LE(st.slab_cached_bytes(), st.ram_used_bytes());
  // Freed, the pages went back lazily (a few stay in the slab's cache): the
  // kernel, under no pressure, still has them.
  EXPECT_GE(LazyFreeBytes(), uint64_t{8} << 20);
  // A lowered limit wants the memory back now, though nothing is evicted.
  v1::SetMemoryLimitResponse r;
  node_->SetMemoryLimit(128 << 20, &r);
  EXPECT_EQ(r.pages_written_back(), 0u);
  EXPECT_LT(LazyFreeBytes(), uint64_t{1} << 20);
  // And the node works on as before.
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 1, MakePage(1, false))), absl::StatusCode::kOk);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 1, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, MakePage(1, false));
}

TEST_F(NodeTest, LoweringWithNoDiskRoomReportsTheExcess) {
  Start(8 << 20, /*disk=*/0);
  Open("a", 1);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i, false))), absl::StatusCode::kOk);
  }
  v1::SetMemoryLimitResponse r;
  node_->SetMemoryLimit(1 << 20, &r);
  EXPECT_GT(r.ram_over_limit_bytes(), 0u);
  EXPECT_EQ(r.ram_over_limit_bytes(), r.ram_used_bytes() - (1u << 20));
  // Full: new stores are refused, and all the old pages are still there.
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 5000, MakePage(5000))),
            absl::StatusCode::kResourceExhausted);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 999, &out), absl::StatusCode::kOk);
  EXPECT_EQ(Status().ram_over_limit_bytes(), r.ram_over_limit_bytes());
}

TEST_F(NodeTest, DrainingRefusesStoresButServesLoads) {
  Start(8 << 20, 8 << 20);
  Open("a", 1);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 1, MakePage(1))), absl::StatusCode::kOk);
  node_->SetDraining(true);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 2, MakePage(2))), absl::StatusCode::kUnavailable);
  std::vector<uint8_t> out;
  EXPECT_EQ(LoadPage("a", 1, kSwapPool, 1, &out), absl::StatusCode::kOk);
  EXPECT_TRUE(Status().draining());
  node_->SetDraining(false);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 2, MakePage(2))), absl::StatusCode::kOk);
}

TEST_F(NodeTest, IndexCostsItsBlocksAndGivesThemBack) {
  Start(64 << 20, 64 << 20);
  Open("a", 1);
  const uint64_t empty = Status().ram_used_bytes();
  // One full index block: 64 consecutive pages of one object.
  for (uint64_t i = 0; i < PageTable::kBlockPages; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, MakePage(i))), absl::StatusCode::kOk);
  }
  v1::NodeStatus st = Status();
  const uint64_t block = PageTable::kBlockOverhead + PageTable::kBlockPages * sizeof(PageEntry);
  EXPECT_EQ(st.index_bytes(), block);
  ASSERT_EQ(st.clients_size(), 1);
  EXPECT_EQ(st.clients(0).index_bytes(), block);
  EXPECT_GE(st.ram_used_bytes(), empty + block + st.payload_bytes());
  // Overwrites cost nothing more.
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 5, MakePage(99), /*generation=*/2)),
            absl::StatusCode::kOk);
  EXPECT_EQ(Status().index_bytes(), block);
  // Invalidating them all gives the index back.
  v1::InvalidateRequest inv;
  inv.set_boot_epoch(1);
  for (uint64_t i = 0; i < PageTable::kBlockPages; ++i) {
    v1::PageKey* k = inv.add_ranges()->mutable_page();
    k->set_pool(kSwapPool);
    k->set_index(i);
  }
  v1::InvalidateResponse ir;
  ASSERT_TRUE(node_->Invalidate("a", inv, &ir).ok());
  EXPECT_EQ(ir.pages_freed(), PageTable::kBlockPages);
  st = Status();
  EXPECT_EQ(st.index_bytes(), 0u);
  EXPECT_EQ(st.clients(0).index_bytes(), 0u);
}

TEST_F(NodeTest, RefusesGenerationsBeyond32Bits) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 0, MakePage(0), uint64_t{1} << 32)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StorePage("a", 1, WirePage(kSwapPool, 0, MakePage(0), UINT32_MAX)),
            absl::StatusCode::kOk);
}

// Text of a small vocabulary, as in heaps and page caches: what LZ4 at its
// fastest leaves room in and LZ4HC finds.
std::vector<uint8_t> TextPage(uint64_t seed) {
  static const char* kWords[] = {"ramster ", "page ", "swap ", "cold ", "peer ",
                                 "memory ", "kernel ", "tier ", "the ", "of "};
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(seed);
  size_t off = 0;
  while (off < kPageSize) {
    const char* w = kWords[rng() % 10];
    for (size_t i = 0; w[i] != 0 && off < kPageSize; ++i) page[off++] = w[i];
  }
  return page;
}

TEST_F(NodeTest, RecompressionShrinksLz4PagesAndLoadsReturnTheSamePages) {
  recompress_level_ = 2;
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  std::vector<std::vector<uint8_t>> pages;
  for (uint64_t i = 0; i < 300; ++i) {
    // Text, then every tenth page random (raw), one same-filled.
    pages.push_back(i == 7 ? std::vector<uint8_t>(kPageSize, 0x5a)
                           : i % 10 == 3 ? MakePage(i, /*compressible=*/false) : TextPage(i));
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, pages.back())), absl::StatusCode::kOk);
  }
  const v1::NodeStatus before = Status();
  EXPECT_EQ(before.ops().pages_recompressed(), 0u);
  // A first walk marks the LZ4 pages, the second recompresses them, and
  // then there is nothing left.
  EXPECT_EQ(RecompressAll(), 2 * (300u - 30 - 1));
  EXPECT_EQ(node_->RecompressSome(64), 0u);
  const v1::NodeStatus after = Status();
  const uint64_t text_pages = 300 - 30 - 1;
  EXPECT_GT(after.ops().pages_recompressed(), text_pages / 2);
  EXPECT_LE(after.ops().pages_recompressed(), text_pages);
  const uint64_t saved = after.ops().recompressed_bytes_saved();
  EXPECT_GT(saved, after.ops().pages_recompressed() * SlabAllocator::kGranularity);
  // Every figure follows the smaller payloads.
  EXPECT_EQ(after.payload_bytes(), before.payload_bytes() - saved);
  EXPECT_EQ(after.clients(0).ram_bytes(), before.clients(0).ram_bytes() - saved);
  // (Slab pages the moves emptied may be kept for the next stores.)
  EXPECT_LT(after.ram_used_bytes() - after.slab_cached_bytes(),
            before.ram_used_bytes() - before.slab_cached_bytes());
  EXPECT_GT(after.compression_ratio(), before.compression_ratio());
  EXPECT_EQ(after.pages_in_ram(), 300u);
  for (uint64_t i = 0; i < pages.size(); ++i) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk) << i;
    EXPECT_EQ(out, pages[i]) << i;
  }
  // A new copy of a page is new to the walk; older ones stay as they are.
  pages[5] = TextPage(1005);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 5, pages[5], /*generation=*/2)),
            absl::StatusCode::kOk);
  EXPECT_EQ(RecompressAll(), 2u);
  EXPECT_EQ(Status().ops().pages_recompressed(), after.ops().pages_recompressed() + 1);
  std::vector<uint8_t> out;
  uint64_t generation = 0;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 5, &out, &generation), absl::StatusCode::kOk);
  EXPECT_EQ(out, pages[5]);
  EXPECT_EQ(generation, 2u);
  // Freeing the pages gives everything back, the smaller payloads included.
  EXPECT_EQ(InvalidatePool("a", 1, kSwapPool), 300);
  const v1::NodeStatus empty = Status();
  EXPECT_EQ(empty.payload_bytes(), 0u);
  EXPECT_EQ(empty.clients(0).ram_bytes(), 0u);
}

TEST_F(NodeTest, TheRecompressionThreadTakesNewStores) {
  recompress_level_ = 2;
  recompress_thread_ = true;
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  for (int round = 1; round <= 2; ++round) {
    for (uint64_t i = 0; i < 100; ++i) {
      ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, TextPage(i * 10 + round), round)),
                absl::StatusCode::kOk);
    }
    // It runs on CPU time nothing else wants: give it a while.
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (Status().ops().pages_recompressed() < 100u * round && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(Status().ops().pages_recompressed(), 100u * round);
    for (uint64_t i = 0; i < 100; ++i) {
      std::vector<uint8_t> out;
      ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk);
      EXPECT_EQ(out, TextPage(i * 10 + round)) << i;
    }
  }
}

TEST_F(NodeTest, RecompressionWaitsUntilACopyIsOneAgeOld) {
  recompress_level_ = 2;
  recompress_age_ = absl::Milliseconds(300);
  step_clock_ = true;
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, TextPage(i))), absl::StatusCode::kOk);
  }
  EXPECT_EQ(node_->RecompressSome(64), 10u);  // marked
  EXPECT_EQ(node_->RecompressSome(64), 0u);   // the next walk is not due
  EXPECT_EQ(Status().ops().pages_recompressed(), 0u);
  // A copy stored meanwhile is new to the next walk.
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 0, TextPage(100), 2)), absl::StatusCode::kOk);
  now_ += absl::Milliseconds(350);
  EXPECT_EQ(node_->RecompressSome(64), 10u);  // 9 recompressed, the new copy marked
  EXPECT_EQ(Status().ops().pages_recompressed(), 9u);
  EXPECT_EQ(node_->RecompressSome(64), 0u);
  now_ += absl::Milliseconds(350);
  EXPECT_EQ(node_->RecompressSome(64), 1u);
  EXPECT_EQ(Status().ops().pages_recompressed(), 10u);
  // Nothing stored since, nothing marked: no walk at all.
  now_ += absl::Milliseconds(350);
  EXPECT_EQ(node_->RecompressSome(64), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(LoadPage("a", 1, kSwapPool, 0, &out), absl::StatusCode::kOk);
  EXPECT_EQ(out, TextPage(100));
}

TEST_F(NodeTest, RecompressionOffLooksAtNothing) {
  Start(16 << 20, 64 << 20);
  Open("a", 1);
  ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, 0, TextPage(0))), absl::StatusCode::kOk);
  EXPECT_EQ(node_->RecompressSome(64), 0u);
  EXPECT_EQ(Status().ops().pages_recompressed(), 0u);
}

// Half random, half zeros: LZ4 compresses it to about half, and LZ4HC can do
// no better (the random half has nothing to find).
std::vector<uint8_t> HalfRandomPage(uint64_t seed) {
  std::vector<uint8_t> page(kPageSize, 0);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < kPageSize / 2; ++i) page[i] = static_cast<uint8_t>(rng());
  return page;
}

TEST_F(NodeTest, RecompressionPassesOverPagesWhileItSavesLittleAndResumesWhenItSavesMore) {
  recompress_level_ = 2;
  Start(64 << 20, 64 << 20);
  Open("a", 1);
  constexpr uint64_t kPoor = 1500;
  for (uint64_t i = 0; i < kPoor; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, HalfRandomPage(i))),
              absl::StatusCode::kOk);
  }
  EXPECT_EQ(Status().recompress_one_in(), 1u);
  RecompressAll();
  v1::NodeStatus st = Status();
  // Every page settled, most of them untried once the first ones tried
  // showed that LZ4HC saves next to nothing on them.
  EXPECT_EQ(st.ops().pages_recompress_tried() + st.ops().pages_recompress_passed_over(), kPoor);
  EXPECT_LT(st.ops().pages_recompress_tried(), kPoor / 4);
  EXPECT_GT(st.recompress_one_in(), 1u);
  EXPECT_LT(st.ops().recompressed_bytes_saved() * 32, st.ops().recompress_tried_bytes());
  EXPECT_EQ(node_->RecompressSome(64), 0u);  // nothing left to try

  // Pages on which it pays: the candidates tried show it, and it tries them
  // all again.
  constexpr uint64_t kRich = 3000;
  for (uint64_t i = 0; i < kRich; ++i) {
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, kPoor + i, TextPage(i))),
              absl::StatusCode::kOk);
  }
  RecompressAll();
  const v1::NodeStatus after = Status();
  EXPECT_EQ(after.recompress_one_in(), 1u);
  EXPECT_EQ(after.ops().pages_recompress_tried() + after.ops().pages_recompress_passed_over(),
            kPoor + kRich);
  EXPECT_GT(after.ops().pages_recompressed() - st.ops().pages_recompressed(), kRich / 4);
  for (uint64_t i = 0; i < kPoor + kRich; i += 7) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk) << i;
    EXPECT_EQ(out, i < kPoor ? HalfRandomPage(i) : TextPage(i - kPoor)) << i;
  }
}

TEST_F(NodeTest, PagesOnDiskAreNotRecompressedAndComeBackWhole) {
  recompress_level_ = 2;
  Start(/*ram=*/1 << 20, /*disk=*/64 << 20);
  Open("a", 1);
  std::vector<std::vector<uint8_t>> pages;
  for (uint64_t i = 0; i < 1500; ++i) {  // more than 1 MiB of payloads: some spill
    pages.push_back(TextPage(i));
    ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, pages.back())), absl::StatusCode::kOk);
  }
  ASSERT_GT(Status().pages_on_disk(), 0u);
  // A full RAM tier has no room for a new copy beside the old one; the
  // watermarks' write-back (run by hand here) makes some.
  node_->RunMaintenanceForTest();
  RecompressAll();
  const v1::NodeStatus st = Status();
  EXPECT_GT(st.ops().pages_recompressed(), 0u);
  EXPECT_LE(st.ops().pages_recompressed(), st.pages_in_ram());
  for (uint64_t i = 0; i < pages.size(); ++i) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk) << i;
    EXPECT_EQ(out, pages[i]) << i;
  }
  // Recompressed pages written back to disk keep their smaller payloads
  // there and come back whole.
  v1::SetMemoryLimitResponse lowered;
  node_->SetMemoryLimit(128 << 10, &lowered);
  EXPECT_GT(lowered.pages_written_back(), 0u);
  EXPECT_EQ(Status().payload_bytes(), st.payload_bytes());
  for (uint64_t i = 0; i < pages.size(); ++i) {
    std::vector<uint8_t> out;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out), absl::StatusCode::kOk) << i;
    EXPECT_EQ(out, pages[i]) << i;
  }
}

TEST_F(NodeTest, RecompressionRacesStoresLoadsAndInvalidates) {
  recompress_level_ = 2;
  Start(32 << 20, 64 << 20);
  Open("a", 1);
  constexpr uint64_t kPages = 512;
  // What each page holds now: the generation of its last store, 0 when it
  // was invalidated. Writers own disjoint index ranges.
  std::vector<std::atomic<uint32_t>> gen(kPages);
  std::atomic<bool> stop{false};
  std::thread walker([&] {
    while (!stop.load()) node_->RecompressSome(32);
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < 2; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int step = 0; step < 3000; ++step) {
        const uint64_t i = static_cast<uint64_t>(t) * (kPages / 2) + rng() % (kPages / 2);
        const uint32_t g = gen[i].load();
        const int op = static_cast<int>(rng() % 10);
        if (op < 5) {
          ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, TextPage(i * 1000 + g + 1), g + 1)),
                    absl::StatusCode::kOk);
          gen[i] = g + 1;
        } else if (op < 9) {
          std::vector<uint8_t> out;
          uint64_t got = 0;
          const absl::StatusCode code = LoadPage("a", 1, kSwapPool, i, &out, &got);
          if (g == 0) {
            ASSERT_EQ(code, absl::StatusCode::kNotFound);
          } else {
            ASSERT_EQ(code, absl::StatusCode::kOk);
            ASSERT_EQ(got, g);
            ASSERT_EQ(out, TextPage(i * 1000 + g));
          }
        } else if (g != 0) {
          v1::InvalidateRequest req;
          req.set_boot_epoch(1);
          v1::PageKey* k = req.add_ranges()->mutable_page();
          k->set_pool(kSwapPool);
          k->set_index(i);
          v1::InvalidateResponse resp;
          ASSERT_TRUE(node_->Invalidate("a", req, &resp).ok());
          ASSERT_EQ(resp.pages_freed(), 1u);
          // The next store starts the page over at a higher generation.
          gen[i] = 0;
          ASSERT_EQ(StorePage("a", 1, WirePage(kSwapPool, i, TextPage(i * 1000 + g + 1), g + 1)),
                    absl::StatusCode::kOk);
          gen[i] = g + 1;
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  stop = true;
  walker.join();
  RecompressAll();
  const v1::NodeStatus st = Status();
  EXPECT_GT(st.ops().pages_recompressed(), 0u);
  // The accounts agree with what is there.
  uint64_t held = 0;
  for (uint64_t i = 0; i < kPages; ++i) {
    const uint32_t g = gen[i].load();
    std::vector<uint8_t> out;
    uint64_t got = 0;
    if (g == 0) {
      EXPECT_EQ(LoadPage("a", 1, kSwapPool, i, &out, &got), absl::StatusCode::kNotFound);
      continue;
    }
    ++held;
    ASSERT_EQ(LoadPage("a", 1, kSwapPool, i, &out, &got), absl::StatusCode::kOk) << i;
    EXPECT_EQ(got, g);
    EXPECT_EQ(out, TextPage(i * 1000 + g)) << i;
  }
  EXPECT_EQ(st.pages_in_ram(), held);
  EXPECT_EQ(st.clients(0).ram_bytes(), st.payload_bytes());
  EXPECT_EQ(InvalidatePool("a", 1, kSwapPool), static_cast<int64_t>(held));
  EXPECT_EQ(Status().payload_bytes(), 0u);
  EXPECT_EQ(Status().ram_used_bytes(), Status().slab_cached_bytes());
}

}  // namespace
}  // namespace ramster
