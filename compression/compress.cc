#include "compression/compress.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
  if (o.fallback) p.fallback = *o.fallback;
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

std::string DescribeCalibration(const QuantizeOptions& o) {
  auto name = [&o](CalibrationMethod m) -> std::string {
    switch (m) {
      case CalibrationMethod::kMax: return "max";
      case CalibrationMethod::kPercentile: return absl::StrFormat("percentile %g", o.percentile);
      case CalibrationMethod::kMse: return "mse";
    }
    return "?";
  };
  std::string ranges = o.input_method == o.method
                           ? name(o.method)
                           : absl::StrCat(name(o.input_method), " inputs, ", name(o.method), " activations");
  if (o.input_margin > 0) absl::StrAppendFormat(&ranges, ", input margin %g", o.input_margin);
  return ranges;
}

std::vector<QuantizeOptions> Int8Calibrations(const CompressionPolicy& policy) {
  std::vector<QuantizeOptions> out = {policy.quantize};
  if (!policy.fallback) return out;
  for (CalibrationMethod method : {CalibrationMethod::kPercentile, CalibrationMethod::kMax}) {
    QuantizeOptions alternative = policy.quantize;
    alternative.method = alternative.input_method = method;
    alternative.percentile = 99.9;
    const std::string name = DescribeCalibration(alternative);
    if (std::none_of(out.begin(), out.end(),
                     [&name](const QuantizeOptions& o) { return DescribeCalibration(o) == name; })) {
      out.push_back(alternative);
    }
  }
  return out;
}

std::vector<std::string> FallbackChain(const CompressionPolicy& policy) {
  if (!policy.fallback) return {policy.mode};
  if (policy.mode == "none") return {"none"};
  if (policy.mode == "int8") return {"int8", "mixed", "none"};
  return {policy.mode, "int8", "mixed", "none"};
}

absl::StatusOr<GatedRanker> BuildGatedRanker(const Mlp& mlp, const CalibrationSet& cal,
                                            const CompressionPolicy& policy, const Fp32RankerOptions& buckets) {
  if (cal.rows == 0) return absl::FailedPreconditionError("no calibration rows to measure accuracy on");
  // The reference scores, once; the fp32 ranker is built on the serving buckets so that it
  // can serve as the last resort.
  ASSIGN_OR_RETURN(std::unique_ptr<Ranker> fp32, CreateFp32Ranker(mlp, buckets));
  ASSIGN_OR_RETURN(const std::vector<float> want, ScoreAll(*fp32, cal.features, cal.rows));
  // The reference itself overflows: nothing can be measured against it, and fp32 would
  // serve the same arithmetic. The version is refused rather than falling back.
  auto not_finite = [](float p) { return !std::isfinite(p); };
  if (auto first = std::find_if(want.begin(), want.end(), not_finite); first != want.end()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "accuracy gate: the fp32 ranker scores %d of %d calibration rows NaN or infinity (row %d: %g); its "
        "arithmetic overflows on this version's values",
        std::count_if(first, want.end(), not_finite), cal.rows, first - want.begin(), *first));
  }
  auto measure = [&](const Ranker& ranker) -> absl::StatusOr<AccuracyReport> {
    ASSIGN_OR_RETURN(std::vector<float> got, ScoreAll(ranker, cal.features, cal.rows));
    return CompareScores(want, got, cal.labels, cal.groups);
  };

  GatedRanker out;
  std::vector<std::string> refusals;
  // Records an attempt; true when it ends the chain (the gate passed, or fallback is off),
  // with `ranker` then the one that serves.
  // `calibration`: of the int8 layers ("" for fp32); named in the reason when it is not
  // the policy's own.
  auto settle = [&](std::string form, std::string calibration, std::unique_ptr<Ranker> ranker,
                    const AccuracyReport& report) {
    std::string refused = GateFailure(report, policy.gate);
    out.attempts.push_back({form, calibration, report, refused});
    if (!refused.empty() && policy.fallback && form != "none") {
      const bool own = calibration.empty() || calibration == DescribeCalibration(policy.quantize);
      refusals.push_back(absl::StrCat(form, own ? "" : absl::StrCat(" (", calibration, " ranges)"), ": ", refused));
      return false;
    }
    RankerChoice choice;
    choice.form = std::move(form);
    choice.calibration = std::move(calibration);
    choice.requested = policy.mode;
    choice.fallback_reason = absl::StrJoin(refusals, "; ");
    choice.gate = CheckGate(report, policy.gate);
    choice.fp32_auc = report.fp32_auc;
    choice.served_auc = report.served_auc;
    choice.auc_delta = report.auc_delta;
    choice.logloss_delta = report.logloss_delta;
    ranker->set_choice(std::move(choice));
    out.ranker = std::move(ranker);
    return true;
  };

  // The unpruned MLP quantized with the policy's own ranges: mixed precision starts from
  // it (the other ranges are retries for int8 as a whole; on the layers that stay int8 the
  // policy's ranges are the better ones).
  std::optional<QuantizedMlp> quantized;
  for (const std::string& form : FallbackChain(policy)) {
    if (form == "none") {
      // fp32 against itself: no loss, and the gate's thresholds are >= 0.
      if (settle(form, "", std::move(fp32), CompareScores(want, want, cal.labels, cal.groups))) return out;
    } else if (form == "prune+int8") {
      ASSIGN_OR_RETURN(std::unique_ptr<Ranker> ranker, BuildRanker(mlp, cal, policy, buckets));
      ASSIGN_OR_RETURN(AccuracyReport report, measure(*ranker));
      if (settle(form, DescribeCalibration(policy.quantize), std::move(ranker), report)) return out;
    } else if (form == "int8") {
      for (const QuantizeOptions& options : Int8Calibrations(policy)) {
        ASSIGN_OR_RETURN(QuantizedMlp q, QuantizeMlp(mlp, cal, options));
        ASSIGN_OR_RETURN(std::unique_ptr<Ranker> ranker, CreateInt8Ranker(q, buckets));
        ASSIGN_OR_RETURN(AccuracyReport report, measure(*ranker));
        if (!quantized) quantized = std::move(q);
        if (settle(form, DescribeCalibration(options), std::move(ranker), report)) return out;
      }
    } else if (form == "mixed") {
      const int layers = static_cast<int>(mlp.layers.size());
      if (layers < 2) continue;  // one layer: mixed would be all fp32
      if (!quantized) {
        ASSIGN_OR_RETURN(quantized, QuantizeMlp(mlp, cal, policy.quantize));
      }
      const std::string calibration = DescribeCalibration(policy.quantize);
      MixedPrecisionMlp mixed{*quantized, mlp, std::vector<bool>(layers, true)};
      // Sensitivity, on the largest bucket only (these rankers never serve).
      const Fp32RankerOptions one_bucket{{buckets.buckets.back()}};
      for (int i = 0; i < layers; ++i) {
        mixed.fp32_layer.assign(layers, true);
        mixed.fp32_layer[i] = false;
        ASSIGN_OR_RETURN(std::unique_ptr<Ranker> ranker, CreateMixedPrecisionRanker(mixed, one_bucket));
        ASSIGN_OR_RETURN(AccuracyReport report, measure(*ranker));
        out.sensitivity.push_back({i, report});
      }
      std::vector<LayerSensitivity> worst_first = out.sensitivity;
      std::stable_sort(worst_first.begin(), worst_first.end(), [](const LayerSensitivity& a, const LayerSensitivity& b) {
        return a.report.mean_abs_diff > b.report.mean_abs_diff;
      });
      // Keep the k most sensitive layers in fp32, k = 1 .. layers - 1 (all of them is "none").
      mixed.fp32_layer.assign(layers, false);
      for (int k = 0; k + 1 < layers; ++k) {
        mixed.fp32_layer[worst_first[k].layer] = true;
        ASSIGN_OR_RETURN(std::unique_ptr<Ranker> ranker, CreateMixedPrecisionRanker(mixed, buckets));
        ASSIGN_OR_RETURN(AccuracyReport report, measure(*ranker));
        if (settle(mixed.Describe(), calibration, std::move(ranker), report)) return out;
      }
    }
  }
  return absl::InternalError("compression: the fallback chain ended without a ranker");
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
    ASSIGN_OR_RETURN(GatedRanker gated, BuildGatedRanker(mlp, calibration, policy));
    return std::move(gated.ranker);
  };
  return [overrides](const Model& model, v1::ModelFigures* figures) -> absl::Status {
    ASSIGN_OR_RETURN(CompressionPolicy policy, ResolvePolicy(model.manifest(), overrides));
    figures->set_sparsity(model.ranker().weight_sparsity());
    figures->set_compression_requested(policy.mode);
    if (const RankerChoice* choice = model.ranker().choice()) {
      figures->set_compression(choice->form);
      figures->set_compression_fallback_reason(choice->fallback_reason);
      figures->set_int8_calibration(choice->calibration);
      figures->set_fp32_auc(choice->fp32_auc);
      figures->set_served_auc(choice->served_auc);
      figures->set_auc_delta(choice->auc_delta);
      figures->set_logloss_delta(choice->logloss_delta);
      return choice->gate;
    }
    figures->set_compression(policy.mode);
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
