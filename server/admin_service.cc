#include "server/admin_service.h"

#include "server/grpc_status.h"

namespace recserve {

grpc::Status AdminService::GetModelStatus(grpc::ServerContext*, const v1::GetModelStatusRequest*,
                                          v1::GetModelStatusResponse* response) {
  std::shared_ptr<const Model> model = manager_->Pin();
  response->set_model_name(model ? model->name() : "");
  response->set_base_path(manager_->base_path());
  response->set_serving_version(model ? model->version() : 0);
  response->set_pinned_version(manager_->pinned_version());
  for (v1::VersionStatus& v : manager_->Versions()) *response->add_versions() = std::move(v);
  return grpc::Status::OK;
}

grpc::Status AdminService::ReloadModels(grpc::ServerContext*, const v1::ReloadModelsRequest*,
                                        v1::ReloadModelsResponse* response) {
  absl::StatusOr<int64_t> serving = manager_->ReloadNow();
  if (!serving.ok()) return ToGrpcStatus(serving.status());
  response->set_serving_version(*serving);
  return grpc::Status::OK;
}

grpc::Status AdminService::SetServingVersion(grpc::ServerContext*,
                                             const v1::SetServingVersionRequest* request,
                                             v1::SetServingVersionResponse* response) {
  absl::StatusOr<int64_t> serving = manager_->SetServingVersion(request->version());
  if (!serving.ok()) return ToGrpcStatus(serving.status());
  response->set_serving_version(*serving);
  return grpc::Status::OK;
}

}  // namespace recserve
