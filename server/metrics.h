// Prometheus metrics of one recserve process, served by prometheus-cpp's pull exposer
// on its own port at /metrics.
//
// Every labelled child is created up front (codes, stages, sources, results), so
// recording on the request path is a lookup in a fixed array plus prometheus-cpp's own
// atomic update: no allocation, no lock of ours. Thread-safe.
#ifndef RECSERVE_SERVER_METRICS_H_
#define RECSERVE_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/recommender_service.h"

namespace recserve {

// The /metrics HTTP server (prometheus-cpp's civetweb) serves one connection per thread:
// a client that connects and sends nothing holds a thread until `request_timeout`. With
// the library's defaults (2 threads, 30 s) two idle clients blocked every scrape.
struct MetricsHttpOptions {
  int threads = 16;
  absl::Duration request_timeout = absl::Seconds(2);
};

class Metrics {
 public:
  // Exposes on `bind_address` (e.g. "127.0.0.1:9090"; port 0 picks one). `inflight`
  // reports in-flight requests when scraped.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& bind_address,
                                                        const MetricsHttpOptions& http,
                                                        std::function<int()> inflight);
  int port() const;

  // Per finished Recommend (worker thread).
  void ObserveRequest(const RequestOutcome& outcome);
  // Per load attempt (load thread).
  void ObserveLoad(int64_t version, const absl::Status& result);
  // When a version starts serving (load thread).
  void ObserveServing(const Model& model, const v1::ModelFigures& figures);

  prometheus::Registry& registry() { return *registry_; }
  // Serves another component's metrics on the same /metrics (e.g. the impression log's
  // registry). Dropped from scrapes once `collectable` is destroyed.
  void Expose(const std::shared_ptr<prometheus::Collectable>& collectable);

 private:
  Metrics() = default;
  static constexpr int kCodes = 17;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> process_;
  std::shared_ptr<prometheus::Collectable> inflight_;
  std::array<prometheus::Histogram*, kCodes> request_seconds_{};
  std::array<prometheus::Counter*, kCodes> requests_{};
  prometheus::Histogram* stage_recall_ = nullptr;
  prometheus::Histogram* stage_features_ = nullptr;
  prometheus::Histogram* stage_rank_ = nullptr;
  prometheus::Histogram* stage_total_ = nullptr;
  std::array<prometheus::Histogram*, 3> candidates_{};  // embedding, covisit, popularity
  prometheus::Counter* unknown_items_ = nullptr;
  prometheus::Counter* non_finite_scores_ = nullptr;
  prometheus::Counter* shed_ = nullptr;
  // recserve_degraded_total{stage}, by Degraded (kNone's slot unused).
  std::array<prometheus::Counter*, 4> degraded_{};
  prometheus::Counter* reload_success_ = nullptr;
  prometheus::Counter* reload_failure_ = nullptr;
  prometheus::Family<prometheus::Gauge>* model_version_ = nullptr;
  prometheus::Gauge* sparsity_ = nullptr;
  prometheus::Gauge* size_fp32_ = nullptr;
  prometheus::Gauge* size_served_ = nullptr;
  prometheus::Gauge* auc_delta_ = nullptr;
  // recserve_model_compression{policy}: 1 on the serving version's form, 0 on the others.
  // Forms, a fixed set: none, int8, prune+int8, mixed (any mixed-precision split).
  static constexpr int kForms = 4;
  std::array<prometheus::Gauge*, kForms> compression_{};
  prometheus::Gauge* compression_fallback_ = nullptr;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_METRICS_H_
