// Compression at load time: the policy (manifest defaults, server-flag overrides), the
// ranker it builds (prune -> quantize -> int8 oneDNN), and the accuracy gate.
//
// The gate never loosens; what it refuses, the fallback chain replaces with the next
// form, so that a fresh version is not left unserved by compression:
//   prune+int8 -> int8 -> mixed precision -> none (fp32, which always passes unless it
//   scores a calibration row NaN or infinity: then nothing can be measured and
//   BuildGatedRanker refuses the version)
// starting at the policy's mode. The int8 step first tries other activation ranges
// (Int8Calibrations: the policy's, then percentile 99.9 ranges, which rescue models whose
// heavy-tailed columns stretch the ranges, then max ranges) and still serves pure int8
// if one of them passes. Mixed precision measures each layer's sensitivity (the
// calibration rows scored with only that layer in int8, mean |p - p_fp32|) and keeps the
// most sensitive layer in fp32, then the two most sensitive, ..., until the gate passes.
// The form that serves and why the ones before it were refused go into the ranker's
// RankerChoice and from there into the version's figures. With fallback off (strict),
// the asked form is the only one tried and a refusal refuses the version, as before.
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
  // When the gate refuses the asked form, serve the next form of the fallback chain
  // (above) instead of refusing the version. false: strict.
  bool fallback = true;
};

// Server flags; unset fields keep the manifest's value (or the built-in default).
struct PolicyOverrides {
  std::optional<std::string> mode;
  std::optional<float> unstructured_sparsity;
  std::optional<float> structured_ratio;
  std::optional<float> max_auc_drop;
  std::optional<float> max_logloss_rise;
  std::optional<bool> fallback;
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

// The forms the fallback chain tries for `policy`, in order: {policy.mode} when fallback
// is off; "mixed" stands for the mixed-precision steps.
std::vector<std::string> FallbackChain(const CompressionPolicy& policy);

// "max", "percentile 99.9", "mse", or "<inputs> inputs, <activations> activations" when the
// two differ: how the int8 ranges of `options` are calibrated.
std::string DescribeCalibration(const QuantizeOptions& options);

// The calibrations the int8 step tries, in order: the policy's own (MSE ranges by
// default), then, with fallback on, percentile 99.9 ranges and max ranges for inputs and
// activations alike (each unless the policy's already is).
std::vector<QuantizeOptions> Int8Calibrations(const CompressionPolicy& policy);

// One form the chain tried, and the gate's verdict on it.
struct CompressionAttempt {
  std::string form;         // "int8", "mixed(int8, layer 0 fp32)", ...
  std::string calibration;  // DescribeCalibration of its int8 layers; "" for fp32
  AccuracyReport report;    // against fp32 on the calibration rows
  std::string refused;      // GateFailure; empty when the gate passed it
};

// A layer's sensitivity: the calibration rows scored with only this layer in int8.
struct LayerSensitivity {
  int layer = 0;
  AccuracyReport report;
};

struct GatedRanker {
  // The form that serves, with its RankerChoice attached; with fallback off and the gate
  // refusing, the refused ranker (choice()->gate not OK), so status can show its figures.
  std::unique_ptr<Ranker> ranker;
  std::vector<CompressionAttempt> attempts;   // in order; the last one is `ranker`
  std::vector<LayerSensitivity> sensitivity;  // filled when mixed precision was tried
};

// Builds the policy's form, measures it against fp32 on the calibration rows (the fp32
// scores computed once for every attempt) and walks the fallback chain while the gate
// refuses; a form scoring a row NaN or infinity is refused like one that lost accuracy.
// FailedPrecondition without calibration rows, or when the fp32 ranker itself scores a
// row NaN or infinity (no form can be measured, and fp32 would serve the same
// arithmetic); errors of building or scoring are returned as they are (they are not gate
// refusals).
absl::StatusOr<GatedRanker> BuildGatedRanker(const Mlp& mlp, const CalibrationSet& calibration,
                                            const CompressionPolicy& policy,
                                            const Fp32RankerOptions& buckets = {});

// Scores the calibration rows with the original fp32 MLP and with `served`.
absl::StatusOr<AccuracyReport> MeasureAccuracy(const Mlp& fp32, const Ranker& served,
                                               const CalibrationSet& calibration);

// `rows` synthetic feature rows as one request sends them (for throughput figures):
// standard-normal values, with the request-constant columns equal in every row.
std::vector<float> SyntheticRequestRows(int width, int rows, const std::vector<int>& constant_columns,
                                        uint64_t seed);

// Wires compression into model loading: `options->ranker_factory` runs BuildGatedRanker;
// the returned check fills the version's figures from the ranker's RankerChoice (the form
// that serves, the one asked for, why it fell back, the accuracy against fp32) and
// refuses the version when the gate refused the served form (strict mode only). A ranker
// without a RankerChoice (another factory) is measured and gated here.
std::function<absl::Status(const Model&, v1::ModelFigures*)> InstallCompression(
    const PolicyOverrides& overrides, ModelOptions* options);

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_COMPRESS_H_
