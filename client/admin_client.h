// The client side of the Admin service (proto/ramster/v1/admin.proto): one
// node at a time through AdminClient, or every node at once through CallEach.
#ifndef RAMSTER_CLIENT_ADMIN_CLIENT_H_
#define RAMSTER_CLIENT_ADMIN_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/admin_reply.h"
#include "ramster/v1/admin.grpc.pb.h"

namespace ramster::admin {

// The credentials every admin channel uses. Insecure for now; this is the one
// place that changes when the admin API gets its own TLS credential.
std::shared_ptr<grpc::ChannelCredentials> AdminChannelCredentials();

// The admin token every call presents (metadata "authorization: Bearer
// TOKEN"), for nodes that require one. Set once, before any call.
void SetAdminToken(std::string token);

// One node's Admin service. Every call carries a deadline of `timeout` and
// fails fast (no waiting for the channel to become ready), so a node that is
// down costs at most one timeout. Errors come back as absl::Status with the
// gRPC code (kUnavailable for a refused connection, kDeadlineExceeded for a
// node that did not answer in time).
//
// Thread safety: calls may be made from several threads at once.
class AdminClient {
 public:
  AdminClient(std::shared_ptr<grpc::ChannelInterface> channel,
              absl::Duration timeout);

  // A channel to `address` (any gRPC target: "host:port", "unix:/path", ...)
  // with AdminChannelCredentials(). Connects lazily, on the first call.
  static AdminClient Connect(const std::string& address,
                             absl::Duration timeout);

  absl::StatusOr<v1::NodeStatus> GetStatus();
  absl::StatusOr<v1::ListClientsResponse> ListClients();
  absl::StatusOr<v1::SetClientQuotaResponse> SetClientQuota(
      const std::string& client_id, uint64_t quota_bytes);
  absl::StatusOr<v1::SetMemoryLimitResponse> SetMemoryLimit(
      uint64_t ram_limit_bytes);
  // drain=false undrains.
  absl::StatusOr<v1::DrainResponse> Drain(bool drain);

 private:
  // Constant after construction.
  std::unique_ptr<v1::Admin::Stub> stub_;
  absl::Duration timeout_;
};

// Calls `call(client)` with an AdminClient for each address, all at once (one
// thread per address), so that asking a cluster with dead nodes takes one
// timeout, not one per dead node. The replies are in the order of
// `addresses`, each tagged with its address.
//
// `call` is invoked concurrently from several threads: it must be safe to.
template <typename Call,
          typename Reply = typename std::invoke_result_t<
              const Call&, AdminClient&>::value_type>
std::vector<NodeReply<Reply>> CallEach(const std::vector<std::string>& addresses,
                                       absl::Duration timeout,
                                       const Call& call) {
  std::vector<NodeReply<Reply>> replies(addresses.size());
  std::vector<std::thread> threads;
  threads.reserve(addresses.size());
  for (size_t i = 0; i < addresses.size(); ++i) {
    threads.emplace_back([&addresses, &replies, &call, timeout, i] {
      AdminClient client = AdminClient::Connect(addresses[i], timeout);
      replies[i] = NodeReply<Reply>{addresses[i], call(client)};
    });
  }
  for (std::thread& t : threads) t.join();
  return replies;
}

}  // namespace ramster::admin

#endif  // RAMSTER_CLIENT_ADMIN_CLIENT_H_
