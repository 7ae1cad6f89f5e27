#include "common/grpc_status.h"

#include <string>

namespace ramster {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void ToPageStatus(const absl::Status& status, v1::PageStatus* out) {
  out->set_code(static_cast<int32_t>(status.code()));
  if (!status.ok()) out->set_message(std::string(status.message()));
}

absl::Status FromPageStatus(const v1::PageStatus& status) {
  int32_t code = status.code();
  // A peer could send any number; anything outside the defined range is
  // treated as UNKNOWN rather than trusted.
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError("peer sent an undefined status code");
  }
  return absl::Status(static_cast<absl::StatusCode>(code), status.message());
}

}  // namespace ramster
