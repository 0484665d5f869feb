// The one place where absl::Status becomes grpc::Status.
#ifndef RECSERVE_SERVER_GRPC_STATUS_H_
#define RECSERVE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace recserve {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace recserve

#endif  // RECSERVE_SERVER_GRPC_STATUS_H_
