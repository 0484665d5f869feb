// ShadowScorer: a shadow version scores a sampled share of requests off the critical
// path, and its answers are compared with the serving version's.
//
// What it promises:
//   - the request path never waits on it and is never changed by it. Offer() runs after
//     the served answer is built; it decides by a stable hash of the request id whether
//     the request falls in the shadow member's share, copies what the shadow needs into
//     a preallocated slot of a bounded queue and returns. A full queue, or a queue lock
//     held by another thread at that instant (TryLock, never a wait), drops the job and
//     counts it. Offer reads the served answer only; the shadow's answer is never
//     returned and goes nowhere but the comparison below;
//   - only requests the serving member answered in full are offered: not those a canary
//     answered, not degraded answers (their scores are 0 or their candidates cut);
//   - one background thread, at idle priority (SCHED_IDLE; nice 19 where that is
//     refused), starting a job only when no request is in flight (requests_in_flight)
//     and taking at most max_cpu_share of a core (both below: idle priority alone does
//     not keep a busy thread from slowing requests on a small VM), and with one OpenMP
//     thread like a worker, runs the shadow model's whole
//     pipeline (engine/pipeline.h Recommend, its own PipelineScratch) on the request's
//     inputs: the events as the serving version resolved them to item ids, context, n,
//     event-type and item exclusions and per-category cap, with no deadline. The shadow
//     therefore ranks the candidates its own recall proposes for that request: the same
//     candidates the serving version ranked when the two share catalog and recall (a
//     retrained ranker), its own when they do not (then the comparison covers the whole
//     version, recall included);
//   - per shadow version it compares (ShadowComparison): score histograms of the served
//     and the shadow answers' scores (kScoreBins equal bins over [0, 1]) and the PSI
//     between them; top-k overlap |served ∩ shadow| / k, k = the longer answer (n unless
//     the catalog ran short); pipeline seconds of both over the last kLatencyWindow
//     scored requests (p50, p99; served: the worker's wall time; shadow: its thread's CPU
//     time, as wall time at idle priority measures the machine's load, not the model);
//     counts: sampled, scored, dropped, failed. The last kMaxVersions shadow versions
//     are kept. Each scored or failed job is also recorded in the shadow member's
//     RolloutStats (a call, its CPU seconds, its scores, its top-k overlap), which the
//     manager's roll-out rules judge against the serving version's;
//   - model lifetime: a queued job holds the shadow member's shared_ptr<const Model>
//     from Offer (which only copies it: a request thread never drops a model reference
//     here) until the shadow thread has scored it, or Stop() discards it. In the server
//     the ModelManager outlives the scorer (it is stopped first), and a version that
//     leaves the serving set sits on the manager's retired list until no one else holds
//     it, so the shadow thread's release is never the last: the load thread's reaper
//     frees the model, as for requests. Without a manager (tests) the last reference may
//     go on the shadow thread or in Stop(): neither is a request thread.
//
// Thread-safety: every public method may be called from any thread. Two leaf locks,
// never nested: mu_ (the queue and the offer counts; Offer only ever TryLocks it, the
// shadow thread holds it only to swap a job out) and stats_mu_ (the comparisons, updated
// by the shadow thread once per job).
#ifndef RECSERVE_SERVER_SHADOW_SCORER_H_
#define RECSERVE_SERVER_SHADOW_SCORER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/pipeline.h"
#include "recserve/v1/recommender.pb.h"
#include "server/serving_manager.h"
#include "server/sync.h"

namespace recserve {

inline constexpr int kScoreBins = 20;          // score histogram bins over [0, 1]
inline constexpr int kLatencyWindow = 1024;    // scored requests the latency figures cover
inline constexpr int kMaxShadowVersions = 4;   // comparisons kept, newest versions

// What became of one sampled request, for metrics (ShadowScorerOptions::on_job).
struct ShadowJobResult {
  enum Outcome { kScored, kDropped, kFailed };
  Outcome outcome;
  int64_t shadow_version;
  double topk_overlap = 0;  // kScored: this request's
  double score_psi = 0;     // kScored: the version's, with this request counted
};

struct ShadowScorerOptions {
  // Jobs waiting for the shadow thread; more are dropped. Default 256. At least 1.
  int queue_size = 256;
  // Called for every sampled request's outcome: kDropped on the offering thread (a
  // request worker: must not block) or Stop's, the others on the shadow thread.
  // Default: none.
  std::function<void(const ShadowJobResult&)> on_job;
  // Run the shadow thread at idle priority (see the file comment). Default true. Tests
  // set false: on a machine busy with other work an idle thread may wait a second for a
  // millisecond's job, and they check what is scored, not how it yields.
  bool idle_priority = true;
  // The server's requests queued or running. When set, the shadow thread starts a job
  // only at an instant it returns 0, polling every `idle_poll` while it does not, so a
  // shadow uses only CPU the request path leaves idle: a low-priority thread that keeps
  // a core busy still slows the requests (measured: one SCHED_IDLE spin loop on a 2-core
  // VM tripled their p50), and waiting for idle instants instead turns a busy server's
  // shadow jobs into counted drops. Called on the shadow thread. Default: none (start
  // every job at once; tests).
  std::function<int()> requests_in_flight;
  absl::Duration idle_poll = absl::Microseconds(100);
  // Most of one core the shadow thread takes: after a job of c CPU seconds it rests
  // c (1 - x) / x before starting the next (jobs queue meanwhile, and past the queue are
  // dropped and counted). Fewer shadow jobs overlap the requests that arrive while one
  // runs. In (0, 1]; default 1 (no rest).
  double max_cpu_share = 1.0;
  // Tests only: runs on the shadow thread before each job (a test stalls the thread in
  // it). Default: none.
  std::function<void()> before_job;
};

// One shadow version's comparison with the serving version (see the file comment).
struct ShadowComparison {
  int64_t shadow_version = 0;
  int64_t serving_version = 0;  // of the last scored request
  int64_t sampled = 0, scored = 0, dropped = 0, failed = 0;
  double topk_overlap_mean = 0;  // over `scored`
  double score_psi = 0;
  std::array<int64_t, kScoreBins> served_score_bins{};
  std::array<int64_t, kScoreBins> shadow_score_bins{};
  int latency_samples = 0;
  double served_p50_seconds = 0, served_p99_seconds = 0;
  double shadow_p50_seconds = 0, shadow_p99_seconds = 0;
  double latency_ratio_p99 = 0;  // shadow p99 / served p99; 0 without samples

  void ToProto(v1::ShadowComparison* out) const;
};

// Population stability index of two histograms over the same bins: sum over bins of
// (q - p) ln(q / p) with p, q the bins' shares, each floored at 1e-4 so an empty bin
// counts as rare rather than impossible. 0 when either histogram is empty.
double PopulationStabilityIndex(const std::array<int64_t, kScoreBins>& expected,
                                const std::array<int64_t, kScoreBins>& actual);

class ShadowScorer {
 public:
  enum class Offered {
    kNotOffered,  // no shadow member, not in its share, answered by a canary, degraded, stopped
    kQueued,
    kDropped,     // queue full or busy: counted, not scored
  };

  // Starts the shadow thread. INVALID_ARGUMENT for queue_size < 1 or max_cpu_share
  // outside (0, 1].
  static absl::StatusOr<std::unique_ptr<ShadowScorer>> Create(ShadowScorerOptions options);
  ShadowScorer(const ShadowScorer&) = delete;
  ShadowScorer& operator=(const ShadowScorer&) = delete;
  ~ShadowScorer() { Stop(); }

  // After a request's answer `served` (pipeline run on `query`, by `served_version`) has
  // been built from `set`, the set the request pinned: queues the request for `set`'s
  // kShadow member when there is one, the serving member answered, and `request_id`
  // falls in the shadow's share. Never blocks; allocates only to grow a slot's buffers
  // up to the largest request seen.
  Offered Offer(const ServingSet& set, absl::string_view request_id, const RecommendQuery& query,
                int64_t served_version, const RecommendResult& served) ABSL_LOCKS_EXCLUDED(mu_);

  // The comparison of shadow `version`, or nullopt if it was never sampled (or is older
  // than the last kMaxShadowVersions).
  std::optional<ShadowComparison> Comparison(int64_t version) const ABSL_LOCKS_EXCLUDED(mu_, stats_mu_);

  // Waits until no job is queued or running, or until `deadline` (false). Benchmarks and
  // tests read the figures after it.
  bool WaitUntilIdle(absl::Time deadline) const ABSL_LOCKS_EXCLUDED(mu_);

  // Asks the shadow thread to stop after the job in progress, without waiting: offers
  // from now on are not offered and queued jobs are no longer started. Stop() also joins
  // the thread and discards the queued jobs (counted dropped), releasing their models.
  // Both idempotent.
  void RequestStop() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_, stop_mu_);

  int queue_size() const { return capacity_; }

 private:
  // A sampled request, copied: what the shadow's pipeline and the comparison need.
  struct Job {
    std::shared_ptr<const Model> model;  // the shadow's; null in an empty slot
    // The shadow member's roll-out figures (server/rollout_stats.h): each scored job is
    // recorded there as a call (its CPU seconds as latency) with its top-k overlap, so the
    // manager's rules judge a shadow as they judge a canary. Null in tests without one.
    std::shared_ptr<RolloutStats> rollout_stats;
    int64_t shadow_version = 0;
    int64_t served_version = 0;
    std::vector<QueryEvent> events;
    std::vector<uint64_t> exclude_items;
    RequestContext context;
    int n = 0;
    int64_t exclude_types = -1;
    int per_category_cap = 0;
    std::vector<RecommendedItem> served;
    double served_seconds = 0;
  };
  struct OfferCounts {
    int64_t sampled = 0, dropped = 0;
  };
  // A shadow version's figures, as the shadow thread gathers them.
  struct Stats {
    int64_t serving_version = 0;
    int64_t scored = 0, failed = 0;
    double overlap_sum = 0;
    std::array<int64_t, kScoreBins> served_bins{}, shadow_bins{};
    // Rings of the last kLatencyWindow scored requests' seconds; `next` is the oldest.
    std::vector<double> served_seconds, shadow_seconds;
    int next = 0;
  };

  explicit ShadowScorer(ShadowScorerOptions options);
  void Run() ABSL_LOCKS_EXCLUDED(mu_, stats_mu_);
  // Waits until options_.requests_in_flight() is 0; false if stopping meanwhile.
  bool WaitForIdleRequestPath();
  // Scores `job` with the shadow thread's scratch and records it; its CPU seconds.
  double Score(const Job& job, PipelineScratch* scratch, RecommendResult* result) ABSL_LOCKS_EXCLUDED(stats_mu_);
  // The counts of `version`, created (and the oldest evicted past kMaxShadowVersions).
  OfferCounts& CountsLocked(int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the drops Offer counted while it could not take mu_ (shadow thread).
  void FoldBusyDropsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dropped(int64_t version) const;

  // Constant after construction.
  const ShadowScorerOptions options_;
  const int capacity_;  // slots_.size()

  // The queue: a ring over slots_, whose buffers are kept between jobs.
  mutable Mutex mu_;
  std::vector<Job> slots_ ABSL_GUARDED_BY(mu_);
  int head_ ABSL_GUARDED_BY(mu_) = 0;    // the oldest queued job
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool running_job_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<int64_t, OfferCounts> offers_ ABSL_GUARDED_BY(mu_);
  // Mirrors of queued_ and stop_ that Offer reads without the lock, to drop a job
  // before copying it; the truth is under mu_.
  std::atomic<int> queued_hint_{0};
  std::atomic<bool> stopped_{false};
  // Drops counted when Offer found mu_ taken, and the version of the last one: folded
  // into offers_ at the next lock (a switch of shadow version in between may credit a
  // few to the new version).
  std::atomic<int64_t> busy_drops_{0};
  std::atomic<int64_t> busy_drop_version_{0};

  mutable Mutex stats_mu_;
  std::map<int64_t, Stats> stats_ ABSL_GUARDED_BY(stats_mu_);

  Mutex stop_mu_;  // Stop may race with itself; a leaf
  std::thread thread_ ABSL_GUARDED_BY(stop_mu_);  // started by the constructor, joined by Stop
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_SHADOW_SCORER_H_
