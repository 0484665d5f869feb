// recserve-compress: what compression does to one model version.
//
//   recserve-compress --bundle=models/default/3 --compression=prune+int8 --sparsity=0.5
//
// Loads the bundle, applies the policy (manifest defaults, flag overrides), and prints a
// per-layer table (shape before/after, sparsity, bytes fp32 -> served), every form the
// load-time fallback chain tried with its accuracy against fp32 on the calibration rows
// and the gate's verdict (with mixed precision, each layer's sensitivity), and measured
// throughput per batch bucket for fp32 and the form that serves. --holdout_share
// calibrates on the older rows only and also reports the served form on the rest.
// A distilled bundle's training report (student vs teacher vs the same-size ranker trained
// without a teacher) is printed as recserve-train measured it; --compare measures other
// bundles of the same feature rows side by side with this one, in this run, under this
// policy (e.g. --compare=<dir>/teacher/1,<dir>/baseline/1 from recserve-train
// --distill_compare_dir).
// Exits 3 when the accuracy gate refuses (with --fallback=false; with fallback on, fp32
// always passes).
#include <chrono>
#include <cstdio>
#include <random>

#include <omp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "compression/compare.h"
#include "compression/compress.h"
#include "compression/prune.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "engine/bundle.h"
#include "engine/onednn_util.h"

ABSL_FLAG(std::string, bundle, "", "Model version directory (models/<name>/<version>)");
ABSL_FLAG(std::string, compression, "", "none | int8 | prune+int8 (default: the manifest's)");
ABSL_FLAG(double, sparsity, -1, "Unstructured sparsity for prune+int8 (-1: the manifest's)");
ABSL_FLAG(double, structured_ratio, -1, "Share of hidden neurons removed for prune+int8 (-1: manifest)");
ABSL_FLAG(double, max_auc_drop, -1, "Gate: largest AUC drop (-1: the manifest's)");
ABSL_FLAG(double, max_logloss_rise, -1, "Gate: largest logloss rise (-1: the manifest's)");
ABSL_FLAG(double, seconds_per_bucket, 0.3, "Time spent measuring each batch bucket (0 = skip)");
ABSL_FLAG(double, percentile, 99.9, "Percentile of --calibration=percentile ranges");
ABSL_FLAG(std::string, calibration, "", "Hidden activation ranges: max | percentile | mse (default: mse)");
ABSL_FLAG(std::string, input_calibration, "", "Layer 0 input column ranges: max | percentile | mse (default: mse)");
ABSL_FLAG(bool, fallback, true,
          "When the gate refuses the asked form, try the next (other int8 ranges, mixed precision, fp32)");
ABSL_FLAG(std::string, fp32_layers, "",
          "Comma-separated layer indices: also measure the mixed-precision split with these layers in "
          "fp32 and the rest int8 (the policy's ranges), as if the chain had chosen it");
ABSL_FLAG(double, holdout_share, 0, "Share of calibration slates (the newest) kept out of calibration, to "
                                    "measure the served form on rows it was not calibrated on");
ABSL_FLAG(std::string, compare, "",
          "Comma-separated bundle version directories whose rankers take the same rows (a distilled student's "
          "teacher and baseline): measured side by side with --bundle on its held-out (else calibration) rows "
          "under this policy: AUC, NDCG@10, served form, MACs, ranking time per candidate");

namespace recserve {
namespace {

// Empty keeps `method`.
bool ParseMethod(const std::string& name, CalibrationMethod* method) {
  if (name.empty()) return true;
  if (name == "max") *method = CalibrationMethod::kMax;
  else if (name == "percentile") *method = CalibrationMethod::kPercentile;
  else if (name == "mse") *method = CalibrationMethod::kMse;
  else return false;
  return true;
}

// Rows [begin, end) of `c`.
CalibrationSet Slice(const CalibrationSet& c, int begin, int end) {
  CalibrationSet out;
  out.width = c.width;
  out.rows = end - begin;
  out.features.assign(c.features.begin() + static_cast<size_t>(begin) * c.width,
                      c.features.begin() + static_cast<size_t>(end) * c.width);
  out.labels.assign(c.labels.begin() + begin, c.labels.begin() + end);
  out.groups.assign(c.groups.begin() + begin, c.groups.begin() + end);
  return out;
}

// Rows of one request (the constant columns shared), as the serving path scores them.
double RowsPerSecond(const Ranker& ranker, int batch, double seconds, const std::vector<int>& constant_columns) {
  std::vector<float> rows = SyntheticRequestRows(ranker.input_dim(), ranker.PaddedRows(batch), constant_columns, 1);
  std::vector<float> out(batch);
  auto scratch = ranker.NewScratch();
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  double elapsed = 0;
  while (elapsed < seconds) {
    ranker.Score(rows.data(), batch, out.data(), scratch.get()).IgnoreError();
    done += batch;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return done / elapsed;
}

int Run() {
  const std::string dir = absl::GetFlag(FLAGS_bundle);
  if (dir.empty()) {
    std::fprintf(stderr, "recserve-compress: --bundle is required\n");
    return 2;
  }
  absl::StatusOr<BundleContents> bundle = ReadBundle(dir);
  if (!bundle.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n", bundle.status().ToString().c_str());
    return 1;
  }
  PolicyOverrides o;
  if (!absl::GetFlag(FLAGS_compression).empty()) o.mode = absl::GetFlag(FLAGS_compression);
  if (absl::GetFlag(FLAGS_sparsity) >= 0) o.unstructured_sparsity = absl::GetFlag(FLAGS_sparsity);
  if (absl::GetFlag(FLAGS_structured_ratio) >= 0) o.structured_ratio = absl::GetFlag(FLAGS_structured_ratio);
  if (absl::GetFlag(FLAGS_max_auc_drop) >= 0) o.max_auc_drop = absl::GetFlag(FLAGS_max_auc_drop);
  if (absl::GetFlag(FLAGS_max_logloss_rise) >= 0) o.max_logloss_rise = absl::GetFlag(FLAGS_max_logloss_rise);
  o.fallback = absl::GetFlag(FLAGS_fallback);
  absl::StatusOr<CompressionPolicy> policy = ResolvePolicy(bundle->manifest, o);
  if (!policy.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n", policy.status().ToString().c_str());
    return 2;
  }
  policy->quantize.percentile = absl::GetFlag(FLAGS_percentile);
  if (!ParseMethod(absl::GetFlag(FLAGS_calibration), &policy->quantize.method) ||
      !ParseMethod(absl::GetFlag(FLAGS_input_calibration), &policy->quantize.input_method)) {
    std::fprintf(stderr, "recserve-compress: --calibration and --input_calibration are max, percentile or mse\n");
    return 2;
  }
  // Calibrate on the older slates, measure also on the newest (groups are contiguous).
  const CalibrationSet& all = bundle->calibration;
  const double holdout = absl::GetFlag(FLAGS_holdout_share);
  int split = all.rows;
  if (holdout > 0 && holdout < 1) {
    split = static_cast<int>(all.rows * (1 - holdout));
    while (split > 0 && split < all.rows && all.groups[split] == all.groups[split - 1]) --split;
  }
  const CalibrationSet calibration = Slice(all, 0, split);
  const CalibrationSet held_out = Slice(all, split, all.rows);
  absl::StatusOr<Mlp> pruned = ApplyPruning(bundle->mlp, calibration, *policy);
  absl::StatusOr<GatedRanker> gated = BuildGatedRanker(bundle->mlp, calibration, *policy);
  absl::StatusOr<std::unique_ptr<Ranker>> fp32 = CreateFp32Ranker(bundle->mlp);
  if (!pruned.ok() || !gated.ok() || !fp32.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n",
                 (!pruned.ok() ? pruned.status() : !gated.ok() ? gated.status() : fp32.status()).ToString().c_str());
    return 1;
  }
  std::unique_ptr<Ranker> served = std::move(gated->ranker);
  RankerChoice choice = *served->choice();
  if (!absl::GetFlag(FLAGS_fp32_layers).empty()) {
    // A split chosen by hand: measured and timed in place of the chain's choice.
    MixedPrecisionMlp mixed;
    mixed.fp32 = bundle->mlp;
    mixed.fp32_layer.assign(bundle->mlp.layers.size(), false);
    for (absl::string_view field : absl::StrSplit(absl::GetFlag(FLAGS_fp32_layers), ',')) {
      int layer = -1;
      if (!absl::SimpleAtoi(field, &layer) || layer < 0 || layer >= static_cast<int>(mixed.fp32_layer.size())) {
        std::fprintf(stderr, "recserve-compress: --fp32_layers: '%s' is not a layer index\n",
                     std::string(field).c_str());
        return 2;
      }
      mixed.fp32_layer[layer] = true;
    }
    absl::StatusOr<QuantizedMlp> q = QuantizeMlp(bundle->mlp, calibration, policy->quantize);
    absl::StatusOr<std::unique_ptr<Ranker>> ranker =
        q.ok() ? (mixed.int8 = *std::move(q), CreateMixedPrecisionRanker(mixed)) : q.status();
    absl::StatusOr<AccuracyReport> report =
        ranker.ok() ? MeasureAccuracy(bundle->mlp, **ranker, calibration) : ranker.status();
    if (!report.ok()) {
      std::fprintf(stderr, "recserve-compress: --fp32_layers: %s\n", report.status().ToString().c_str());
      return 1;
    }
    served = *std::move(ranker);
    choice = RankerChoice();
    choice.form = mixed.Describe();
    choice.gate = CheckGate(*report, policy->gate);
  }
  const bool int8 = policy->mode != "none";
  std::printf("policy: %s, sparsity %.2f, structured ratio %.2f, gate: AUC drop <= %.4f, logloss rise <= %.4f, "
              "fallback %s; int8 ranges: %s\n",
              policy->mode.c_str(), policy->unstructured_sparsity, policy->structured_ratio,
              policy->gate.max_auc_drop(), policy->gate.max_logloss_rise(), policy->fallback ? "on" : "off",
              DescribeCalibration(policy->quantize).c_str());
  std::printf("\n%-6s %-12s %-16s %9s %12s %12s\n", "layer", "shape fp32", "shape served", "sparsity", "fp32 bytes",
              "served bytes");
  // int8: layer 0 multiplies only the quantized columns; the request-constant ones are
  // fp32 weights applied once per request (shown as "+N fp32").
  const int constant = int8 ? static_cast<int>(policy->quantize.constant_columns.size()) : 0;
  for (size_t i = 0; i < bundle->mlp.layers.size(); ++i) {
    const DenseLayer& a = bundle->mlp.layers[i];
    const DenseLayer& b = pruned->layers[i];
    const int64_t zeros = std::count(b.weight.begin(), b.weight.end(), 0.f);
    const int fp32_in = i == 0 ? constant : 0;
    const int64_t served_bytes = int64_t{b.in - fp32_in} * b.out * (int8 ? 1 : 4) + 4 * b.out * (int8 ? 2 : 1) +
                                 4 * int64_t{fp32_in} * b.out;
    const std::string served_shape = fp32_in > 0 ? absl::StrFormat("%dx%d+%d fp32", b.out, b.in - fp32_in, fp32_in)
                                                 : absl::StrFormat("%dx%d", b.out, b.in);
    std::printf("%-6zu %-12s %-16s %8.1f%% %12lld %12lld\n", i, absl::StrFormat("%dx%d", a.out, a.in).c_str(),
                served_shape.c_str(), 100.0 * zeros / b.weight.size(),
                static_cast<long long>(4LL * (a.in * a.out + a.out)), static_cast<long long>(served_bytes));
  }
  std::printf("total: %lld params, %.1f%% zero; MACs/row %lld -> %lld as served; served ranker holds %lld bytes\n",
              static_cast<long long>(bundle->mlp.ParameterCount()), 100 * Sparsity(*pruned),
              static_cast<long long>(bundle->mlp.MacsPerRow()), static_cast<long long>(served->macs_per_row()),
              static_cast<long long>(served->weight_bytes()));

  std::printf("\naccuracy against fp32 on %d calibration rows, per form tried:\n", calibration.rows);
  for (const CompressionAttempt& a : gated->attempts) {
    std::printf("  %s%s: %s\n    gate: %s\n", a.form.c_str(),
                a.calibration.empty() ? "" : absl::StrFormat(" (%s ranges)", a.calibration).c_str(),
                a.report.ToString().c_str(), a.refused.empty() ? "PASS" : a.refused.c_str());
  }
  for (const LayerSensitivity& l : gated->sensitivity) {
    std::printf("  sensitivity, only layer %d in int8: %s\n", l.layer, l.report.ToString().c_str());
  }
  if (!absl::GetFlag(FLAGS_fp32_layers).empty()) {
    std::printf("chain chose %s; measured instead (--fp32_layers):\n", gated->attempts.back().form.c_str());
    absl::StatusOr<AccuracyReport> report = MeasureAccuracy(bundle->mlp, *served, calibration);
    if (report.ok()) std::printf("  %s: %s\n", choice.form.c_str(), report->ToString().c_str());
  }
  std::printf("serves: %s%s\n", choice.form.c_str(),
              choice.fallback_reason.empty() ? "" : absl::StrCat(" (fell back: ", choice.fallback_reason, ")").c_str());
  if (held_out.rows > 0) {
    absl::StatusOr<AccuracyReport> report = MeasureAccuracy(bundle->mlp, *served, held_out);
    if (!report.ok()) {
      std::fprintf(stderr, "recserve-compress: %s\n", report.status().ToString().c_str());
      return 1;
    }
    std::printf("held out, %d rows not calibrated on: %s\n", report->rows, report->ToString().c_str());
  }
  const absl::Status& gate = choice.gate;
  std::printf("gate: %s\n", gate.ok() ? "PASS" : std::string(gate.message()).c_str());

  if (bundle->manifest.training().has_distillation()) {
    std::printf("\nas trained (manifest training report), %s", FormatDistillationReport(bundle->manifest.training().distillation()).c_str());
  }
  if (!absl::GetFlag(FLAGS_compare).empty()) {
    const std::vector<std::string> dirs = absl::StrSplit(absl::GetFlag(FLAGS_compare), ',', absl::SkipEmpty());
    std::vector<BundleContents> others;
    for (const std::string& other : dirs) {
      absl::StatusOr<BundleContents> read = ReadBundle(other);
      if (!read.ok()) {
        std::fprintf(stderr, "recserve-compress: --compare: %s\n", read.status().ToString().c_str());
        return 1;
      }
      others.push_back(*std::move(read));
    }
    std::vector<NamedMlp> rankers = {{dir, &bundle->mlp}};
    for (size_t k = 0; k < dirs.size(); ++k) rankers.push_back({dirs[k], &others[k].mlp});
    const CalibrationSet& rows = held_out.rows > 0 ? held_out : calibration;
    absl::StatusOr<std::vector<v1::RankerFigures>> figures =
        CompareRankers(rankers, calibration, *policy, rows, CompareOptions());
    if (!figures.ok()) {
      std::fprintf(stderr, "recserve-compress: --compare: %s\n", figures.status().ToString().c_str());
      return 1;
    }
    std::printf("\nside by side on %d %s rows of %s (%d OpenMP thread(s), oneDNN ISA %s; ns per candidate in "
                "batches of 256, ratio = served time / %s's):\n%s",
                rows.rows, held_out.rows > 0 ? "held-out" : "calibration", dir.c_str(), omp_get_max_threads(),
                CpuIsaName().c_str(), dir.c_str(), FormatRankerTable(*figures, dir).c_str());
  }
  const double seconds = absl::GetFlag(FLAGS_seconds_per_bucket);
  if (seconds > 0) {
    std::printf("\n%d OpenMP thread(s) (OMP_NUM_THREADS); oneDNN ISA %s\n", omp_get_max_threads(),
                CpuIsaName().c_str());
    std::printf("%6s %14s %14s %8s %12s\n", "batch", "fp32 rows/s", "served rows/s", "ratio", "served GMAC/s");
    for (int b : {1, 64, 256, 1000}) {
      const double f = RowsPerSecond(**fp32, b, seconds, policy->quantize.constant_columns);
      const double s = RowsPerSecond(*served, b, seconds, policy->quantize.constant_columns);
      std::printf("%6d %14.0f %14.0f %7.2fx %12.1f\n", b, f, s, s / f, s * served->macs_per_row() / 1e9);
    }
  }
  return gate.ok() ? 0 : 3;
}

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "recserve-compress --bundle=DIR [--compression=none|int8|prune+int8] [--fallback=false] "
      "[--calibration=max|percentile|mse] [--holdout_share=0.5] [--compare=DIR,DIR] ...");
  absl::ParseCommandLine(argc, argv);
  return recserve::Run();
}
