#include "engine/quality.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace recserve {

double Auc(absl::Span<const float> scores, absl::Span<const float> labels) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney U with average ranks for ties.
  double positives = 0, rank_sum = 0;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j + 1 < n && scores[order[j + 1]] == scores[order[i]]) ++j;
    const double avg_rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) {
      if (labels[order[k]] > 0.5f) {
        positives += 1;
        rank_sum += avg_rank;
      }
    }
    i = j + 1;
  }
  const double negatives = static_cast<double>(n) - positives;
  if (positives == 0 || negatives == 0) return 0.5;
  return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

double LogLoss(absl::Span<const float> probabilities, absl::Span<const float> labels) {
  if (probabilities.empty()) return 0;
  double sum = 0;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    const double p = std::clamp(static_cast<double>(probabilities[i]), 1e-7, 1 - 1e-7);
    sum -= labels[i] > 0.5f ? std::log(p) : std::log(1 - p);
  }
  return sum / static_cast<double>(probabilities.size());
}

double MeanGroupNdcg(absl::Span<const float> scores, absl::Span<const float> labels,
                     absl::Span<const int64_t> groups, int k) {
  double sum = 0;
  int64_t counted = 0;
  std::vector<size_t> order;
  for (size_t begin = 0; begin < scores.size();) {
    size_t end = begin + 1;
    while (end < scores.size() && groups[end] == groups[begin]) ++end;
    order.resize(end - begin);
    std::iota(order.begin(), order.end(), begin);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    double dcg = 0, ideal = 0;
    int positives = 0;
    for (size_t i = begin; i < end; ++i) positives += labels[i] > 0.5f;
    for (int r = 0; r < std::min<int>(k, static_cast<int>(order.size())); ++r) {
      const double discount = 1 / std::log2(r + 2.0);
      if (labels[order[r]] > 0.5f) dcg += discount;
      if (r < positives) ideal += discount;
    }
    if (positives > 0) {
      sum += dcg / ideal;
      ++counted;
    }
    begin = end;
  }
  return counted > 0 ? sum / counted : 0;
}

}  // namespace recserve
