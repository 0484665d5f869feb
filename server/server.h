// RecserveServer: the whole serving process minus flag parsing and signals, so tests
// can run it in-process. Owns the model manager, the worker pool, the shadow scorer, the
// public gRPC server (Recommender, health, reflection) and the admin gRPC server.
//
// Lifecycle: Create() starts listening (ports may be 0: the chosen ports are reported);
// readiness turns SERVING when a model version serves. Drain() flips health to
// NOT_SERVING, keeps serving for the drain delay, closes the listener, and shuts gRPC
// down once the open connections go quiet, waiting up to the grace period for in-flight
// calls. Not copyable; methods are thread-safe.
#ifndef RECSERVE_SERVER_SERVER_H_
#define RECSERVE_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/admin_service.h"
#include "server/impression_log.h"
#include "server/listener.h"
#include "server/metrics.h"
#include "server/model_manager.h"
#include "server/recommender_service.h"
#include "server/shadow_metrics.h"
#include "server/shadow_scorer.h"
#include "server/sync.h"
#include "server/worker_pool.h"

namespace recserve {

inline constexpr char kReadinessService[] = "recserve.v1.Recommender";

struct ServerOptions {
  std::string listen_address = "0.0.0.0:8500";   // Recommender, health, reflection
  std::string admin_address = "127.0.0.1:8501";  // Admin; empty = no admin listener
  std::string metrics_address = "";              // Prometheus /metrics; empty = off
  MetricsHttpOptions metrics_http;               // its HTTP server's threads and timeout
  int worker_threads = 2;                        // engine worker threads
  int max_message_bytes = 1 << 20;               // largest request accepted (uncompressed:
                                                 // compressed requests are refused)
  absl::Duration max_connection_age;             // GOAWAY to older connections; 0 = never
  // Streams one client connection may hold open at once (advertised in SETTINGS; one more
  // and gRPC 1.51 closes the connection). Does not bound rapid reset: a stream the client
  // resets frees its slot at once while its call is still queued (docs/operations.md).
  int max_concurrent_streams = 100;
  RequestLimits limits;
  // Requests queued for a shadow version's scoring (ShadowScorerOptions::queue_size).
  int shadow_queue = 256;
  double shadow_cpu = 0.1;  // ShadowScorerOptions::max_cpu_share
  ModelManagerOptions manager;
  std::function<void(const RequestOutcome&)> observer;  // per finished Recommend
  // The impression log (server/impression_log.h); off while `impressions.dir` is empty.
  ImpressionLogOptions impressions;
};

class RecserveServer {
 public:
  static absl::StatusOr<std::unique_ptr<RecserveServer>> Create(ServerOptions options);
  ~RecserveServer();

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  int metrics_port() const;
  ModelManager& manager() { return *manager_; }
  RecommenderService& recommender() { return *recommender_; }
  Metrics* metrics() { return metrics_.get(); }  // null when metrics_address is empty

  // Health NOT_SERVING; waits `drain_delay` (load balancers notice) while still serving;
  // closes the listener (new connections refused) and serves the open connections until
  // they go quiet (at most 1 s); then gRPC shutdown: GOAWAY, accepted calls finish, at
  // most `grace` after the delay. Idempotent.
  void Drain(absl::Duration drain_delay, absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until Drain has finished.
  void Wait() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RecserveServer() = default;
  void UpdateReadiness() ABSL_LOCKS_EXCLUDED(mu_);

  // Set in Create before the threads that read them start (the load thread at
  // manager_->Start(), gRPC's at BuildAndStart), constant after (server_ aside); the
  // objects lock for themselves.
  ServerOptions options_;
  std::unique_ptr<ModelManager> manager_;
  // Declared before the pool and the service, so destroyed after them: no call is left
  // to offer it a record when it stops (writing what is queued).
  std::unique_ptr<ImpressionLog> impressions_;
  // Before the pool and the service, which offer it jobs: destroyed after them. Stopped
  // before the manager (~RecserveServer), which then still holds every model a job does.
  std::unique_ptr<ShadowMetrics> shadow_metrics_;
  std::unique_ptr<ShadowScorer> shadow_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<RecommenderService> recommender_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Listener> listener_;  // the Recommender port; gRPC gets its connections
  // Set by Create once built, while the load thread may already be in UpdateReadiness.
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::Server> admin_server_;
  int port_ = 0;
  int admin_port_ = 0;
  // Readiness and drain state. Taken by the load thread inside ServingManager's mu_
  // (on_serving_change -> UpdateReadiness), and takes the manager's serving_mu_
  // (serving_version()): ServingManager::mu_ -> mu_ -> ServingManager::serving_mu_.
  Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool drained_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_SERVER_H_
