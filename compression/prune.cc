#include "compression/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// Per layer, per input column: RMS and mean of the layer's input over the rows.
struct InputStats {
  std::vector<std::vector<float>> rms, mean;
};

InputStats MeasureInputs(const Mlp& mlp, const CalibrationSet& cal) {
  InputStats stats;
  std::vector<float> cur = cal.features, next;
  for (const DenseLayer& l : mlp.layers) {
    std::vector<double> sq(l.in, 0.0), sum(l.in, 0.0);
    for (int r = 0; r < cal.rows; ++r) {
      for (int k = 0; k < l.in; ++k) {
        const double v = cur[static_cast<size_t>(r) * l.in + k];
        sq[k] += v * v;
        sum[k] += v;
      }
    }
    std::vector<float> rms(l.in), mean(l.in);
    for (int k = 0; k < l.in; ++k) {
      rms[k] = static_cast<float>(std::sqrt(sq[k] / cal.rows));
      mean[k] = static_cast<float>(sum[k] / cal.rows);
    }
    stats.rms.push_back(std::move(rms));
    stats.mean.push_back(std::move(mean));
    next.assign(static_cast<size_t>(cal.rows) * l.out, 0.f);
    for (int r = 0; r < cal.rows; ++r) {
      for (int o = 0; o < l.out; ++o) {
        double acc = l.bias[o];
        for (int k = 0; k < l.in; ++k) {
          acc += double{l.weight[static_cast<size_t>(o) * l.in + k]} * cur[static_cast<size_t>(r) * l.in + k];
        }
        next[static_cast<size_t>(r) * l.out + o] = static_cast<float>(l.relu && acc < 0 ? 0 : acc);
      }
    }
    cur.swap(next);
  }
  return stats;
}

// Zeroes the `fraction` of weights among `layers` with the least importance
// (|w|, or |w| * input RMS with stats), folding their mean contribution into the bias.
void ZeroSmallest(Mlp* mlp, const std::vector<size_t>& layers, double fraction,
                  const InputStats* stats) {
  auto importance = [&](size_t li, size_t idx) {
    const DenseLayer& l = mlp->layers[li];
    const float a = std::abs(l.weight[idx]);
    return stats ? a * stats->rms[li][idx % l.in] : a;
  };
  std::vector<float> mags;
  for (size_t li : layers) {
    for (size_t i = 0; i < mlp->layers[li].weight.size(); ++i) mags.push_back(importance(li, i));
  }
  const size_t k = static_cast<size_t>(fraction * static_cast<double>(mags.size()));
  if (k == 0 || mags.empty()) return;
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end());
  const float threshold = mags[k - 1];
  // Ties at the threshold: zero only as many as needed to reach exactly k.
  size_t below = 0;
  for (size_t li : layers) {
    for (size_t i = 0; i < mlp->layers[li].weight.size(); ++i) below += importance(li, i) < threshold;
  }
  size_t ties_to_zero = k - below;
  for (size_t li : layers) {
    DenseLayer& l = mlp->layers[li];
    for (size_t i = 0; i < l.weight.size(); ++i) {
      const float a = importance(li, i);
      const bool drop = a < threshold || (a == threshold && ties_to_zero > 0 && ties_to_zero--);
      if (!drop || l.weight[i] == 0.f) continue;
      if (stats) l.bias[i / l.in] += l.weight[i] * stats->mean[li][i % l.in];
      l.weight[i] = 0.f;
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
  InputStats stats;
  if (o.calibration) {
    if (o.calibration->width != mlp->input_dim() || o.calibration->rows < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prune: calibration rows have width %d, the MLP takes %d", o.calibration->width, mlp->input_dim()));
    }
    stats = MeasureInputs(*mlp, *o.calibration);
  }
  const InputStats* s = o.calibration ? &stats : nullptr;
  if (o.global && o.per_layer.empty()) {
    ZeroSmallest(mlp, pruned, o.sparsity, s);
  } else {
    for (size_t i : pruned) ZeroSmallest(mlp, {i}, o.per_layer.empty() ? o.sparsity : o.per_layer[i], s);
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
