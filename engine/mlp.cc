#include "engine/mlp.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/value_limits.h"

namespace recserve {

std::vector<int> Mlp::LayerSizes() const {
  std::vector<int> sizes;
  if (layers.empty()) return sizes;
  sizes.push_back(layers.front().in);
  for (const DenseLayer& l : layers) sizes.push_back(l.out);
  return sizes;
}

int64_t Mlp::ParameterCount() const {
  int64_t n = 0;
  for (const DenseLayer& l : layers) n += int64_t{l.in} * l.out + l.out;
  return n;
}

int64_t Mlp::MacsPerRow() const {
  int64_t n = 0;
  for (const DenseLayer& l : layers) n += int64_t{l.in} * l.out;
  return n;
}

absl::Status ValidateMlp(const Mlp& mlp) {
  if (mlp.layers.empty()) return absl::InvalidArgumentError("mlp: no layers");
  for (size_t i = 0; i < mlp.layers.size(); ++i) {
    const DenseLayer& l = mlp.layers[i];
    const bool last = i + 1 == mlp.layers.size();
    if (l.in <= 0 || l.out <= 0 || l.in > (1 << 16) || l.out > (1 << 16)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("mlp layer %d: bad shape [%d x %d]", i, l.out, l.in));
    }
    if (l.weight.size() != static_cast<size_t>(l.in) * l.out) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mlp layer %d: weight has %d values, want %d x %d", i, l.weight.size(), l.out, l.in));
    }
    if (l.bias.size() != static_cast<size_t>(l.out)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mlp layer %d: bias has %d values, want %d", i, l.bias.size(), l.out));
    }
    if (i > 0 && mlp.layers[i - 1].out != l.in) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mlp layer %d: takes %d inputs but layer %d gives %d", i, l.in, i - 1,
          mlp.layers[i - 1].out));
    }
    if (last && (l.out != 1 || l.relu)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mlp: last layer must be [1 x %d] without ReLU (then sigmoid)", l.in));
    }
    if (!last && !l.relu) {
      return absl::InvalidArgumentError(
          absl::StrFormat("mlp layer %d: hidden layers need a ReLU", i));
    }
    // NaN fails both comparisons.
    auto within_limit = [](float v) { return v >= -kMaxBundleValue && v <= kMaxBundleValue; };
    for (size_t k = 0; k < l.weight.size(); ++k) {
      if (!within_limit(l.weight[k])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "mlp layer %d: weight [%d, %d] is %g; weights must be finite and within +-%g", i, k / l.in, k % l.in,
            l.weight[k], kMaxBundleValue));
      }
    }
    for (int o = 0; o < l.out; ++o) {
      if (!within_limit(l.bias[o])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "mlp layer %d: bias [%d] is %g; biases must be finite and within +-%g", i, o, l.bias[o], kMaxBundleValue));
      }
    }
  }
  return absl::OkStatus();
}

void ReferenceScore(const Mlp& mlp, absl::Span<const float> rows, int n,
                    absl::Span<float> probabilities) {
  std::vector<double> cur, next;
  for (int r = 0; r < n; ++r) {
    const int in0 = mlp.input_dim();
    cur.assign(rows.begin() + static_cast<size_t>(r) * in0,
               rows.begin() + static_cast<size_t>(r + 1) * in0);
    for (const DenseLayer& l : mlp.layers) {
      next.assign(l.out, 0.0);
      for (int o = 0; o < l.out; ++o) {
        double acc = l.bias[o];
        const float* w = &l.weight[static_cast<size_t>(o) * l.in];
        for (int i = 0; i < l.in; ++i) acc += static_cast<double>(w[i]) * cur[i];
        next[o] = l.relu && acc < 0 ? 0.0 : acc;
      }
      cur.swap(next);
    }
    probabilities[r] = static_cast<float>(1.0 / (1.0 + std::exp(-cur[0])));
  }
}

}  // namespace recserve
