// Test helpers for compression: a ranker whose int8 form fails the accuracy gate however
// it is calibrated, and which keeping layer 0 in fp32 repairs.
//
// One input column carries a "missing" sentinel (-1000) in a few percent of the rows and a
// standard-normal value, that the ranker leans on, in the rest (real logs have such
// columns: -1 or -999 for unknown counts). A u8 grid over [-1000, 4] has a step of ~4,
// so the informative values collapse onto two levels; clipping the sentinel instead
// costs more squared error than the bulk's rounding, so range search keeps it (and is
// right to: those rows would be scored as if the value were -4). Layer 0's weights on
// the column are positive, so the sentinel rows switch those neurons off: layer 0's
// outputs, what the next layer quantizes, stay well behaved.
#ifndef RECSERVE_COMPRESSION_TEST_MODELS_H_
#define RECSERVE_COMPRESSION_TEST_MODELS_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/bundle.h"
#include "engine/features.h"
#include "engine/mlp.h"
#include "engine/test_util.h"

namespace recserve::testing {

inline constexpr float kMissingSentinel = -1000.f;

// Calibration rows of `mlp`'s input width (standard normal, `column` with the sentinel in
// ~3% of rows), labels drawn from the fp32 model's own probabilities (so AUC measures
// what the ranker knows), slates of 10. Makes layer 0 lean on `column` (see above).
inline CalibrationSet SentinelColumnCalibration(Mlp* mlp, int rows, int column, uint64_t seed) {
  DenseLayer& l0 = mlp->layers.front();
  for (int o = 0; o < l0.out; ++o) {
    float& w = l0.weight[static_cast<size_t>(o) * l0.in + column];
    w = 3.f * std::abs(w) + 1.f;
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  CalibrationSet c;
  c.rows = rows;
  c.width = l0.in;
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < l0.in; ++k) c.features.push_back(normal(rng));
    if (uniform(rng) < 0.03f) c.features[static_cast<size_t>(r) * l0.in + column] = kMissingSentinel;
    c.groups.push_back(r / 10);
  }
  std::vector<float> p(rows);
  ReferenceScore(*mlp, c.features, rows, absl::MakeSpan(p));
  for (int r = 0; r < rows; ++r) c.labels.push_back(uniform(rng) < p[r] ? 1.f : 0.f);
  return c;
}

// A TinyBundle (hidden layers 32, 16) whose ranker is the above, on its first
// request-varying column, with 4000 calibration rows; policy int8 and the given gate.
inline BundleContents SentinelBundle(float max_auc_drop, float max_logloss_rise) {
  BundleContents b = TinyBundle(64, 8, 3, {32, 16});
  const std::vector<int> constant = RequestConstantColumns(b.manifest.features());
  int column = 0;
  while (std::find(constant.begin(), constant.end(), column) != constant.end()) ++column;
  b.calibration = SentinelColumnCalibration(&b.mlp, 4000, column, 9);
  b.manifest.mutable_compression()->set_mode("int8");
  b.manifest.mutable_gate()->set_max_auc_drop(max_auc_drop);
  b.manifest.mutable_gate()->set_max_logloss_rise(max_logloss_rise);
  return b;
}

}  // namespace recserve::testing

#endif  // RECSERVE_COMPRESSION_TEST_MODELS_H_
