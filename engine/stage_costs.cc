#include "engine/stage_costs.h"

#include <algorithm>
#include <cmath>

namespace recserve {
namespace {

constexpr double kNewestWeight = 1.0 / 8;
// An estimate this long unmeasured starts to halve, once per further period.
constexpr double kFreshSeconds = 1.0;
constexpr double kHalfLifeSeconds = 1.0;

}  // namespace

void StageCosts::Record(Stage stage, absl::Duration cost, absl::Time now) {
  Figure& f = figures_[stage];
  const double sample = std::max(absl::ToDoubleSeconds(cost), 0.0);
  double mean = f.seconds.load(std::memory_order_relaxed);
  double next;
  do {
    next = mean == 0 ? sample : mean + kNewestWeight * (sample - mean);
  } while (!f.seconds.compare_exchange_weak(mean, next, std::memory_order_relaxed));
  f.measured_unix_ns.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
}

absl::Duration StageCosts::Estimate(Stage stage, absl::Time now) const {
  const Figure& f = figures_[stage];
  const double mean = f.seconds.load(std::memory_order_relaxed);
  const double age =
      absl::ToDoubleSeconds(now - absl::FromUnixNanos(f.measured_unix_ns.load(std::memory_order_relaxed)));
  const double stale = std::max(age - kFreshSeconds, 0.0);
  return absl::Seconds(mean * std::exp2(-stale / kHalfLifeSeconds));
}

StageEstimates StageCosts::Estimates(absl::Time now) const {
  return {Estimate(kPrepare, now), Estimate(kRecall, now), Estimate(kRankPerCandidate, now)};
}

}  // namespace recserve
