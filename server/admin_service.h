// recserve.v1.Admin: model status, reload and version pinning, for operators. Served on
// its own listener (loopback by default) with gRPC's synchronous API: these calls wait
// for model loads and are rare, so they never occupy request threads.
#ifndef RECSERVE_SERVER_ADMIN_SERVICE_H_
#define RECSERVE_SERVER_ADMIN_SERVICE_H_

#include "recserve/v1/recommender.grpc.pb.h"
#include "server/model_manager.h"

namespace recserve {

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(ModelManager* manager) : manager_(manager) {}

  grpc::Status GetModelStatus(grpc::ServerContext* context, const v1::GetModelStatusRequest* request,
                              v1::GetModelStatusResponse* response) override;
  grpc::Status ReloadModels(grpc::ServerContext* context, const v1::ReloadModelsRequest* request,
                            v1::ReloadModelsResponse* response) override;
  grpc::Status SetServingVersion(grpc::ServerContext* context,
                                 const v1::SetServingVersionRequest* request,
                                 v1::SetServingVersionResponse* response) override;

 private:
  ModelManager* const manager_;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_ADMIN_SERVICE_H_
