#include "client/admin_client.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "ramster/v1/admin.grpc.pb.h"

namespace ramster::admin {
namespace {

// An Admin service that records what it was asked and answers from fields
// the test sets. Tests set fields before the first call.
class FakeAdmin final : public v1::Admin::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const v1::GetStatusRequest*,
                         v1::NodeStatus* reply) override {
    if (hang) {
      // Holds the call until the client gives up on it.
      while (!context->IsCancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    reply->set_node_id("n1");
    reply->set_ram_limit_bytes(64 << 20);
    return grpc::Status::OK;
  }

  grpc::Status ListClients(grpc::ServerContext*, const v1::ListClientsRequest*,
                           v1::ListClientsResponse* reply) override {
    reply->add_clients()->set_client_id("host-a");
    return grpc::Status::OK;
  }

  grpc::Status SetClientQuota(grpc::ServerContext*,
                              const v1::SetClientQuotaRequest* request,
                              v1::SetClientQuotaResponse* reply) override {
    if (request->client_id() != "host-a") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such client");
    }
    reply->mutable_client()->set_client_id(request->client_id());
    reply->mutable_client()->set_quota_bytes(request->quota_bytes());
    return grpc::Status::OK;
  }

  grpc::Status SetMemoryLimit(grpc::ServerContext*,
                              const v1::SetMemoryLimitRequest* request,
                              v1::SetMemoryLimitResponse* reply) override {
    reply->set_ram_limit_bytes(request->ram_limit_bytes());
    reply->set_pages_written_back(5);
    return grpc::Status::OK;
  }

  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                     v1::DrainResponse* reply) override {
    drain_calls++;
    reply->set_draining(request->drain());
    return grpc::Status::OK;
  }

  std::atomic<bool> hang{false};
  std::atomic<int> drain_calls{0};
};

class AdminClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now());
  }

  AdminClient Client(absl::Duration timeout = absl::Seconds(10)) {
    return AdminClient(server_->InProcessChannel(grpc::ChannelArguments()),
                       timeout);
  }

  FakeAdmin service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(AdminClientTest, GetStatus) {
  AdminClient client = Client();
  absl::StatusOr<v1::NodeStatus> status = client.GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->node_id(), "n1");
  EXPECT_EQ(status->ram_limit_bytes(), 64u << 20);
}

TEST_F(AdminClientTest, ListClients) {
  AdminClient client = Client();
  absl::StatusOr<v1::ListClientsResponse> clients = client.ListClients();
  ASSERT_TRUE(clients.ok()) << clients.status();
  ASSERT_EQ(clients->clients_size(), 1);
  EXPECT_EQ(clients->clients(0).client_id(), "host-a");
}

TEST_F(AdminClientTest, SetClientQuotaSendsClientAndBytes) {
  AdminClient client = Client();
  absl::StatusOr<v1::SetClientQuotaResponse> reply =
      client.SetClientQuota("host-a", 64 << 20);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->client().client_id(), "host-a");
  EXPECT_EQ(reply->client().quota_bytes(), 64u << 20);
}

TEST_F(AdminClientTest, ServerErrorKeepsItsCodeAndMessage) {
  AdminClient client = Client();
  absl::StatusOr<v1::SetClientQuotaResponse> reply =
      client.SetClientQuota("nobody", 1);
  EXPECT_EQ(reply.status(), absl::NotFoundError("no such client"));
}

TEST_F(AdminClientTest, SetMemoryLimit) {
  AdminClient client = Client();
  absl::StatusOr<v1::SetMemoryLimitResponse> reply =
      client.SetMemoryLimit(32 << 20);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->ram_limit_bytes(), 32u << 20);
  EXPECT_EQ(reply->pages_written_back(), 5u);
}

TEST_F(AdminClientTest, DrainAndUndrain) {
  AdminClient client = Client();
  absl::StatusOr<v1::DrainResponse> drained = client.Drain(true);
  ASSERT_TRUE(drained.ok()) << drained.status();
  EXPECT_TRUE(drained->draining());
  absl::StatusOr<v1::DrainResponse> undrained = client.Drain(false);
  ASSERT_TRUE(undrained.ok()) << undrained.status();
  EXPECT_FALSE(undrained->draining());
  EXPECT_EQ(service_.drain_calls, 2);
}

TEST_F(AdminClientTest, NodeThatDoesNotAnswerMissesTheDeadline) {
  service_.hang = true;
  AdminClient client = Client(absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::NodeStatus> status = client.GetStatus();
  EXPECT_EQ(status.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(CallEachTest, EveryAddressAnswersInOrderEvenWhenUnreachable) {
  // Unix socket paths that do not exist: refused at once, no network needed.
  const std::vector<std::string> addresses = {
      "unix:/nonexistent/ramster-a.sock",
      "unix:/nonexistent/ramster-b.sock",
  };
  const absl::Time start = absl::Now();
  std::vector<NodeReply<v1::NodeStatus>> replies = CallEach(
      addresses, absl::Seconds(5),
      [](AdminClient& client) { return client.GetStatus(); });
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_EQ(replies.size(), 2u);
  for (size_t i = 0; i < replies.size(); ++i) {
    EXPECT_EQ(replies[i].address, addresses[i]);
    EXPECT_EQ(replies[i].reply.status().code(), absl::StatusCode::kUnavailable)
        << replies[i].reply.status();
  }
  EXPECT_FALSE(AllOk(replies));
}

}  // namespace
}  // namespace ramster::admin
