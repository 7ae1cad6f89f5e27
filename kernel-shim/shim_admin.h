// The shim's own Admin endpoint (--admin-listen), so that ramsterctl shows a
// swapping host beside the servers it uses:
//   node_id "shim:<client id>", ram = the shim's RSS against its memory
//   budget, disk = the local swap file, pages_in_ram = slots held in memory
//   somewhere (peers, local cache, fill words), pages_on_disk = slots in the
//   local swap file, ops = the tier stack's counters.
// Quotas, memory limits and draining are server matters: those calls answer
// UNIMPLEMENTED.
#ifndef RAMSTER_KERNEL_SHIM_SHIM_ADMIN_H_
#define RAMSTER_KERNEL_SHIM_SHIM_ADMIN_H_

#include <mutex>
#include <string>

#include "client/tier_stack.h"
#include "ramster/v1/admin.grpc.pb.h"

namespace ramster {

class ShimAdminService final : public v1::Admin::CallbackService {
 public:
  struct Identity {
    std::string client_id;
    std::string address;
    uint64_t memory_budget = 0;
  };
  // `stack` must outlive the service.
  ShimAdminService(TierStack* stack, Identity identity)
      : stack_(stack), identity_(std::move(identity)) {}
  // The address as bound (known only once the server runs).
  void set_address(std::string address) {
    std::lock_guard<std::mutex> lock(mu_);
    identity_.address = std::move(address);
  }

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

  // The figures above, for tests and the stats file.
  static void Fill(TierStack* stack, const Identity& identity, v1::NodeStatus* status);

 private:
  TierStack* const stack_;
  std::mutex mu_;
  Identity identity_;  // guarded by mu_
};

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_SHIM_ADMIN_H_
