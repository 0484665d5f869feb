#include "server/rollout_stats.h"

#include <algorithm>
#include <cmath>

namespace recserve {
namespace {

int LatencyBin(absl::Duration latency) {
  const double us = absl::ToDoubleMicroseconds(latency);
  if (!(us > 1)) return 0;  // NaN and negatives too
  const double bin = std::ceil(4 * std::log2(us));
  return bin >= RolloutStats::kLatencyBins - 1 ? RolloutStats::kLatencyBins - 1 : static_cast<int>(bin);
}

bool ClientsDoing(absl::StatusCode code) {
  return code == absl::StatusCode::kCancelled || code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kNotFound;
}

}  // namespace

absl::Duration RolloutStats::Snapshot::LatencyQuantile(double q) const {
  int64_t total = 0;
  for (int64_t n : latency) total += n;
  if (total == 0) return absl::ZeroDuration();
  const double want = q * static_cast<double>(total);
  int64_t seen = 0;
  for (int i = 0; i < kLatencyBins; ++i) {
    seen += latency[i];
    if (static_cast<double>(seen) >= want) return absl::Microseconds(std::exp2(i / 4.0));
  }
  return absl::Microseconds(std::exp2((kLatencyBins - 1) / 4.0));
}

int64_t RolloutStats::Snapshot::score_count() const {
  int64_t n = 0;
  for (int64_t c : scores) n += c;
  return n;
}

void RolloutStats::RecordCall(absl::StatusCode code, absl::Duration latency, const RecommendResult* answer) {
  if (ClientsDoing(code)) return;
  calls_.fetch_add(1, std::memory_order_relaxed);
  if (code != absl::StatusCode::kOk) errors_.fetch_add(1, std::memory_order_relaxed);
  latency_[LatencyBin(latency)].fetch_add(1, std::memory_order_relaxed);
  if (answer == nullptr || answer->degraded == Degraded::kRecallOrder ||
      answer->degraded == Degraded::kPopularity) {
    return;  // unranked answers carry no scores
  }
  for (const RecommendedItem& item : answer->items) {
    // A score outside [0, 1] cannot come from the ranker's sigmoid; clamped, not dropped.
    const float s = std::clamp(item.score, 0.f, 1.f);
    const int bin = std::min(kScoreBins - 1, static_cast<int>(s * kScoreBins));
    scores_[bin].fetch_add(1, std::memory_order_relaxed);
  }
}

void RolloutStats::RecordOverlap(double overlap) {
  overlap_samples_.fetch_add(1, std::memory_order_relaxed);
  overlap_millionths_.fetch_add(std::llround(std::clamp(overlap, 0.0, 1.0) * kOverlapScale),
                                std::memory_order_relaxed);
}

RolloutStats::Snapshot RolloutStats::Read() const {
  Snapshot s;
  s.calls = calls_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  for (int i = 0; i < kLatencyBins; ++i) s.latency[i] = latency_[i].load(std::memory_order_relaxed);
  for (int i = 0; i < kScoreBins; ++i) s.scores[i] = scores_[i].load(std::memory_order_relaxed);
  s.overlap_samples = overlap_samples_.load(std::memory_order_relaxed);
  s.overlap_sum = static_cast<double>(overlap_millionths_.load(std::memory_order_relaxed)) / kOverlapScale;
  return s;
}

double ScorePsi(const RolloutStats::Snapshot& a, const RolloutStats::Snapshot& b) {
  const double na = static_cast<double>(a.score_count()), nb = static_cast<double>(b.score_count());
  if (na == 0 || nb == 0) return 0;
  constexpr double kPrior = 0.5;
  const double bins = RolloutStats::kScoreBins;
  double psi = 0;
  for (int i = 0; i < RolloutStats::kScoreBins; ++i) {
    const double p = (static_cast<double>(a.scores[i]) + kPrior) / (na + kPrior * bins);
    const double q = (static_cast<double>(b.scores[i]) + kPrior) / (nb + kPrior * bins);
    psi += (p - q) * std::log(p / q);
  }
  return psi;
}

}  // namespace recserve
