#include "compression/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// Zeroes every weight with |w| below the k-th smallest magnitude among `layers`.
void ZeroSmallest(Mlp* mlp, const std::vector<size_t>& layers, double fraction) {
  std::vector<float> mags;
  for (size_t li : layers) {
    for (float w : mlp->layers[li].weight) mags.push_back(std::abs(w));
  }
  const size_t k = static_cast<size_t>(fraction * static_cast<double>(mags.size()));
  if (k == 0 || mags.empty()) return;
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end());
  const float threshold = mags[k - 1];
  // Ties at the threshold: zero only as many as needed to reach exactly k.
  size_t below = 0;
  for (size_t li : layers) {
    for (float w : mlp->layers[li].weight) below += std::abs(w) < threshold;
  }
  size_t ties_to_zero = k - below;
  for (size_t li : layers) {
    for (float& w : mlp->layers[li].weight) {
      const float a = std::abs(w);
      if (a < threshold) {
        w = 0.f;
      } else if (a == threshold && ties_to_zero > 0) {
        w = 0.f;
        --ties_to_zero;
      }
    }
  }
}

}  // namespace

double Sparsity(const Mlp& mlp) {
  int64_t zeros = 0, total = 0;
  for (const DenseLayer& l : mlp.layers) {
    for (float w : l.weight) zeros += w == 0.f;
    total += static_cast<int64_t>(l.weight.size());
  }
  return total ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

absl::StatusOr<double> MagnitudePrune(Mlp* mlp, const MagnitudePruneOptions& o) {
  RETURN_IF_ERROR(ValidateMlp(*mlp));
  const size_t n = mlp->layers.size();
  if (!o.per_layer.empty() && o.per_layer.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prune: %d per-layer sparsities for %d layers", o.per_layer.size(), n));
  }
  auto check = [](float s) { return s >= 0.f && s < 1.f; };
  if (!check(o.sparsity)) {
    return absl::InvalidArgumentError(absl::StrFormat("prune: sparsity %g is outside [0, 1)", o.sparsity));
  }
  for (float s : o.per_layer) {
    if (!check(s)) return absl::InvalidArgumentError(absl::StrFormat("prune: sparsity %g is outside [0, 1)", s));
  }
  std::vector<size_t> pruned;
  for (size_t i = 0; i < n; ++i) {
    if (!(o.keep_output_dense && i + 1 == n)) pruned.push_back(i);
  }
  if (o.global && o.per_layer.empty()) {
    ZeroSmallest(mlp, pruned, o.sparsity);
  } else {
    for (size_t i : pruned) ZeroSmallest(mlp, {i}, o.per_layer.empty() ? o.sparsity : o.per_layer[i]);
  }
  return Sparsity(*mlp);
}

absl::Status StructuredPrune(Mlp* mlp, const StructuredPruneOptions& o) {
  RETURN_IF_ERROR(ValidateMlp(*mlp));
  if (!(o.ratio >= 0.f && o.ratio < 1.f)) {
    return absl::InvalidArgumentError(absl::StrFormat("structured prune: ratio %g is outside [0, 1)", o.ratio));
  }
  if (o.multiple < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("structured prune: multiple %d < 1", o.multiple));
  }
  for (size_t li = 0; li + 1 < mlp->layers.size(); ++li) {
    DenseLayer& cur = mlp->layers[li];
    DenseLayer& next = mlp->layers[li + 1];
    const int width = cur.out;
    int keep = static_cast<int>(std::ceil(width * (1.0 - o.ratio) / o.multiple)) * o.multiple;
    keep = std::min(width, std::max(keep, std::min(width, o.multiple)));
    if (keep == width) continue;
    std::vector<double> importance(width, 0.0);
    for (int n = 0; n < width; ++n) {
      double in_norm = 0, out_norm = 0;
      for (int k = 0; k < cur.in; ++k) in_norm += double{cur.weight[static_cast<size_t>(n) * cur.in + k]} * cur.weight[static_cast<size_t>(n) * cur.in + k];
      for (int m = 0; m < next.out; ++m) out_norm += double{next.weight[static_cast<size_t>(m) * next.in + n]} * next.weight[static_cast<size_t>(m) * next.in + n];
      importance[n] = std::sqrt(in_norm) * std::sqrt(out_norm);
    }
    std::vector<int> order(width);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return importance[a] > importance[b]; });
    std::vector<int> kept(order.begin(), order.begin() + keep);
    std::sort(kept.begin(), kept.end());
    DenseLayer new_cur{cur.in, keep, {}, {}, cur.relu};
    for (int n : kept) {
      new_cur.weight.insert(new_cur.weight.end(), cur.weight.begin() + static_cast<size_t>(n) * cur.in,
                            cur.weight.begin() + static_cast<size_t>(n + 1) * cur.in);
      new_cur.bias.push_back(cur.bias[n]);
    }
    DenseLayer new_next{keep, next.out, {}, next.bias, next.relu};
    for (int m = 0; m < next.out; ++m) {
      for (int n : kept) new_next.weight.push_back(next.weight[static_cast<size_t>(m) * next.in + n]);
    }
    cur = std::move(new_cur);
    next = std::move(new_next);
  }
  return ValidateMlp(*mlp);
}

}  // namespace recserve
