// What each stage of the request path costs one model version, measured on its own
// requests, so a request with a deadline can pick the largest answer that still fits
// (engine/pipeline.h, "Answers on time" in docs/architecture.md).
//
// Three figures: `prepare` (the request's events and exclusions mapped to catalog
// indices: every answer needs it), `recall` (user state and the recall merge) and
// `rank_per_candidate` (features, ranker and the answer's ordering, divided by the
// candidates ranked). Each is estimated as RFC 6298 estimates a retransmission timeout:
// a running mean (gain 1/8) plus two running mean deviations (gain 1/4), so a stage
// with a long tail is expected to take more than its mean; a late answer fails, a
// degraded one does not. The warm-up requests the loader runs before the version
// serves seed them. A stage that degraded requests stop running is no longer measured;
// so that one slow outlier cannot keep every later request degraded, an estimate older
// than a second halves with every further second until the stage runs again and is
// measured afresh (folded into what is left of the old figures).
//
// Lock-free: Record and Estimates are atomic loads, stores and compare-exchanges; any
// number of request threads use one StageCosts at once.
#ifndef RECSERVE_ENGINE_STAGE_COSTS_H_
#define RECSERVE_ENGINE_STAGE_COSTS_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace recserve {

// Expected cost of each stage for the next request; zero: not measured yet.
struct StageEstimates {
  absl::Duration prepare;
  absl::Duration recall;
  absl::Duration rank_per_candidate;
};

class StageCosts {
 public:
  enum Stage { kPrepare = 0, kRecall = 1, kRankPerCandidate = 2 };

  // Folds one measurement of `stage`, taken at `now`, into its mean.
  void Record(Stage stage, absl::Duration cost, absl::Time now);
  // The estimates at `now` (decayed where a stage has gone unmeasured for over a second).
  StageEstimates Estimates(absl::Time now) const;

 private:
  static constexpr int kStages = 3;
  struct Figure {
    std::atomic<double> mean{0};               // seconds; 0 until the first measurement
    std::atomic<double> deviation{0};          // seconds
    std::atomic<int64_t> measured_unix_ns{0};  // when last measured
  };
  absl::Duration Estimate(Stage stage, absl::Time now) const;
  Figure figures_[kStages];
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_STAGE_COSTS_H_
