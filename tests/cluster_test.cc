// The client tier stack against real ramster-servers on loopback: peers die
// with SIGKILL, fill up, vanish all at once and come back; every page the
// stack acknowledged must read back identical, never stale.
#include <grpcpp/grpcpp.h>

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "client/cluster_tier.h"
#include "client/fault_tier.h"
#include "client/local_file_tier.h"
#include "client/tier_stack.h"
#include "common/test_temp_dir.h"
#include "gtest/gtest.h"
#include "ramster/v1/admin.grpc.pb.h"
#include "tests/server_process.h"

namespace ramster {
namespace {

constexpr uint32_t kPool = 1;

// Contents of slot `slot` at version `version`: mostly compressible.
std::vector<uint8_t> Content(uint64_t slot, uint64_t version) {
  std::vector<uint8_t> p(kPageSize);
  std::mt19937_64 rng(slot * 7919 + version);
  for (size_t i = 0; i < kPageSize; ++i) {
    p[i] = (slot % 5 == 0) ? static_cast<uint8_t>(rng())
                           : static_cast<uint8_t>("ramster swaps cold pages "[(i + version) % 25]);
  }
  return p;
}

// Content of slots 0..slots-1, one after the other.
std::vector<uint8_t> RangeContent(uint64_t slots, uint64_t version) {
  std::vector<uint8_t> data;
  for (uint64_t s = 0; s < slots; ++s) {
    auto p = Content(s, version);
    data.insert(data.end(), p.begin(), p.end());
  }
  return data;
}

class Cluster {
 public:
  // `extra`: more flags for every server.
  Cluster(int n, const std::string& ram, const std::string& quota = "0",
          const std::vector<std::string>& extra = {}) {
    for (int i = 0; i < n; ++i) {
      dirs_.push_back(MakeTestTempDir("node"));
      std::vector<std::string> args = {"--memory-limit=" + ram, "--disk-limit=256M",
                                       "--data-dir=" + dirs_.back(), "--client-quota=" + quota,
                                       "--node-id=node" + std::to_string(i)};
      args.insert(args.end(), extra.begin(), extra.end());
      servers_.push_back(
          std::make_unique<ServerProcess>(RunfilePath("server/ramster-server"), std::move(args)));
      EXPECT_TRUE(servers_.back()->Start()) << servers_.back()->log();
      ports_.push_back(servers_.back()->port());
    }
  }
  std::vector<std::string> addresses() const {
    std::vector<std::string> a;
    for (int p : ports_) a.push_back("127.0.0.1:" + std::to_string(p));
    return a;
  }
  ServerProcess& server(int i) { return *servers_[i]; }
  bool Restart(int i) { return servers_[i]->Start(ports_[i]); }
  int size() const { return static_cast<int>(servers_.size()); }

  v1::NodeStatus Status(int i) {
    auto channel = grpc::CreateChannel(addresses()[i], grpc::InsecureChannelCredentials());
    auto admin = v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::NodeStatus st;
    EXPECT_TRUE(admin->GetStatus(&ctx, v1::GetStatusRequest(), &st).ok());
    return st;
  }
  // Pages each node has loaded (its ops counter), by node.
  std::vector<uint64_t> Loads() {
    std::vector<uint64_t> n;
    for (int i = 0; i < size(); ++i) n.push_back(Status(i).ops().loads());
    return n;
  }
  void Drain(int i) {
    auto channel = grpc::CreateChannel(addresses()[i], grpc::InsecureChannelCredentials());
    auto admin = v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    v1::DrainRequest req;
    req.set_drain(true);
    v1::DrainResponse resp;
    EXPECT_TRUE(admin->Drain(&ctx, req, &resp).ok());
  }

 private:
  std::vector<std::string> dirs_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::vector<int> ports_;
};

struct Client {
  ClusterTier* cluster = nullptr;
  LocalFileTier* file = nullptr;
  std::unique_ptr<TierStack> stack;
};

// `reply_poll`: how long a thread waiting for a Load reply polls for it (the
// shim polls; the tests that pass it cover that path, the others the one
// that sleeps at once).
Client MakeClient(const Cluster& c, uint64_t slots, int replicas, const std::string& self = "",
                  absl::Duration timeout = absl::Seconds(1),
                  absl::Duration reply_poll = absl::ZeroDuration()) {
  ClusterOptions o;
  o.peers = c.addresses();
  o.self_node_id = self;
  o.replicas = replicas;
  o.health_interval = absl::Milliseconds(200);
  o.peer.client_id = "test-host";
  o.peer.boot_epoch = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  o.peer.pool = kPool;
  o.peer.call_timeout = timeout;
  o.peer.reply_poll = reply_poll;
  auto cluster = ClusterTier::Create(o);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  auto file = LocalFileTier::Open(MakeTestTempDir("swap") + "/swapfile", slots);
  EXPECT_TRUE(file.ok()) << file.status();
  Client cl{cluster->get(), file->get(), nullptr};
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(*cluster));
  tiers.push_back(std::move(*file));
  cl.stack = std::make_unique<TierStack>(slots, kPool, std::move(tiers));
  return cl;
}

::testing::AssertionResult ReadsBack(TierStack* stack, uint64_t slot,
                                     const std::vector<uint8_t>& expect) {
  std::vector<uint8_t> out(kPageSize);
  absl::Status s = stack->Load(slot, absl::MakeSpan(out));
  if (!s.ok()) return ::testing::AssertionFailure() << "slot " << slot << ": " << s;
  if (out != expect) return ::testing::AssertionFailure() << "slot " << slot << ": wrong bytes";
  return ::testing::AssertionSuccess();
}

// Slots 0.. read back as `expect` (one LoadRange).
::testing::AssertionResult RangeReadsBack(TierStack* stack, const std::vector<uint8_t>& expect) {
  std::vector<uint8_t> out(expect.size());
  absl::Status s = stack->LoadRange(0, absl::MakeSpan(out));
  if (!s.ok()) return ::testing::AssertionFailure() << "LoadRange: " << s;
  if (out != expect) return ::testing::AssertionFailure() << "wrong bytes";
  return ::testing::AssertionSuccess();
}

TEST(Cluster, PagesGoToTwoDistinctPeersNeverSelf) {
  Cluster c(3, "64M");
  Client cl = MakeClient(c, 600, 2, /*self=*/"node0");
  for (uint64_t s = 0; s < 600; ++s) ASSERT_TRUE(cl.stack->Store(s, Content(s, 1)).ok());
  auto st = cl.stack->stats();
  EXPECT_EQ(st.slots_in[0], 600u);  // all in the cluster
  EXPECT_EQ(st.backups, 0u);
  EXPECT_EQ(c.Status(0).pages_in_ram(), 0u);  // never on "our own" node
  EXPECT_EQ(c.Status(1).pages_in_ram(), 600u);
  EXPECT_EQ(c.Status(2).pages_in_ram(), 600u);
  for (uint64_t s = 0; s < 600; ++s) ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, 1)));
  // Invalidation frees remote space (in the background).
  cl.stack->Invalidate(0, 300);
  // Each peer drops its copies on its own time: wait for both.
  for (int i = 0; i < 200 && (c.Status(1).pages_in_ram() > 300 ||
                              c.Status(2).pages_in_ram() > 300);
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(c.Status(1).pages_in_ram(), 300u);
  EXPECT_EQ(c.Status(2).pages_in_ram(), 300u);
}

TEST(Cluster, PeersByNameAreResolvedToAddresses) {
  Cluster c(2, "64M");
  ClusterOptions o;
  for (const std::string& a : c.addresses()) o.peers.push_back("localhost" + a.substr(a.rfind(':')));
  o.replicas = 2;
  o.peer.client_id = "dns-host";
  o.peer.boot_epoch = 1;
  o.peer.pool = kPool;
  auto cluster = ClusterTier::Create(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // "localhost" may resolve to more than one address (127.0.0.1, ::1); each
  // is a peer, and those where nobody listens are simply down.
  int up = 0;
  for (const auto& p : (*cluster)->peers()) {
    EXPECT_NE(p.address.find_first_of("0123456789"), std::string::npos) << p.address;
    up += p.up;
  }
  EXPECT_EQ(up, 2);
  auto file = LocalFileTier::Open(MakeTestTempDir("swap") + "/swapfile", 64);
  ASSERT_TRUE(file.ok());
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(*cluster));
  tiers.push_back(std::move(*file));
  TierStack stack(64, kPool, std::move(tiers));
  for (uint64_t s = 0; s < 64; ++s) ASSERT_TRUE(stack.Store(s, Content(s, 1)).ok());
  EXPECT_EQ(stack.stats().slots_in[0], 64u);
  EXPECT_EQ(c.Status(0).pages_in_ram() + c.Status(1).pages_in_ram(), 128u);
  ClusterOptions bad = o;
  bad.peers = {"no-port-here"};
  auto refused = ClusterTier::Create(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("HOST:PORT"), std::string::npos);
}

TEST(Cluster, RangesTravelInBatchesAndSurviveAPeerDying) {
  Cluster c(3, "64M");
  const uint64_t kSlots = 1024;
  Client cl = MakeClient(c, kSlots, 2);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  uint64_t batches = 0, stores = 0;
  for (const auto& p : cl.cluster->peers()) {
    batches += p.batches;
    stores += p.stores;
  }
  EXPECT_EQ(stores, 2 * kSlots);  // two copies of each page
  // Pages travel many to a request, not one by one.
  EXPECT_LE(batches, stores / 8) << batches << " requests for " << stores << " copies";
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  c.server(0).Kill();
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
}

// A page's placement names its best-ranked peer first (the page-by-page
// load path tries copies in that order), not the one with the lowest id;
// and loads spread over the peers as the copies do.
TEST(Cluster, LoadsSpreadOverThePeersAsTheCopiesDo) {
  Cluster c(3, "64M");
  // 48 runs of pages that rank the peers alike: each peer ranks first for
  // about 16 of them (fewer than 3 happens about once in a million).
  const uint64_t kSlots = 48 * ClusterTier::kPlacementRun;
  Client cl = MakeClient(c, kSlots, 2);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  std::map<int, uint64_t> first;  // runs whose placement names this peer first
  for (uint64_t slot = 0; slot < kSlots; slot += ClusterTier::kPlacementRun) {
    const std::vector<int> ids =
        ClusterTier::DecodePlacement(cl.stack->slot_map()->at(slot).placement());
    ASSERT_EQ(ids.size(), 2u) << slot;
    ++first[ids[0]];
  }
  ASSERT_EQ(first.size(), 3u);
  for (const auto& [id, runs] : first) EXPECT_GE(runs, 3u) << "peer " << id;
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  const std::vector<uint64_t> loads = c.Loads();
  EXPECT_EQ(std::accumulate(loads.begin(), loads.end(), uint64_t{0}), kSlots);
  for (int i = 0; i < c.size(); ++i) {
    EXPECT_GE(loads[i], 3 * ClusterTier::kPlacementRun) << "node" << i << " served " << loads[i];
  }
}

// A batch of pages with copies on every pair of 3 peers asks only 2 of
// them (each page has a copy on one of any 2); which 2 changes from batch to
// batch.
TEST(Cluster, ABatchLoadsFromAsFewPeersAsItCan) {
  Cluster c(3, "64M");
  // One page from each of 32 runs (the stack hands a tier 32 pages as one
  // batch): their copies lie on all three pairs (that one pair has none
  // happens about once in 10^5).
  const uint64_t kRuns = 32;
  Client cl = MakeClient(c, kRuns * ClusterTier::kPlacementRun, 2);
  std::vector<TierStack::SlotStore> stores(kRuns);
  std::vector<std::vector<uint8_t>> pages(kRuns);
  for (uint64_t r = 0; r < kRuns; ++r) {
    pages[r] = Content(r * ClusterTier::kPlacementRun, 1);
    stores[r].slot = r * ClusterTier::kPlacementRun;
    stores[r].page = pages[r];
  }
  cl.stack->StoreSlots(absl::MakeSpan(stores));
  for (const auto& st : stores) ASSERT_TRUE(st.status.ok()) << st.slot << ": " << st.status;
  std::vector<uint64_t> before = c.Loads();
  std::set<int> left_out;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<uint8_t>> out(kRuns, std::vector<uint8_t>(kPageSize));
    std::vector<TierStack::SlotLoad> batch(kRuns);
    for (uint64_t r = 0; r < kRuns; ++r) {
      batch[r].slot = stores[r].slot;
      batch[r].out = absl::MakeSpan(out[r]);
    }
    cl.stack->LoadSlots(absl::MakeSpan(batch));
    for (uint64_t r = 0; r < kRuns; ++r) {
      ASSERT_TRUE(batch[r].status.ok()) << batch[r].slot << ": " << batch[r].status;
      EXPECT_EQ(out[r], pages[r]) << batch[r].slot;
    }
    std::vector<uint64_t> after = c.Loads();
    int asked = 0;
    for (int i = 0; i < c.size(); ++i) {
      if (after[i] > before[i]) {
        ++asked;
      } else {
        left_out.insert(i);
      }
    }
    EXPECT_EQ(asked, 2) << "round " << round;
    before = after;
  }
  // Each round left out a different peer.
  EXPECT_EQ(left_out.size(), 3u);
}

// A peer restarted between two requests leaves the client's idle page
// streams dead; the next request on one is sent again on a new stream, so
// the restart costs no failed request.
TEST(Cluster, APeerRestartedBetweenRequestsCostsNoFailure) {
  Cluster c(1, "64M");
  const uint64_t kSlots = 64;
  Client cl = MakeClient(c, kSlots, 1);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  ASSERT_EQ(cl.stack->stats().slots_in[0], kSlots);
  ASSERT_EQ(c.server(0).Stop(), 0);  // graceful: pages kept
  ASSERT_TRUE(c.Restart(0)) << c.server(0).log();
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
  const auto peers = cl.cluster->peers();
  EXPECT_GE(peers[0].stream_retries, 1u);
  // The server came back on the page link port it had (it keeps it in its
  // data directory): the call that found its idle link dead went on a new
  // link at once, not on gRPC, whose reconnect backoff could refuse it.
  EXPECT_EQ(peers[0].link_failures, 0u);
  EXPECT_TRUE(peers[0].up);
}

TEST(Cluster, PageCallsGoOnThePageLinks) {
  Cluster c(3, "64M");
  const uint64_t kSlots = 256;
  Client cl = MakeClient(c, kSlots, 2);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  for (int slot = 0; slot < 8; ++slot) {
    EXPECT_TRUE(ReadsBack(cl.stack.get(), slot, Content(slot, 1)));
  }
  uint64_t calls = 0;
  for (const auto& p : cl.cluster->peers()) {
    EXPECT_TRUE(p.link_usable) << p.address;
    EXPECT_EQ(p.link_failures, 0u) << p.address;
    calls += p.link_calls;
  }
  // Every page went out in a store and came back in a load on some link.
  EXPECT_GE(calls, 2u * 3);
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
}

TEST(Cluster, WithoutPageLinksPagesGoOnStreams) {
  Cluster c(2, "64M", "0", {"--page-link-port=-1"});
  const uint64_t kSlots = 128;
  Client cl = MakeClient(c, kSlots, 1);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  ASSERT_EQ(cl.stack->stats().slots_in[0], kSlots);
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  for (const auto& p : cl.cluster->peers()) {
    EXPECT_FALSE(p.link_usable);
    EXPECT_EQ(p.link_calls, 0u);
  }
}

TEST(Cluster, ALinkGoneWithItsServerRestartSendsCallsOnStreams) {
  Cluster c(1, "64M");
  const uint64_t kSlots = 64;
  Client cl = MakeClient(c, kSlots, 1);
  const std::vector<uint8_t> data = RangeContent(kSlots, 1);
  ASSERT_TRUE(cl.stack->StoreRange(0, data).ok());
  ASSERT_EQ(cl.stack->stats().slots_in[0], kSlots);
  ASSERT_GT(cl.cluster->peers()[0].link_calls, 0u);
  // The same node back on the same gRPC port, without its page link: the
  // client's idle link is dead, and a new one cannot be made.
  ASSERT_EQ(c.server(0).Stop(), 0);  // graceful: pages kept
  std::vector<std::string> args = c.server(0).args();
  args.push_back("--page-link-port=-1");
  c.server(0).set_args(args);
  ASSERT_TRUE(c.Restart(0)) << c.server(0).log();
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
  auto peer = cl.cluster->peers()[0];
  EXPECT_GE(peer.link_failures, 1u);
  EXPECT_FALSE(peer.link_usable);
  // Health checks now see no link; calls stay on streams and work.
  cl.cluster->CheckNowForTest();
  const uint64_t link_calls = cl.cluster->peers()[0].link_calls;
  ASSERT_TRUE(RangeReadsBack(cl.stack.get(), data));
  peer = cl.cluster->peers()[0];
  EXPECT_FALSE(peer.link_usable);
  EXPECT_EQ(peer.link_calls, link_calls);
  EXPECT_TRUE(peer.up);
}

TEST(Cluster, KillOnePeerDuringWritesAndReadsLosesNothingAndHeals) {
  Cluster c(4, "64M");
  const uint64_t kSlots = 2000;
  Client cl = MakeClient(c, kSlots, 2, "", absl::Seconds(1), absl::Microseconds(150));
  std::vector<uint64_t> version(kSlots, 0);
  std::mt19937_64 rng(3);
  int killed_at = -1;
  for (int op = 0; op < 6000; ++op) {
    if (op == 2500) {
      c.server(1).Kill();
      killed_at = op;
    }
    uint64_t slot = rng() % kSlots;
    if (rng() % 3 != 0) {
      uint64_t v = version[slot] + 1;
      ASSERT_TRUE(cl.stack->Store(slot, Content(slot, v)).ok()) << "op " << op;
      version[slot] = v;
    } else if (version[slot] > 0) {
      ASSERT_TRUE(ReadsBack(cl.stack.get(), slot, Content(slot, version[slot])))
          << "op " << op << " killed at " << killed_at;
    }
  }
  // Every acknowledged page is readable, identical, with a peer down.
  for (uint64_t s = 0; s < kSlots; ++s) {
    if (version[s] > 0) {
      ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, version[s])));
    }
  }
  // The replica count heals on the surviving three.
  for (int i = 0; i < 100 && cl.cluster->SlotsNeedingRepair() > 0; ++i) {
    cl.cluster->CheckNowForTest();
  }
  EXPECT_EQ(cl.cluster->SlotsNeedingRepair(), 0u);
  EXPECT_GT(cl.cluster->repaired(), 0u);
  uint64_t copies = 0;
  for (int i : {0, 2, 3}) copies += c.Status(i).pages_in_ram();
  uint64_t live = 0;
  for (uint64_t s = 0; s < kSlots; ++s) live += version[s] > 0;
  // Two copies of every live page (extra old copies may still be in flight
  // to be invalidated).
  EXPECT_GE(copies, 2 * live);
  for (uint64_t s = 0; s < kSlots; ++s) {
    if (version[s] > 0) {
      ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, version[s])));
    }
  }
}

// The cluster tier wrapped in a fault injector: refusals, failures, delays
// and corrupted copies, one call in N each, under random overwrites and
// reads checked against a model. Writes never fail (the local file takes
// what the cluster refuses); reads return the right bytes or, when the
// injected fault left no good copy, an error, never wrong bytes.
TEST(Cluster, InjectedFaultsNeverYieldWrongBytes) {
  Cluster c(3, "64M");
  const uint64_t kSlots = 300;
  ClusterOptions o;
  o.peers = c.addresses();
  o.replicas = 2;
  o.peer.client_id = "fault-host";
  o.peer.boot_epoch = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  o.peer.pool = kPool;
  auto cluster = ClusterTier::Create(o);
  ASSERT_TRUE(cluster.ok());
  auto file = LocalFileTier::Open(MakeTestTempDir("swap") + "/swapfile", kSlots);
  ASSERT_TRUE(file.ok());
  FaultTier::Faults f;
  f.refuse_store_every = 17;
  f.fail_store_every = 5;
  f.fail_load_every = 7;
  f.corrupt_load_every = 11;
  f.delay_every = 13;
  f.delay = absl::Milliseconds(5);
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::make_unique<FaultTier>(std::move(*cluster), f));
  tiers.push_back(std::move(*file));
  TierStack stack(kSlots, kPool, std::move(tiers));

  std::vector<uint64_t> version(kSlots, 0);
  std::mt19937_64 rng(11);
  int wrong = 0, errors = 0, reads = 0;
  for (int op = 0; op < 3000; ++op) {
    uint64_t slot = rng() % kSlots;
    if (rng() % 2 == 0) {
      ASSERT_TRUE(stack.Store(slot, Content(slot, version[slot] + 1)).ok()) << op;
      version[slot]++;
    } else if (version[slot] > 0) {
      std::vector<uint8_t> out(kPageSize);
      absl::Status s = stack.Load(slot, absl::MakeSpan(out));
      ++reads;
      if (!s.ok()) {
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
        ++errors;
      } else if (out != Content(slot, version[slot])) {
        ++wrong;
      }
    }
  }
  EXPECT_EQ(wrong, 0);
  auto st = stack.stats();
  EXPECT_GT(st.refused_by[0], 0u);  // the faults happened...
  EXPECT_GT(st.stored_in[1], 0u);   // ...and the file took those pages
  // Only reads that met an injected failure or corruption (the wrapper acts
  // on the whole cluster, so no other copy can help) fail.
  EXPECT_LE(errors, reads / 7 + reads / 11 + 2);
  EXPECT_GT(errors, 0);
  EXPECT_EQ(static_cast<uint64_t>(errors), st.load_failures);
}

TEST(Cluster, AHungPeerCostsDeadlinesNotErrors) {
  Cluster c(3, "64M");
  const uint64_t kSlots = 400;
  Client cl = MakeClient(c, kSlots, 2, "", absl::Milliseconds(300), absl::Microseconds(150));
  for (uint64_t s = 0; s < kSlots; ++s) ASSERT_TRUE(cl.stack->Store(s, Content(s, 1)).ok());
  // A peer that hangs (SIGSTOP: its socket stays open, nothing answers):
  // calls to it run into their deadlines, it is marked down, and reads and
  // writes carry on with the other copies and peers.
  ASSERT_EQ(kill(c.server(1).pid(), SIGSTOP), 0);
  for (uint64_t s = 0; s < kSlots; ++s) {
    ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, 1)));
    ASSERT_TRUE(cl.stack->Store(s, Content(s, 2)).ok());
  }
  bool marked_down = false;
  for (const auto& p : cl.cluster->peers()) marked_down |= p.address == c.addresses()[1] && !p.up;
  EXPECT_TRUE(marked_down);
  ASSERT_EQ(kill(c.server(1).pid(), SIGCONT), 0);
  for (uint64_t s = 0; s < kSlots; ++s) ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, 2)));
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
}

TEST(Cluster, FullPeersSendPagesToTheLocalFileWithoutErrors) {
  // Each client may hold about 100 pages per node.
  Cluster c(3, "64M", /*quota=*/std::to_string(100 * (kPageSize + 88)));
  const uint64_t kSlots = 1000;
  Client cl = MakeClient(c, kSlots, 2);
  for (uint64_t s = 0; s < kSlots; ++s) {
    ASSERT_TRUE(cl.stack->Store(s, Content(s * 5, 1)).ok()) << s;  // incompressible
  }
  auto st = cl.stack->stats();
  EXPECT_GT(st.slots_in[1], 0u);  // the local file took the rest
  EXPECT_GT(st.slots_in[0], 0u);
  EXPECT_EQ(st.slots_in[0] + st.slots_in[1], kSlots);
  for (uint64_t s = 0; s < kSlots; ++s) {
    ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s * 5, 1)));
  }
}

TEST(Cluster, AllPeersGoneThenBack) {
  Cluster c(3, "64M");
  const uint64_t kSlots = 600;
  Client cl = MakeClient(c, kSlots, 2, "", absl::Milliseconds(300), absl::Microseconds(150));
  std::vector<uint64_t> version(kSlots, 0);
  auto write_range = [&](uint64_t from, uint64_t to, uint64_t v) {
    for (uint64_t s = from; s < to; ++s) {
      ASSERT_TRUE(cl.stack->Store(s, Content(s, v)).ok()) << s;
      version[s] = v;
    }
  };
  write_range(0, 200, 1);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(c.server(i).Stop(), 0);  // graceful: pages kept
  write_range(200, 400, 1);  // nobody there: the local file
  for (uint64_t s = 0; s < 400; ++s) {
    // The first 200 are on stopped peers (a graceful stop keeps them on
    // disk, but they are down now); reads of those wait for the peers.
    if (s >= 200) {
      ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, 1)));
    }
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.Restart(i)) << c.server(i).log();
  // Health checks find them again (the channels back off for up to 1 s).
  auto all_up = [&] {
    for (const auto& p : cl.cluster->peers()) {
      if (!p.eligible) return false;
    }
    return true;
  };
  for (int i = 0; i < 300 && !all_up(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!all_up()) {
    for (const auto& p : cl.cluster->peers()) {
      ADD_FAILURE() << p.address << " up=" << p.up << " draining=" << p.draining
                    << " eligible=" << p.eligible;
    }
    for (int i = 0; i < 3; ++i) ADD_FAILURE() << c.server(i).log();
    FAIL();
  }
  write_range(400, 600, 1);
  auto st = cl.stack->stats();
  EXPECT_GE(st.slots_in[1], 200u);
  EXPECT_GE(st.slots_in[0], 400u);  // used again after the restart
  for (uint64_t s = 0; s < kSlots; ++s) {
    ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, version[s])));
  }
}

TEST(Cluster, OverwritesWhileKillingPeersNeverReadStale) {
  Cluster c(4, "64M");
  const uint64_t kSlots = 8;  // few slots, many versions each
  Client cl = MakeClient(c, kSlots, 2, "", absl::Milliseconds(500));
  std::vector<uint64_t> version(kSlots, 0);
  for (int round = 0; round < 3; ++round) {
    for (int op = 0; op < 300; ++op) {
      uint64_t slot = op % kSlots;
      uint64_t v = version[slot] + 1;
      ASSERT_TRUE(cl.stack->Store(slot, Content(slot, v)).ok());
      version[slot] = v;
      ASSERT_TRUE(ReadsBack(cl.stack.get(), slot, Content(slot, v)));
      if (op == 150) c.server(round).Kill();
    }
    ASSERT_TRUE(c.Restart(round)) << c.server(round).log();  // lost its RAM
    cl.cluster->CheckNowForTest();
  }
  for (uint64_t s = 0; s < kSlots; ++s) {
    ASSERT_TRUE(ReadsBack(cl.stack.get(), s, Content(s, version[s])));
  }
  EXPECT_EQ(cl.stack->stats().load_failures, 0u);
}

TEST(Cluster, DrainingPeerGetsNoNewPagesAndItsPagesMoveOff) {
  Cluster c(3, "64M");
  // 300 pages, each in its own placement run, so that every peer gets some
  // whatever its address hashes to.
  const auto slot = [](uint64_t i) { return i * ClusterTier::kPlacementRun; };
  Client cl = MakeClient(c, slot(300), 2);
  for (uint64_t i = 0; i < 300; ++i) ASSERT_TRUE(cl.stack->Store(slot(i), Content(i, 1)).ok());
  ASSERT_GT(c.Status(2).pages_in_ram(), 0u);
  c.Drain(2);
  for (int i = 0; i < 20 && cl.cluster->SlotsNeedingRepair() > 0; ++i) {
    cl.cluster->CheckNowForTest();
  }
  for (int i = 0; i < 100 && c.Status(2).pages_in_ram() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(c.Status(2).pages_in_ram(), 0u);
  for (uint64_t i = 300; i > 0; --i) {
    ASSERT_TRUE(cl.stack->Store(slot(i - 1), Content(i - 1, 2)).ok());
  }
  EXPECT_EQ(c.Status(2).pages_in_ram(), 0u);
  // With two usable peers left, replicas=2 still holds everywhere.
  EXPECT_EQ(c.Status(0).pages_in_ram(), 300u);
  EXPECT_EQ(c.Status(1).pages_in_ram(), 300u);
  for (uint64_t i = 0; i < 300; ++i) {
    ASSERT_TRUE(ReadsBack(cl.stack.get(), slot(i), Content(i, 2)));
  }
}

}  // namespace
}  // namespace ramster
