// The one place where absl::Status and grpc::Status meet. Codes map one to
// one (both follow google.rpc.Code).
#ifndef RAMSTER_COMMON_GRPC_STATUS_H_
#define RAMSTER_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "ramster/v1/page.pb.h"

namespace ramster {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Per-page status inside a batched reply.
void ToPageStatus(const absl::Status& status, v1::PageStatus* out);
absl::Status FromPageStatus(const v1::PageStatus& status);

}  // namespace ramster

#endif  // RAMSTER_COMMON_GRPC_STATUS_H_
