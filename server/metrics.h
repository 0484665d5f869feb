// Prometheus metrics of one recserve process, served by prometheus-cpp's pull exposer
// on its own port at /metrics.
//
// Request-level series carry the labels `version` and `role` of the model version that
// answered (recserve_request_duration_seconds, recserve_requests_total,
// recserve_stage_duration_seconds, recserve_candidates, recserve_degraded_total,
// recserve_unknown_items_total, recserve_non_finite_scores_total, recserve_score). Calls
// no version answered (refused before one was chosen: malformed, invalid, shed at the
// in-flight cap, cancelled or late in the queue, no version serving) are counted with
// version "" (Prometheus: no version label) and role "none", in the request count and
// latency only.
//
// Nothing is created on the request path. The series of a (version, role) are created
// by ObserveRole on the load thread before the version can answer in that role, and
// removed by ObserveUnloaded once the version is destroyed; the request path finds them
// in a fixed table of slots (one atomic key each, scanned without a lock) and holds its
// slot with an atomic count while it records, so a removal waits for the requests
// recording into the series it frees (microseconds) and a request never touches freed
// ones. Recording is then prometheus-cpp's own atomics (counters) and per-histogram
// lock; no allocation, no lock of ours. A request whose (version, role) has no series
// (never announced, or already removed: a request that finishes the instant its version
// is destroyed) is counted as answered by no version.
//
// Thread-safety: every method may be called from any thread, concurrently (the server
// calls ObserveRequest on workers and gRPC threads, the others on the load thread).
// ObserveRole and ObserveUnloaded take roles_mu_, a leaf lock that the request path never
// takes; ObserveUnloaded waits under it for the requests recording into what it removes.
#ifndef RECSERVE_SERVER_METRICS_H_
#define RECSERVE_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/recommender_service.h"
#include "server/serving_manager.h"
#include "server/sync.h"

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
  ~Metrics();
  int port() const;

  // Per finished Recommend (worker thread): under the outcome's version and role when
  // ObserveRole created that pair's series, else as answered by no version (file comment).
  // A ranked answer adds one recserve_score observation per returned item.
  void ObserveRequest(const RequestOutcome& outcome);
  // Per load attempt (load thread).
  void ObserveLoad(int64_t version, const absl::Status& result);
  // When a version starts serving (load thread): the model gauges, and ObserveRole(version,
  // kServing) in case nothing announced it before.
  void ObserveServing(const Model& model, const v1::ModelFigures& figures);
  // Creates the request-level series of `version` in `role` (idempotent; kNone: nothing).
  // Call it before the version can answer in that role, i.e. before the serving set that
  // gives it the role is published: the server calls it with kServing from the loader's
  // before_publish (every loaded version may serve), and roll-out code calls it with
  // kCanary (kShadow) before it publishes a canary (shadow). A version keeps the series of
  // every role it had until ObserveUnloaded, so a promoted canary's canary series stay
  // scrapeable. At most kSlots (version, role) pairs exist at once; past that the pair is
  // refused (one line on stderr) and its requests count as answered by no version.
  void ObserveRole(int64_t version, ServingRole role) ABSL_LOCKS_EXCLUDED(roles_mu_);
  // Removes every series of `version` (all roles), after waiting for the requests
  // recording into them. Call it once the version's model is destroyed (the manager's
  // on_unloaded): no request can be answered by it any more.
  void ObserveUnloaded(int64_t version) ABSL_LOCKS_EXCLUDED(roles_mu_);

  prometheus::Registry& registry() { return *registry_; }
  // Serves another component's metrics on the same /metrics (e.g. the impression log's
  // registry). Dropped from scrapes once `collectable` is destroyed.
  void Expose(const std::shared_ptr<prometheus::Collectable>& collectable);

 private:
  Metrics() = default;
  static constexpr int kCodes = 17;
  // (version, role) pairs with series at once: serving, previous, canary, shadow and
  // versions retired but still answering, each in the roles it has had.
  static constexpr int kSlots = 16;
  static constexpr int64_t kFreeSlot = -1;

  // The request-level children of one (version, role), or of no version (the unattributed
  // series: request counts and latency only, the other pointers null).
  struct Series {
    std::array<prometheus::Histogram*, kCodes> request_seconds{};
    std::array<prometheus::Counter*, kCodes> requests{};
    prometheus::Histogram* stage_recall = nullptr;
    prometheus::Histogram* stage_features = nullptr;
    prometheus::Histogram* stage_rank = nullptr;
    prometheus::Histogram* stage_total = nullptr;
    std::array<prometheus::Histogram*, 3> candidates{};  // embedding, covisit, popularity
    prometheus::Counter* unknown_items = nullptr;
    prometheus::Counter* non_finite_scores = nullptr;
    // recserve_degraded_total{stage}, by Degraded (kNone's slot unused).
    std::array<prometheus::Counter*, 4> degraded{};
    prometheus::Histogram* score = nullptr;
  };
  // One entry of the request path's table. `key` (version * 4 + role, kFreeSlot when
  // free) is what requests scan; a request that matches it raises `recording`, checks
  // `key` again and only then reads `series`. The writer (under roles_mu_) sets `series`
  // only while the slot is free and publishes it with the key; to remove, it frees the
  // key, then waits until `recording` is 0 before deleting: with both sides sequentially
  // consistent, either the request sees the key gone, or the writer sees its count.
  struct alignas(64) Slot {
    std::atomic<int64_t> key{kFreeSlot};
    std::atomic<int> recording{0};
    Series* series = nullptr;  // owned; written only as described above
  };

  // Creates the children of one label set; `answered`: also the per-answer ones.
  std::unique_ptr<Series> AddSeries(const std::string& version, const char* role, bool answered);
  void RemoveSeries(const Series& series);
  // Records `o` into `series` (the unattributed series: its code and latency only).
  void Record(const RequestOutcome& o, const Series& series);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> process_;
  std::shared_ptr<prometheus::Collectable> inflight_;
  prometheus::Family<prometheus::Histogram>* request_seconds_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* stages_ = nullptr;
  prometheus::Family<prometheus::Histogram>* candidates_ = nullptr;
  prometheus::Family<prometheus::Counter>* unknown_items_ = nullptr;
  prometheus::Family<prometheus::Counter>* non_finite_scores_ = nullptr;
  prometheus::Family<prometheus::Counter>* degraded_ = nullptr;
  prometheus::Family<prometheus::Histogram>* score_ = nullptr;
  std::unique_ptr<Series> unattributed_;
  std::array<Slot, kSlots> slots_;
  Mutex roles_mu_;  // serializes the writers of slots_
  prometheus::Counter* shed_ = nullptr;
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
