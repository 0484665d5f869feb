#include "server/admin_service.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"
#include "server/grpc_status.h"

namespace recserve {

absl::Time AdminService::WaitDeadline(const grpc::ServerContext& context) {
  const absl::Time now = absl::Now();
  absl::Time deadline = now + kMaxLoadWait;
  if (context.deadline() != std::chrono::system_clock::time_point::max()) {
    // Answer a little before the caller gives up, so that it gets the reason (which load
    // is in progress) rather than a bare DEADLINE_EXCEEDED of its own.
    const absl::Time caller = absl::FromChrono(context.deadline());
    deadline = std::min(deadline, caller - std::min((caller - now) / 2, absl::Seconds(2)));
  }
  return deadline;
}

grpc::Status AdminService::GetModelStatus(grpc::ServerContext*, const v1::GetModelStatusRequest*,
                                          v1::GetModelStatusResponse* response) {
  std::shared_ptr<const Model> model = manager_->Pin();
  response->set_model_name(model ? model->name() : "");
  response->set_base_path(manager_->base_path());
  response->set_serving_version(model ? model->version() : 0);
  response->set_pinned_version(manager_->pinned_version());
  for (v1::VersionStatus& v : manager_->Versions()) {
    if (shadow_) {
      if (std::optional<ShadowComparison> c = shadow_->Comparison(v.version())) c->ToProto(v.mutable_shadow());
    }
    *response->add_versions() = std::move(v);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ReloadModels(grpc::ServerContext* context, const v1::ReloadModelsRequest*,
                                        v1::ReloadModelsResponse* response) {
  absl::StatusOr<int64_t> serving = manager_->ReloadNow(WaitDeadline(*context));
  if (!serving.ok()) return ToGrpcStatus(serving.status());
  response->set_serving_version(*serving);
  return grpc::Status::OK;
}

grpc::Status AdminService::SetServingVersion(grpc::ServerContext* context,
                                             const v1::SetServingVersionRequest* request,
                                             v1::SetServingVersionResponse* response) {
  absl::StatusOr<int64_t> serving = manager_->SetServingVersion(request->version(), WaitDeadline(*context));
  if (!serving.ok()) return ToGrpcStatus(serving.status());
  response->set_serving_version(*serving);
  return grpc::Status::OK;
}

grpc::Status AdminService::SetRollout(grpc::ServerContext*, const v1::SetRolloutRequest* request,
                                      v1::SetRolloutResponse* response) {
  absl::StatusOr<v1::VersionStatus> status =
      manager_->SetRollout(request->version(), request->action(), request->share());
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response->mutable_version() = *std::move(status);
  response->set_serving_version(manager_->serving_version());
  return grpc::Status::OK;
}

}  // namespace recserve
