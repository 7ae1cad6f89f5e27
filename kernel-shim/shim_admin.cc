#include "kernel-shim/shim_admin.h"

#include "absl/time/clock.h"
#include "common/proc_status.h"

namespace ramster {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, grpc::Status status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status NotAServer(const char* what) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string(what) + " applies to ramster-servers, not to a shim");
}

}  // namespace

void ShimAdminService::Fill(TierStack* stack, const Identity& id, v1::NodeStatus* st) {
  TierStack::Stats s = stack->stats();
  uint64_t in_memory = s.slots_filled, in_file = 0;
  for (size_t i = 0; i < stack->tier_count(); ++i) {
    (stack->tier(i)->name() == "local-file" ? in_file : in_memory) += s.slots_in[i];
  }
  st->set_node_id("shim:" + id.client_id);
  st->set_address(id.address);
  st->set_ram_limit_bytes(id.memory_budget);
  st->set_ram_used_bytes(RssBytes());
  st->set_disk_limit_bytes(stack->slots() * kPageSize);
  st->set_disk_used_bytes(in_file * kPageSize);
  st->set_pages_in_ram(in_memory);
  st->set_pages_on_disk(in_file);
  st->set_logical_bytes((in_memory + in_file) * kPageSize);
  v1::OpCounters* ops = st->mutable_ops();
  ops->set_stores(s.stores);
  ops->set_loads(s.loads);
  ops->set_invalidates(s.invalidates);
  ops->set_load_misses(s.load_failures);
}

grpc::ServerUnaryReactor* ShimAdminService::GetStatus(grpc::CallbackServerContext* ctx,
                                                      const v1::GetStatusRequest*,
                                                      v1::NodeStatus* response) {
  Identity id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = identity_;
  }
  Fill(stack_, id, response);
  return Finish(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ShimAdminService::ListClients(grpc::CallbackServerContext* ctx,
                                                        const v1::ListClientsRequest*,
                                                        v1::ListClientsResponse*) {
  return Finish(ctx, grpc::Status::OK);  // a shim holds nobody's pages
}

grpc::ServerUnaryReactor* ShimAdminService::SetClientQuota(grpc::CallbackServerContext* ctx,
                                                           const v1::SetClientQuotaRequest*,
                                                           v1::SetClientQuotaResponse*) {
  return Finish(ctx, NotAServer("quotas"));
}

grpc::ServerUnaryReactor* ShimAdminService::SetMemoryLimit(grpc::CallbackServerContext* ctx,
                                                           const v1::SetMemoryLimitRequest*,
                                                           v1::SetMemoryLimitResponse*) {
  return Finish(ctx, NotAServer("memory limits"));
}

grpc::ServerUnaryReactor* ShimAdminService::Drain(grpc::CallbackServerContext* ctx,
                                                  const v1::DrainRequest*, v1::DrainResponse*) {
  return Finish(ctx, NotAServer("draining"));
}

}  // namespace ramster
