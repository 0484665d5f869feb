#include "compression/compress.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "compression/prune.h"
#include "engine/features.h"
#include "engine/status_macros.h"

namespace recserve {

absl::StatusOr<CompressionPolicy> ResolvePolicy(const v1::Manifest& manifest,
                                                const PolicyOverrides& o) {
  CompressionPolicy p;
  const v1::CompressionPolicy& m = manifest.compression();
  if (!m.mode().empty()) p.mode = m.mode();
  p.unstructured_sparsity = m.unstructured_sparsity();
  p.structured_ratio = m.structured_ratio();
  p.gate = manifest.gate();
  if (o.mode) p.mode = *o.mode;
  if (o.unstructured_sparsity) p.unstructured_sparsity = *o.unstructured_sparsity;
  if (o.structured_ratio) p.structured_ratio = *o.structured_ratio;
  if (o.max_auc_drop) p.gate.set_max_auc_drop(*o.max_auc_drop);
  if (o.max_logloss_rise) p.gate.set_max_logloss_rise(*o.max_logloss_rise);
  if (p.mode != "none" && p.mode != "int8" && p.mode != "prune+int8") {
    return absl::InvalidArgumentError(
        absl::StrCat("compression mode '", p.mode, "' is not none, int8 or prune+int8"));
  }
  if (!(p.unstructured_sparsity >= 0 && p.unstructured_sparsity < 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("compression sparsity %g is outside [0, 1)", p.unstructured_sparsity));
  }
  if (!(p.structured_ratio >= 0 && p.structured_ratio < 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("compression structured ratio %g is outside [0, 1)", p.structured_ratio));
  }
  if (!(p.gate.max_auc_drop() >= 0) || !(p.gate.max_logloss_rise() >= 0)) {
    return absl::InvalidArgumentError("accuracy gate thresholds must be >= 0");
  }
  p.quantize.constant_columns = RequestConstantColumns(manifest.features());
  return p;
}

absl::StatusOr<Mlp> ApplyPruning(const Mlp& mlp, const CalibrationSet& calibration,
                                 const CompressionPolicy& policy) {
  Mlp out = mlp;
  if (policy.mode != "prune+int8") return out;
  if (policy.structured_ratio > 0) {
    RETURN_IF_ERROR(StructuredPrune(&out, {policy.structured_ratio, policy.structured_multiple}));
  }
  if (policy.unstructured_sparsity > 0) {
    MagnitudePruneOptions options;
    options.sparsity = policy.unstructured_sparsity;
    options.calibration = &calibration;
    RETURN_IF_ERROR(MagnitudePrune(&out, options).status());
  }
  return out;
}

std::vector<float> SyntheticRequestRows(int width, int rows, const std::vector<int>& constant_columns,
                                        uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> out(static_cast<size_t>(width) * rows);
  for (float& v : out) v = normal(rng);
  for (int r = 1; r < rows; ++r) {
    for (int c : constant_columns) out[static_cast<size_t>(r) * width + c] = out[c];
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Ranker>> BuildRanker(const Mlp& mlp, const CalibrationSet& calibration,
                                                   const CompressionPolicy& policy,
                                                   const Fp32RankerOptions& buckets) {
  if (policy.mode == "none") return CreateFp32Ranker(mlp, buckets);
  ASSIGN_OR_RETURN(Mlp pruned, ApplyPruning(mlp, calibration, policy));
  ASSIGN_OR_RETURN(QuantizedMlp q, QuantizeMlp(pruned, calibration, policy.quantize));
  return CreateInt8Ranker(q, buckets);
}

absl::StatusOr<AccuracyReport> MeasureAccuracy(const Mlp& fp32, const Ranker& served,
                                               const CalibrationSet& cal) {
  if (cal.rows == 0) return absl::FailedPreconditionError("no calibration rows to measure accuracy on");
  ASSIGN_OR_RETURN(std::unique_ptr<Ranker> reference, CreateFp32Ranker(fp32));
  ASSIGN_OR_RETURN(std::vector<float> want, ScoreAll(*reference, cal.features, cal.rows));
  ASSIGN_OR_RETURN(std::vector<float> got, ScoreAll(served, cal.features, cal.rows));
  return CompareScores(want, got, cal.labels, cal.groups);
}

std::function<absl::Status(const Model&, v1::ModelFigures*)> InstallCompression(
    const PolicyOverrides& overrides, ModelOptions* options) {
  options->ranker_factory = [overrides](const v1::Manifest& manifest, const Mlp& mlp,
                                        const CalibrationSet& calibration)
      -> absl::StatusOr<std::unique_ptr<Ranker>> {
    ASSIGN_OR_RETURN(CompressionPolicy policy, ResolvePolicy(manifest, overrides));
    return BuildRanker(mlp, calibration, policy);
  };
  return [overrides](const Model& model, v1::ModelFigures* figures) -> absl::Status {
    ASSIGN_OR_RETURN(CompressionPolicy policy, ResolvePolicy(model.manifest(), overrides));
    figures->set_compression(policy.mode);
    figures->set_sparsity(model.ranker().weight_sparsity());
    ASSIGN_OR_RETURN(AccuracyReport report,
                     MeasureAccuracy(model.fp32_mlp(), model.ranker(), model.calibration()));
    figures->set_fp32_auc(report.fp32_auc);
    figures->set_served_auc(report.served_auc);
    figures->set_auc_delta(report.auc_delta);
    figures->set_logloss_delta(report.logloss_delta);
    return CheckGate(report, policy.gate);
  };
}

}  // namespace recserve
