#include "server/services.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/client_identity.h"
#include "common/grpc_status.h"

namespace ramster {
namespace {

constexpr char kAuthorizationKey[] = "authorization";

bool IsValidClientId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxClientIdLength) return false;
  for (char ch : id) {
    if (!absl::ascii_isalnum(ch) && ch != '.' && ch != '-' && ch != '_' &&
        ch != ':' && ch != '@') {
      return false;
    }
  }
  return true;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::StatusOr<std::string> CallerIdentity(const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kClientIdMetadataKey);
  if (it == md.end()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "no client identity: send metadata \"", kClientIdMetadataKey, "\""));
  }
  absl::string_view id(it->second.data(), it->second.size());
  if (!IsValidClientId(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "client identity must be 1..", kMaxClientIdLength,
        " characters of [A-Za-z0-9._:@-]"));
  }
  return std::string(id);
}

template <typename Fn>
grpc::ServerUnaryReactor* PageStoreService::Serve(grpc::CallbackServerContext* ctx,
                                                  bool ram_only, Fn fn) {
  absl::StatusOr<std::string> who = CallerIdentity(*ctx);
  if (!who.ok()) {
    node_->CountRejected();
    return FinishNow(ctx, who.status());
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (ram_only && node_->ServesFromRam()) {
    // Memory and short locks only: no reason to wake a worker for it.
    reactor->Finish(ToGrpcStatus(fn(*who)));
    return reactor;
  }
  bool queued = work_->Submit([reactor, fn, id = std::move(*who)]() mutable {
    reactor->Finish(ToGrpcStatus(fn(id)));
  });
  if (!queued) {
    node_->CountRejected();
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node overloaded"));
  }
  return reactor;
}

grpc::ServerUnaryReactor* PageStoreService::OpenSession(
    grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* request,
    v1::OpenSessionResponse* response) {
  return Serve(ctx, /*ram_only=*/false, [this, request, response](const std::string& id) {
    return node_->OpenSession(id, *request, response);
  });
}

grpc::ServerUnaryReactor* PageStoreService::Heartbeat(
    grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  return Serve(ctx, /*ram_only=*/true, [this, request, response](const std::string& id) {
    return node_->Heartbeat(id, *request, response);
  });
}

grpc::ServerUnaryReactor* PageStoreService::Store(grpc::CallbackServerContext* ctx,
                                                  const v1::StoreRequest* request,
                                                  v1::StoreResponse* response) {
  return Serve(ctx, /*ram_only=*/true, [this, request, response](const std::string& id) {
    return node_->Store(id, *request, response);
  });
}

grpc::ServerUnaryReactor* PageStoreService::Load(grpc::CallbackServerContext* ctx,
                                                 const v1::LoadRequest* request,
                                                 v1::LoadResponse* response) {
  return Serve(ctx, /*ram_only=*/true, [this, request, response](const std::string& id) {
    return node_->Load(id, *request, response);
  });
}

grpc::ServerUnaryReactor* PageStoreService::Invalidate(
    grpc::CallbackServerContext* ctx, const v1::InvalidateRequest* request,
    v1::InvalidateResponse* response) {
  return Serve(ctx, /*ram_only=*/false, [this, request, response](const std::string& id) {
    return node_->Invalidate(id, *request, response);
  });
}

template <typename Fn>
grpc::ServerUnaryReactor* AdminService::Serve(grpc::CallbackServerContext* ctx, Fn fn) {
  if (!token_.empty()) {
    const auto& md = ctx->client_metadata();
    auto it = md.find(kAuthorizationKey);
    std::string expected = absl::StrCat("Bearer ", token_);
    if (it == md.end() ||
        absl::string_view(it->second.data(), it->second.size()) != expected) {
      node_->CountRejected();
      return FinishNow(ctx, absl::UnauthenticatedError("admin token required"));
    }
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!work_->Submit([reactor, fn]() mutable { reactor->Finish(ToGrpcStatus(fn())); })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node overloaded"));
  }
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetStatus(grpc::CallbackServerContext* ctx,
                                                  const v1::GetStatusRequest*,
                                                  v1::NodeStatus* response) {
  return Serve(ctx, [this, response] {
    node_->GetStatus(response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListClients(grpc::CallbackServerContext* ctx,
                                                    const v1::ListClientsRequest*,
                                                    v1::ListClientsResponse* response) {
  return Serve(ctx, [this, response] {
    node_->ListClients(response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::SetClientQuota(
    grpc::CallbackServerContext* ctx, const v1::SetClientQuotaRequest* request,
    v1::SetClientQuotaResponse* response) {
  if (!IsValidClientId(request->client_id())) {
    return FinishNow(ctx, absl::InvalidArgumentError("malformed client id"));
  }
  return Serve(ctx, [this, request, response] {
    return node_->SetClientQuota(request->client_id(), request->quota_bytes(),
                                 response->mutable_client());
  });
}

grpc::ServerUnaryReactor* AdminService::SetMemoryLimit(
    grpc::CallbackServerContext* ctx, const v1::SetMemoryLimitRequest* request,
    v1::SetMemoryLimitResponse* response) {
  return Serve(ctx, [this, request, response] {
    node_->SetMemoryLimit(request->ram_limit_bytes(), response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::Drain(grpc::CallbackServerContext* ctx,
                                              const v1::DrainRequest* request,
                                              v1::DrainResponse* response) {
  return Serve(ctx, [this, request, response] {
    node_->SetDraining(request->drain());
    response->set_draining(node_->draining());
    return absl::OkStatus();
  });
}

}  // namespace ramster
