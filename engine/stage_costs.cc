#include "engine/stage_costs.h"

#include <algorithm>
#include <cmath>

namespace recserve {
namespace {

// RFC 6298's retransmission timer: mean and mean deviation with gains 1/8 and 1/4; the
// estimate is the mean plus two deviations, not RFC 6298's four. Side by side on the 1M
// model (docs/benchmarks.md) the mean alone answered late nearly as often as no plan at
// all, and four deviations degraded 94% of calls that mostly fit.
constexpr double kMeanGain = 1.0 / 8;
constexpr double kDeviationGain = 1.0 / 4;
constexpr double kDeviations = 2;
// An estimate this long unmeasured starts to halve, once per further period.
constexpr double kFreshSeconds = 1.0;
constexpr double kHalfLifeSeconds = 1.0;

// What is left of a figure measured at `measured_unix_ns`, at `now`.
double Decay(int64_t measured_unix_ns, absl::Time now) {
  const double age = absl::ToDoubleSeconds(now - absl::FromUnixNanos(measured_unix_ns));
  return std::exp2(-std::max(age - kFreshSeconds, 0.0) / kHalfLifeSeconds);
}

}  // namespace

void StageCosts::Record(Stage stage, absl::Duration cost, absl::Time now) {
  Figure& f = figures_[stage];
  const double sample = std::max(absl::ToDoubleSeconds(cost), 0.0);
  // A stale figure is folded from what is left of it, as Estimates reads it.
  const double decay = Decay(f.measured_unix_ns.load(std::memory_order_relaxed), now);
  double mean = f.mean.load(std::memory_order_relaxed);
  const bool first = mean == 0;
  double error = 0, next;
  do {
    error = sample - mean * decay;
    next = first ? sample : mean * decay + kMeanGain * error;
  } while (!f.mean.compare_exchange_weak(mean, next, std::memory_order_relaxed));
  double deviation = f.deviation.load(std::memory_order_relaxed);
  do {
    next = first ? sample / 2 : deviation * decay + kDeviationGain * (std::abs(error) - deviation * decay);
  } while (!f.deviation.compare_exchange_weak(deviation, next, std::memory_order_relaxed));
  f.measured_unix_ns.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
}

absl::Duration StageCosts::Estimate(Stage stage, absl::Time now) const {
  const Figure& f = figures_[stage];
  const double seconds =
      f.mean.load(std::memory_order_relaxed) + kDeviations * f.deviation.load(std::memory_order_relaxed);
  return absl::Seconds(seconds * Decay(f.measured_unix_ns.load(std::memory_order_relaxed), now));
}

StageEstimates StageCosts::Estimates(absl::Time now) const {
  return {Estimate(kPrepare, now), Estimate(kRecall, now), Estimate(kRankPerCandidate, now)};
}

}  // namespace recserve
