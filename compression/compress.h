// Compression at load time: the policy (manifest defaults, server-flag overrides), the
// ranker it builds (prune -> quantize -> int8 oneDNN), and the accuracy gate.
#ifndef RECSERVE_COMPRESSION_COMPRESS_H_
#define RECSERVE_COMPRESSION_COMPRESS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compression/accuracy.h"
#include "compression/quantize.h"
#include "engine/model.h"
#include "engine/ranker.h"
#include "recserve/v1/recommender.pb.h"

namespace recserve {

struct CompressionPolicy {
  std::string mode = "int8";          // "none" (fp32), "int8", "prune+int8"
  float unstructured_sparsity = 0.f;  // prune+int8: magnitude pruning of hidden layers
  float structured_ratio = 0.f;       // prune+int8: share of hidden neurons removed
  int structured_multiple = 16;       // kept widths rounded up to this
  QuantizeOptions quantize;
  v1::AccuracyGate gate;              // thresholds for the served ranker vs fp32
};

// Server flags; unset fields keep the manifest's value (or the built-in default).
struct PolicyOverrides {
  std::optional<std::string> mode;
  std::optional<float> unstructured_sparsity;
  std::optional<float> structured_ratio;
  std::optional<float> max_auc_drop;
  std::optional<float> max_logloss_rise;
};

// Manifest values, then overrides; checks every value and names the bad one.
absl::StatusOr<CompressionPolicy> ResolvePolicy(const v1::Manifest& manifest,
                                                const PolicyOverrides& overrides);

// A copy of `mlp` with the policy's pruning applied (unchanged unless prune+int8);
// unstructured pruning is activation-aware on the calibration rows.
absl::StatusOr<Mlp> ApplyPruning(const Mlp& mlp, const CalibrationSet& calibration,
                                 const CompressionPolicy& policy);

// The ranker the policy asks for: fp32 for "none", else pruned (if asked) and int8.
absl::StatusOr<std::unique_ptr<Ranker>> BuildRanker(const Mlp& mlp, const CalibrationSet& calibration,
                                                   const CompressionPolicy& policy,
                                                   const Fp32RankerOptions& buckets = {});

// Scores the calibration rows with the original fp32 MLP and with `served`.
absl::StatusOr<AccuracyReport> MeasureAccuracy(const Mlp& fp32, const Ranker& served,
                                               const CalibrationSet& calibration);

// `rows` synthetic feature rows as one request sends them (for throughput figures):
// standard-normal values, with the request-constant columns equal in every row.
std::vector<float> SyntheticRequestRows(int width, int rows, const std::vector<int>& constant_columns,
                                        uint64_t seed);

// Wires compression into model loading: `options->ranker_factory` builds the policy's
// ranker; the returned check measures it against fp32 on the calibration rows, fills
// the version's figures and refuses it when the gate says so.
std::function<absl::Status(const Model&, v1::ModelFigures*)> InstallCompression(
    const PolicyOverrides& overrides, ModelOptions* options);

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_COMPRESS_H_
