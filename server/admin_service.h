// recserve.v1.Admin: model status, reload, version pinning and roll-outs, for operators. Served on
// its own listener (loopback by default) with gRPC's synchronous API: these calls wait
// for model loads and are rare, so they never occupy request threads. Status never
// waits for a load; reload and pin wait until shortly before the call's deadline (at
// most kMaxLoadWait) and then answer DEADLINE_EXCEEDED naming the load in progress.
// SetRollout acts at once (no load).
#ifndef RECSERVE_SERVER_ADMIN_SERVICE_H_
#define RECSERVE_SERVER_ADMIN_SERVICE_H_

#include "absl/time/time.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "server/model_manager.h"
#include "server/shadow_scorer.h"

namespace recserve {

class AdminService final : public v1::Admin::Service {
 public:
  // How long reload and pin wait on the load thread for a call without a deadline: a
  // large catalog's load (or graph build) takes minutes, a hung one must not hold a
  // thread and its caller for ever.
  static constexpr absl::Duration kMaxLoadWait = absl::Minutes(10);

  // `shadow` (may be null) fills each version's shadow comparison in GetModelStatus.
  explicit AdminService(ModelManager* manager, const ShadowScorer* shadow = nullptr)
      : manager_(manager), shadow_(shadow) {}

  grpc::Status GetModelStatus(grpc::ServerContext* context, const v1::GetModelStatusRequest* request,
                              v1::GetModelStatusResponse* response) override;
  grpc::Status ReloadModels(grpc::ServerContext* context, const v1::ReloadModelsRequest* request,
                            v1::ReloadModelsResponse* response) override;
  grpc::Status SetServingVersion(grpc::ServerContext* context,
                                 const v1::SetServingVersionRequest* request,
                                 v1::SetServingVersionResponse* response) override;
  grpc::Status SetRollout(grpc::ServerContext* context, const v1::SetRolloutRequest* request,
                          v1::SetRolloutResponse* response) override;

 private:
  // When reload and pin stop waiting for the load thread (see the file comment).
  static absl::Time WaitDeadline(const grpc::ServerContext& context);

  ModelManager* const manager_;
  const ShadowScorer* const shadow_;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_ADMIN_SERVICE_H_
