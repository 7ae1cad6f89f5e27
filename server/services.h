// The gRPC face of a Node: PageStore for clients, Admin for operators. Both
// use the callback API; each handler validates who is calling, then hands
// the work to a WorkQueue and finishes its reactor from there.
//
// Identity: see common/client_identity.h. Admin calls need the admin token
// when the node has one (--admin-token-file).
#ifndef RAMSTER_SERVER_SERVICES_H_
#define RAMSTER_SERVER_SERVICES_H_

#include <string>

#include "absl/status/statusor.h"
#include "ramster/v1/admin.grpc.pb.h"
#include "ramster/v1/page_store.grpc.pb.h"
#include "server/node.h"
#include "server/work_queue.h"

namespace ramster {

// The client identity of a call: kInvalidArgument/kUnauthenticated when
// absent or malformed.
absl::StatusOr<std::string> CallerIdentity(const grpc::CallbackServerContext& ctx);

class PageStoreService final : public v1::PageStore::CallbackService {
 public:
  // `node` and `work` must outlive the service.
  PageStoreService(Node* node, WorkQueue* work) : node_(node), work_(work) {}

  grpc::ServerUnaryReactor* OpenSession(grpc::CallbackServerContext* ctx,
                                        const v1::OpenSessionRequest* request,
                                        v1::OpenSessionResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Store(grpc::CallbackServerContext* ctx,
                                  const v1::StoreRequest* request,
                                  v1::StoreResponse* response) override;
  grpc::ServerUnaryReactor* Load(grpc::CallbackServerContext* ctx,
                                 const v1::LoadRequest* request,
                                 v1::LoadResponse* response) override;
  grpc::ServerUnaryReactor* Invalidate(grpc::CallbackServerContext* ctx,
                                       const v1::InvalidateRequest* request,
                                       v1::InvalidateResponse* response) override;

 private:
  // Runs fn(identity) -> absl::Status and finishes the call with its
  // status: inline when `ram_only` and the node cannot touch its disk
  // (Node::ServesFromRam), else on the work queue.
  template <typename Fn>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, bool ram_only, Fn fn);

  Node* const node_;
  WorkQueue* const work_;
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  // Empty `token`: no admin credential is required (trusted deployments).
  AdminService(Node* node, WorkQueue* work, std::string token)
      : node_(node), work_(work), token_(std::move(token)) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* request,
                                      v1::NodeStatus* response) override;
  grpc::ServerUnaryReactor* ListClients(grpc::CallbackServerContext* ctx,
                                        const v1::ListClientsRequest* request,
                                        v1::ListClientsResponse* response) override;
  grpc::ServerUnaryReactor* SetClientQuota(grpc::CallbackServerContext* ctx,
                                           const v1::SetClientQuotaRequest* request,
                                           v1::SetClientQuotaResponse* response) override;
  grpc::ServerUnaryReactor* SetMemoryLimit(grpc::CallbackServerContext* ctx,
                                           const v1::SetMemoryLimitRequest* request,
                                           v1::SetMemoryLimitResponse* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

 private:
  template <typename Fn>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, Fn fn);

  Node* const node_;
  WorkQueue* const work_;
  const std::string token_;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_SERVICES_H_
