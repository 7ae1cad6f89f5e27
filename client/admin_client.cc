#include "client/admin_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "common/grpc_status.h"

namespace ramster::admin {
namespace {

std::string& AdminToken() {
  static std::string* token = new std::string();
  return *token;
}

// Issues one unary call with the deadline; the reply or the call's status.
template <typename Request, typename Reply, typename Method>
absl::StatusOr<Reply> Unary(v1::Admin::Stub& stub, Method method,
                            absl::Duration timeout, const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!AdminToken().empty()) {
    context.AddMetadata("authorization", "Bearer " + AdminToken());
  }
  Reply reply;
  grpc::Status status = (stub.*method)(&context, request, &reply);
  if (!status.ok()) return FromGrpcStatus(status);
  return reply;
}

}  // namespace

void SetAdminToken(std::string token) { AdminToken() = std::move(token); }

std::shared_ptr<grpc::ChannelCredentials> AdminChannelCredentials() {
  return grpc::InsecureChannelCredentials();
}

AdminClient::AdminClient(std::shared_ptr<grpc::ChannelInterface> channel,
                         absl::Duration timeout)
    : stub_(v1::Admin::NewStub(std::move(channel))), timeout_(timeout) {}

AdminClient AdminClient::Connect(const std::string& address,
                                 absl::Duration timeout) {
  return AdminClient(grpc::CreateChannel(address, AdminChannelCredentials()),
                     timeout);
}

absl::StatusOr<v1::NodeStatus> AdminClient::GetStatus() {
  return Unary<v1::GetStatusRequest, v1::NodeStatus>(
      *stub_, &v1::Admin::Stub::GetStatus, timeout_, v1::GetStatusRequest());
}

absl::StatusOr<v1::ListClientsResponse> AdminClient::ListClients() {
  return Unary<v1::ListClientsRequest, v1::ListClientsResponse>(
      *stub_, &v1::Admin::Stub::ListClients, timeout_,
      v1::ListClientsRequest());
}

absl::StatusOr<v1::SetClientQuotaResponse> AdminClient::SetClientQuota(
    const std::string& client_id, uint64_t quota_bytes) {
  v1::SetClientQuotaRequest request;
  request.set_client_id(client_id);
  request.set_quota_bytes(quota_bytes);
  return Unary<v1::SetClientQuotaRequest, v1::SetClientQuotaResponse>(
      *stub_, &v1::Admin::Stub::SetClientQuota, timeout_, request);
}

absl::StatusOr<v1::SetMemoryLimitResponse> AdminClient::SetMemoryLimit(
    uint64_t ram_limit_bytes) {
  v1::SetMemoryLimitRequest request;
  request.set_ram_limit_bytes(ram_limit_bytes);
  return Unary<v1::SetMemoryLimitRequest, v1::SetMemoryLimitResponse>(
      *stub_, &v1::Admin::Stub::SetMemoryLimit, timeout_, request);
}

absl::StatusOr<v1::DrainResponse> AdminClient::Drain(bool drain) {
  v1::DrainRequest request;
  request.set_drain(drain);
  return Unary<v1::DrainRequest, v1::DrainResponse>(
      *stub_, &v1::Admin::Stub::Drain, timeout_, request);
}

}  // namespace ramster::admin
