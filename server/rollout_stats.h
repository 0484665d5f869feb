// RolloutStats: what one member of the serving set did since its roll-out window opened,
// for the rules that promote or roll back a canary (server/rollout.h).
//
// Each ServingSet member carries one (ServingSet::Member::stats); the request path
// records into the stats of the member that answered, reached through the set it
// pinned, and the load thread reads a Snapshot each cycle. It keeps:
//   - calls and errors. A call that ended CANCELLED, INVALID_ARGUMENT or NOT_FOUND is the
//     client's doing and counts as neither; every other code, DEADLINE_EXCEEDED
//     included, is an error of the version;
//   - latency, in log bins (four per octave from 1 us, about 19% wide; the last bin holds
//     everything above 2^24 us, ~17 s), from which p99 is read as a bin's upper edge;
//   - the scores it served (sigmoid click probabilities, 20 equal bins over [0, 1]) when
//     its ranker ordered the answer (not degraded to recall order or popularity);
//   - top-k overlap samples in [0, 1] against the serving version (the shadow comparison
//     feeds them; rules on overlap apply only when there are samples).
// A fresh RolloutStats starts every window (a roll-out's start gives the canary and the
// serving version new ones), so no reset is needed.
//
// Thread-safety: recording is lock-free (relaxed atomic adds, no allocation) and may run
// on any number of threads; Read() may run at the same time and sees each counter at
// some recent value (a snapshot is not one instant across counters, which the rules'
// ratios over thousands of calls do not notice).
#ifndef RECSERVE_SERVER_ROLLOUT_STATS_H_
#define RECSERVE_SERVER_ROLLOUT_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/pipeline.h"

namespace recserve {

class RolloutStats {
 public:
  static constexpr int kLatencyBins = 98;  // bin 0: < 1 us; bin i: (2^((i-1)/4), 2^(i/4)] us
  static constexpr int kScoreBins = 20;

  struct Snapshot {
    int64_t calls = 0;
    int64_t errors = 0;
    std::array<int64_t, kLatencyBins> latency{};
    std::array<int64_t, kScoreBins> scores{};
    int64_t overlap_samples = 0;
    double overlap_sum = 0;

    // The latency below which a `q` share of calls finished, as the upper edge of its
    // bin; 0 without calls.
    absl::Duration LatencyQuantile(double q) const;
    int64_t score_count() const;
    double error_rate() const { return calls > 0 ? static_cast<double>(errors) / calls : 0; }
  };

  // One finished call this member answered (or failed), `latency` from its pin of the
  // serving set to its answer. `answer`: the call's result when it succeeded (its
  // scores go into the score histogram if ranked), else null.
  void RecordCall(absl::StatusCode code, absl::Duration latency, const RecommendResult* answer);
  // One top-k overlap sample (share of this member's top k found in serving's), in [0, 1].
  void RecordOverlap(double overlap);

  Snapshot Read() const;

 private:
  static constexpr int64_t kOverlapScale = 1000000;  // overlap sums in millionths

  std::atomic<int64_t> calls_{0};
  std::atomic<int64_t> errors_{0};
  std::array<std::atomic<int64_t>, kLatencyBins> latency_{};
  std::array<std::atomic<int64_t>, kScoreBins> scores_{};
  std::atomic<int64_t> overlap_samples_{0};
  std::atomic<int64_t> overlap_millionths_{0};
};

// The population stability index of two score histograms: sum over bins of
// (p - q) * ln(p / q), with p and q each bin's share after adding half a count to every
// bin (so an empty bin on one side is finite). 0 for the same distribution; above ~0.2
// is commonly read as a shift that matters. 0 when either side has no scores.
double ScorePsi(const RolloutStats::Snapshot& a, const RolloutStats::Snapshot& b);

}  // namespace recserve

#endif  // RECSERVE_SERVER_ROLLOUT_STATS_H_
