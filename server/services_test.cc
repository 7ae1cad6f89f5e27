#include "server/services.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/client_identity.h"
#include "common/page_codec.h"
#include "common/test_temp_dir.h"
#include "gtest/gtest.h"
#include "server/test_wire_page.h"

namespace ramster {
namespace {

constexpr uint32_t kPool = 1;
constexpr uint64_t kEpoch = 7;
constexpr char kClient[] = "client-a";

// Incompressible, so that a few pages fill a small RAM limit.
std::vector<uint8_t> MakePage(uint64_t seed) {
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(seed);
  for (auto& b : page) b = static_cast<uint8_t>(rng());
  return page;
}

std::vector<uint8_t> Decoded(const v1::LoadResult& r) {
  std::vector<uint8_t> out(kPageSize);
  absl::Status s = DecodePage(
      r.page().encoding(),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(r.page().payload().data()),
                          r.page().payload().size()),
      r.page().uncompressed_length(), r.page().checksum(), absl::MakeSpan(out));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

v1::LoadRequest LoadRequestFor(uint64_t index) {
  v1::LoadRequest req;
  req.set_boot_epoch(kEpoch);
  req.add_keys()->set_pool(kPool);
  req.mutable_keys(0)->set_index(index);
  return req;
}

v1::OpenSessionRequest SessionRequest() {
  v1::OpenSessionRequest req;
  req.set_boot_epoch(kEpoch);
  auto* p = req.add_pools();
  p->set_id(kPool);
  p->set_kind(v1::POOL_KIND_PERSISTENT);
  return req;
}

// A server with the real services over a real node, reached in-process.
class ServicesTest : public ::testing::Test {
 protected:
  // `tcp`: over a loopback port (an in-process channel closes its calls at
  // once when the server shuts down, so shutdown tests need a real one).
  void StartServer(int workers = 1, size_t max_pending = 64, std::string token = "",
                   int io_threads = 1, bool tcp = false) {
    NodeOptions o;
    o.ram_limit = 16 << 20;
    o.disk_limit = 64 << 20;
    o.data_dir = MakeTestTempDir("services");
    o.maintenance_interval = absl::Hours(1);  // tests drive it
    auto node = Node::Open(o);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    work_ = std::make_unique<WorkQueue>(workers, max_pending);
    services_ = std::make_unique<Services>(node_.get(), work_.get(), token, io_threads);
    services_->set_request_poll(request_poll_);
    grpc::ServerBuilder builder;
    int port = 0;
    if (tcp) builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    services_->Register(&builder);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    services_->Start();
    channel_ = tcp ? grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                         grpc::InsecureChannelCredentials())
                   : server_->InProcessChannel(grpc::ChannelArguments());
    stub_ = v1::PageStore::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
  }

  void TearDown() override {
    ReleaseWorker();
    if (server_) {
      services_->CloseStreams();
      server_->Shutdown();
      services_->Shutdown();
    }
    server_.reset();
    services_.reset();
    work_.reset();
  }

  // Occupies the (single) worker until ReleaseWorker; returns once it runs.
  void BlockWorker() {
    std::promise<void> started;
    std::shared_future<void> release = release_.get_future().share();
    ASSERT_TRUE(work_->Submit([&started, release] {
      started.set_value();
      release.wait();
    }));
    started.get_future().wait();
    blocked_ = true;
  }
  void ReleaseWorker() {
    if (blocked_) release_.set_value();
    blocked_ = false;
  }
  // Waits until `n` items wait in the work queue.
  void AwaitPending(size_t n) {
    while (work_->pending() < n) std::this_thread::yield();
  }

  void Identify(grpc::ClientContext* ctx, const std::string& client = kClient) {
    ctx->AddMetadata(kClientIdMetadataKey, client);
  }

  grpc::Status OpenSession() {
    grpc::ClientContext ctx;
    Identify(&ctx);
    v1::OpenSessionResponse resp;
    return stub_->OpenSession(&ctx, SessionRequest(), &resp);
  }

  grpc::Status StorePage(uint64_t index, const std::string& client = kClient) {
    grpc::ClientContext ctx;
    Identify(&ctx, client);
    v1::StoreRequest req;
    req.set_boot_epoch(kEpoch);
    *req.add_pages() = WirePage(kPool, index, MakePage(index));
    v1::StoreResponse resp;
    grpc::Status s = stub_->Store(&ctx, req, &resp);
    if (s.ok()) {
      EXPECT_EQ(resp.results(0).code(), 0);
    }
    return s;
  }

  v1::NodeStatus Status() {
    v1::NodeStatus st;
    node_->GetStatus(&st);
    return st;
  }

  std::unique_ptr<Node> node_;
  std::unique_ptr<WorkQueue> work_;
  absl::Duration request_poll_ = absl::ZeroDuration();  // set before StartServer
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PageStore::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::promise<void> release_;
  bool blocked_ = false;
};

TEST_F(ServicesTest, RamOnlyRequestsAreAnsweredWhileTheWorkerIsBusy) {
  StartServer();
  ASSERT_TRUE(OpenSession().ok());
  ASSERT_TRUE(node_->ServesFromRam());
  BlockWorker();
  // Store, Load and Heartbeat complete although the only worker is stuck:
  // the io thread answered them itself.
  ASSERT_TRUE(StorePage(3).ok());
  grpc::ClientContext ctx;
  Identify(&ctx);
  v1::LoadResponse resp;
  ASSERT_TRUE(stub_->Load(&ctx, LoadRequestFor(3), &resp).ok());
  ASSERT_EQ(resp.results_size(), 1);
  EXPECT_EQ(resp.results(0).status().code(), 0);
  EXPECT_EQ(Decoded(resp.results(0)), MakePage(3));
  grpc::ClientContext hb_ctx;
  Identify(&hb_ctx);
  v1::HeartbeatRequest hb;
  hb.set_boot_epoch(kEpoch);
  v1::HeartbeatResponse hb_resp;
  EXPECT_TRUE(stub_->Heartbeat(&hb_ctx, hb, &hb_resp).ok());
  EXPECT_EQ(hb_resp.lease_ms(), static_cast<uint64_t>(absl::ToInt64Milliseconds(absl::Minutes(10))));
}

TEST_F(ServicesTest, IdentityComesFromTheMetadata) {
  StartServer();
  v1::OpenSessionResponse resp;
  grpc::ClientContext none;
  EXPECT_EQ(stub_->OpenSession(&none, SessionRequest(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext bad;
  Identify(&bad, "no spaces");
  EXPECT_EQ(stub_->OpenSession(&bad, SessionRequest(), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext bad_load;
  Identify(&bad_load, std::string(kMaxClientIdLength + 1, 'x'));
  v1::LoadResponse load_resp;
  EXPECT_EQ(stub_->Load(&bad_load, LoadRequestFor(0), &load_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Status().ops().requests_rejected(), 3u);
  // Pages belong to the identity that stored them.
  ASSERT_TRUE(OpenSession().ok());
  ASSERT_TRUE(StorePage(1).ok());
  grpc::ClientContext other;
  Identify(&other, "client-b");
  EXPECT_EQ(stub_->Load(&other, LoadRequestFor(1), &load_resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServicesTest, RequestsThatMayTouchTheDiskGoThroughTheWorkQueue) {
  StartServer();
  ASSERT_TRUE(OpenSession().ok());
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE(StorePage(i).ok());
  v1::SetMemoryLimitResponse limit;
  node_->SetMemoryLimit(64 << 10, &limit);  // most pages move to RocksDB
  ASSERT_GT(Status().pages_on_disk(), 0u);
  ASSERT_FALSE(node_->ServesFromRam());

  BlockWorker();
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  Identify(&ctx);
  v1::LoadResponse resp;
  grpc::Status status;
  auto call = stub_->AsyncLoad(&ctx, LoadRequestFor(5), &cq);
  call->Finish(&resp, &status, nullptr);
  AwaitPending(1);  // the Load waits behind the blocked worker
  ReleaseWorker();
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Decoded(resp.results(0)), MakePage(5));
  EXPECT_EQ(work_->pending(), 0u);
}

TEST_F(ServicesTest, AFullWorkQueueAnswersUnavailable) {
  StartServer(/*workers=*/1, /*max_pending=*/1);
  BlockWorker();
  ASSERT_TRUE(work_->Submit([] {}));  // the queue is now full
  grpc::Status s = OpenSession();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s.error_message(), "node overloaded");
  EXPECT_EQ(Status().ops().requests_rejected(), 1u);
  // Admin is refused the same way, without counting as a rejected request.
  grpc::ClientContext ctx;
  v1::NodeStatus st;
  EXPECT_EQ(admin_->GetStatus(&ctx, v1::GetStatusRequest(), &st).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Status().ops().requests_rejected(), 1u);
}

TEST_F(ServicesTest, AdminNeedsTheToken) {
  StartServer(/*workers=*/1, /*max_pending=*/64, /*token=*/"s3cret");
  v1::NodeStatus st;
  grpc::ClientContext none;
  EXPECT_EQ(admin_->GetStatus(&none, v1::GetStatusRequest(), &st).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  wrong.AddMetadata("authorization", "Bearer guess");
  EXPECT_EQ(admin_->GetStatus(&wrong, v1::GetStatusRequest(), &st).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Status().ops().requests_rejected(), 2u);

  grpc::ClientContext right;
  right.AddMetadata("authorization", "Bearer s3cret");
  ASSERT_TRUE(admin_->GetStatus(&right, v1::GetStatusRequest(), &st).ok());
  EXPECT_EQ(st.ram_limit_bytes(), 16u << 20);

  // A malformed client id is refused before the token is even looked at.
  grpc::ClientContext quota_ctx;
  v1::SetClientQuotaRequest quota;
  quota.set_client_id("bad id");
  quota.set_quota_bytes(1 << 20);
  v1::SetClientQuotaResponse quota_resp;
  EXPECT_EQ(admin_->SetClientQuota(&quota_ctx, quota, &quota_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext drain_ctx;
  drain_ctx.AddMetadata("authorization", "Bearer s3cret");
  v1::DrainRequest drain;
  drain.set_drain(true);
  v1::DrainResponse drain_resp;
  ASSERT_TRUE(admin_->Drain(&drain_ctx, drain, &drain_resp).ok());
  EXPECT_TRUE(drain_resp.draining());
  EXPECT_TRUE(node_->draining());
}

// Calls `method` with raw bytes; returns the status and the reply bytes.
grpc::Status RawCall(grpc::Channel* channel, const std::string& method, const std::string& bytes,
                     std::string* reply) {
  grpc::GenericStub stub(channel->shared_from_this());
  grpc::ClientContext ctx;
  grpc::CompletionQueue cq;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&ctx, method, request, &cq);
  call->StartCall();
  call->Finish(&response, &status, nullptr);
  void* tag;
  bool ok;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  reply->clear();
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const auto& s : slices) reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

TEST_F(ServicesTest, HealthCheck) {
  StartServer();
  std::string reply;
  // HealthCheckRequest{service: ""} is the empty message; the reply is
  // HealthCheckResponse{status: SERVING}.
  grpc::Status s = RawCall(channel_.get(), "/grpc.health.v1.Health/Check", "", &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply, std::string("\x08\x01", 2));
  // HealthCheckRequest{service: "other"}.
  s = RawCall(channel_.get(), "/grpc.health.v1.Health/Check", std::string("\x0a\x05other", 7),
              &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  s = RawCall(channel_.get(), "/grpc.health.v1.Health/Check", std::string("\x0a\x09short", 7),
              &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = RawCall(channel_.get(), "/grpc.health.v1.Health/Watch", "", &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  s = RawCall(channel_.get(), "/no.such.Service/Method", "", &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(ServicesTest, SeveralIoThreadsServeConcurrentClients) {
  request_poll_ = absl::Microseconds(200);  // and poll their queues
  StartServer(/*workers=*/2, /*max_pending=*/64, /*token=*/"", /*io_threads=*/4);
  constexpr int kClients = 4;
  constexpr int kPages = 50;
  std::vector<std::thread> clients;
  std::vector<int> good(kClients, 0);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([this, c, &good] {
      const std::string name = "client-" + std::to_string(c);
      grpc::ClientContext open_ctx;
      Identify(&open_ctx, name);
      v1::OpenSessionResponse open_resp;
      if (!stub_->OpenSession(&open_ctx, SessionRequest(), &open_resp).ok()) return;
      for (int i = 0; i < kPages; ++i) {
        const uint64_t index = c * 1000 + i;
        if (!StorePage(index, name).ok()) return;
        grpc::ClientContext ctx;
        Identify(&ctx, name);
        v1::LoadResponse resp;
        if (!stub_->Load(&ctx, LoadRequestFor(index), &resp).ok()) return;
        if (Decoded(resp.results(0)) == MakePage(index)) ++good[c];
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(good[c], kPages) << c;
  EXPECT_EQ(Status().pages_in_ram(), static_cast<uint64_t>(kClients * kPages));
}

// Starts `n` OpenSession calls that will wait in the work queue.
struct PendingCalls {
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::OpenSessionResponse> responses;
  std::vector<grpc::Status> statuses;
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<v1::OpenSessionResponse>>> calls;

  PendingCalls(v1::PageStore::Stub* stub, int n) : responses(n), statuses(n) {
    for (int i = 0; i < n; ++i) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      contexts.back()->AddMetadata(kClientIdMetadataKey, "client-" + std::to_string(i));
      calls.push_back(stub->AsyncOpenSession(contexts.back().get(), SessionRequest(), &cq));
      calls.back()->Finish(&responses[i], &statuses[i], nullptr);
    }
  }
  void AwaitAll() {
    void* tag;
    bool ok;
    for (size_t i = 0; i < calls.size(); ++i) ASSERT_TRUE(cq.Next(&tag, &ok));
  }
};

TEST_F(ServicesTest, ShutdownLetsQueuedCallsFinish) {
  request_poll_ = absl::Microseconds(200);  // an io thread may be polling
  StartServer(/*workers=*/1, /*max_pending=*/64, /*token=*/"", /*io_threads=*/1, /*tcp=*/true);
  BlockWorker();
  PendingCalls pending(stub_.get(), 3);
  AwaitPending(3);
  std::thread stopper([this] { server_->Shutdown(); });  // no deadline: waits for them
  ReleaseWorker();
  stopper.join();
  services_->Shutdown();
  pending.AwaitAll();
  for (const grpc::Status& s : pending.statuses) EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Status().clients_size(), 3);
  server_.reset();
}

TEST_F(ServicesTest, ShutdownPastItsDeadlineCancelsQueuedCalls) {
  StartServer(/*workers=*/1, /*max_pending=*/64, /*token=*/"", /*io_threads=*/1, /*tcp=*/true);
  BlockWorker();
  PendingCalls pending(stub_.get(), 3);
  AwaitPending(3);
  // The deadline has passed: the calls are cancelled at once, while their
  // work still waits behind the blocked worker.
  std::thread stopper([this] { server_->Shutdown(std::chrono::system_clock::now()); });
  pending.AwaitAll();
  for (const grpc::Status& s : pending.statuses) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  // The queued work still runs and finishes calls that are gone; Shutdown
  // returns once it has.
  ReleaseWorker();
  stopper.join();
  services_->Shutdown();
  EXPECT_EQ(work_->pending(), 0u);
  server_.reset();
}

// PageStore.Pages: one request, one reply, in order; a request that fails
// as a whole is answered with its status and the stream goes on.
TEST_F(ServicesTest, PageStreamAnswersEachRequestInOrder) {
  StartServer();
  ASSERT_TRUE(OpenSession().ok());
  grpc::ClientContext ctx;
  Identify(&ctx);
  auto stream = stub_->Pages(&ctx);
  v1::PagesRequest store;
  store.mutable_store()->set_boot_epoch(kEpoch);
  *store.mutable_store()->add_pages() = WirePage(kPool, 1, MakePage(1));
  *store.mutable_store()->add_pages() = WirePage(kPool, 2, MakePage(2));
  ASSERT_TRUE(stream->Write(store));
  v1::PagesReply reply;
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.code(), 0);
  ASSERT_EQ(reply.op_case(), v1::PagesReply::kStore);
  ASSERT_EQ(reply.store().results_size(), 2);
  EXPECT_EQ(reply.store().results(0).code(), 0);
  EXPECT_EQ(reply.store().results(1).code(), 0);

  v1::PagesRequest load;
  *load.mutable_load() = LoadRequestFor(1);
  ASSERT_TRUE(stream->Write(load));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.op_case(), v1::PagesReply::kLoad);
  ASSERT_EQ(reply.load().results_size(), 1);
  EXPECT_EQ(Decoded(reply.load().results(0)), MakePage(1));

  const uint64_t rejected = Status().ops().requests_rejected();
  v1::PagesRequest stale = store;
  stale.mutable_store()->set_boot_epoch(kEpoch - 1);  // an older epoch
  ASSERT_TRUE(stream->Write(stale));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_FALSE(reply.message().empty());
  EXPECT_EQ(reply.op_case(), v1::PagesReply::OP_NOT_SET);
  ASSERT_TRUE(stream->Write(v1::PagesRequest()));  // neither store nor load
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Status().ops().requests_rejected(), rejected + 1);

  // The stream still works, and an empty load is an empty reply.
  *load.mutable_load() = LoadRequestFor(2);
  ASSERT_TRUE(stream->Write(load));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.load().results_size(), 1);
  EXPECT_EQ(Decoded(reply.load().results(0)), MakePage(2));
  load.mutable_load()->clear_keys();
  ASSERT_TRUE(stream->Write(load));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.code(), 0);
  ASSERT_EQ(reply.op_case(), v1::PagesReply::kLoad);
  EXPECT_EQ(reply.load().results_size(), 0);
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ServicesTest, PageStreamWithoutIdentityIsEnded) {
  StartServer();
  grpc::ClientContext ctx;
  auto stream = stub_->Pages(&ctx);
  v1::PagesRequest load;
  *load.mutable_load() = LoadRequestFor(1);
  stream->Write(load);  // may fail: the server may have ended the stream
  v1::PagesReply reply;
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Status().ops().requests_rejected(), 1u);
}

TEST_F(ServicesTest, PageStreamRequestsThatMayTouchTheDiskGoThroughTheWorkQueue) {
  StartServer(/*workers=*/1, /*max_pending=*/1);
  ASSERT_TRUE(OpenSession().ok());
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE(StorePage(i).ok());
  v1::SetMemoryLimitResponse limit;
  node_->SetMemoryLimit(64 << 10, &limit);
  ASSERT_FALSE(node_->ServesFromRam());
  grpc::ClientContext ctx;
  Identify(&ctx);
  auto stream = stub_->Pages(&ctx);
  v1::PagesRequest load;
  *load.mutable_load() = LoadRequestFor(5);
  BlockWorker();
  ASSERT_TRUE(stream->Write(load));
  AwaitPending(1);  // waits behind the blocked worker, and fills the queue
  grpc::ClientContext other_ctx;
  Identify(&other_ctx);
  auto other = stub_->Pages(&other_ctx);
  ASSERT_TRUE(other->Write(load));
  v1::PagesReply reply;
  ASSERT_TRUE(other->Read(&reply));
  EXPECT_EQ(reply.code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(reply.message(), "node overloaded");
  ReleaseWorker();
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.load().results_size(), 1);
  EXPECT_EQ(Decoded(reply.load().results(0)), MakePage(5));
  other_ctx.TryCancel();
  ctx.TryCancel();
}

// Clients keep their streams open; CloseStreams ends them, so the server's
// Shutdown (here without a deadline) need not wait for the clients.
TEST_F(ServicesTest, CloseStreamsEndsOpenStreams) {
  StartServer(/*workers=*/1, /*max_pending=*/64, /*token=*/"", /*io_threads=*/2, /*tcp=*/true);
  ASSERT_TRUE(OpenSession().ok());
  grpc::ClientContext ctx;
  Identify(&ctx);
  auto stream = stub_->Pages(&ctx);
  v1::PagesRequest load;
  *load.mutable_load() = LoadRequestFor(1);
  v1::PagesReply reply;
  ASSERT_TRUE(stream->Write(load));
  ASSERT_TRUE(stream->Read(&reply));  // open and idle
  services_->CloseStreams();
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // A stream opened from now on is ended at once.
  grpc::ClientContext late_ctx;
  Identify(&late_ctx);
  auto late = stub_->Pages(&late_ctx);
  late->Write(load);
  EXPECT_FALSE(late->Read(&reply));
  EXPECT_EQ(late->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  server_->Shutdown();
  services_->Shutdown();
  server_.reset();
}

}  // namespace
}  // namespace ramster
