// recserve-compress: what compression does to one model version.
//
//   recserve-compress --bundle=models/default/3 --compression=prune+int8 --sparsity=0.5
//
// Loads the bundle, applies the policy (manifest defaults, flag overrides), and prints a
// per-layer table (shape before/after, sparsity, bytes fp32 -> served), the accuracy of
// the served ranker against fp32 on the calibration rows, and measured throughput per
// batch bucket for fp32 and the served ranker. Exits 3 when the accuracy gate refuses.
#include <chrono>
#include <cstdio>
#include <random>

#include <omp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "compression/compress.h"
#include "compression/prune.h"
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
ABSL_FLAG(double, percentile, 99.9, "Calibration percentile for activation ranges (100 = max)");

namespace recserve {
namespace {

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
  absl::StatusOr<CompressionPolicy> policy = ResolvePolicy(bundle->manifest, o);
  if (!policy.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n", policy.status().ToString().c_str());
    return 2;
  }
  policy->quantize.percentile = absl::GetFlag(FLAGS_percentile);
  if (policy->quantize.percentile >= 100) policy->quantize.method = CalibrationMethod::kMax;
  absl::StatusOr<Mlp> pruned = ApplyPruning(bundle->mlp, bundle->calibration, *policy);
  absl::StatusOr<std::unique_ptr<Ranker>> served = BuildRanker(bundle->mlp, bundle->calibration, *policy);
  absl::StatusOr<std::unique_ptr<Ranker>> fp32 = CreateFp32Ranker(bundle->mlp);
  if (!pruned.ok() || !served.ok() || !fp32.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n",
                 (!pruned.ok() ? pruned.status() : !served.ok() ? served.status() : fp32.status()).ToString().c_str());
    return 1;
  }
  const bool int8 = policy->mode != "none";
  std::printf("policy: %s, sparsity %.2f, structured ratio %.2f, gate: AUC drop <= %.4f, logloss rise <= %.4f\n",
              policy->mode.c_str(), policy->unstructured_sparsity, policy->structured_ratio,
              policy->gate.max_auc_drop(), policy->gate.max_logloss_rise());
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
              static_cast<long long>(bundle->mlp.MacsPerRow()), static_cast<long long>((*served)->macs_per_row()),
              static_cast<long long>((*served)->weight_bytes()));

  absl::StatusOr<AccuracyReport> report = MeasureAccuracy(bundle->mlp, **served, bundle->calibration);
  if (!report.ok()) {
    std::fprintf(stderr, "recserve-compress: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::printf("\naccuracy on %d calibration rows: %s\n", report->rows, report->ToString().c_str());
  const absl::Status gate = CheckGate(*report, policy->gate);
  std::printf("gate: %s\n", gate.ok() ? "PASS" : std::string(gate.message()).c_str());

  const double seconds = absl::GetFlag(FLAGS_seconds_per_bucket);
  if (seconds > 0) {
    std::printf("\n%d OpenMP thread(s) (OMP_NUM_THREADS); oneDNN ISA %s\n", omp_get_max_threads(),
                CpuIsaName().c_str());
    std::printf("%6s %14s %14s %8s %12s\n", "batch", "fp32 rows/s", "served rows/s", "ratio", "served GMAC/s");
    for (int b : {1, 64, 256, 1000}) {
      const double f = RowsPerSecond(**fp32, b, seconds, policy->quantize.constant_columns);
      const double s = RowsPerSecond(**served, b, seconds, policy->quantize.constant_columns);
      std::printf("%6d %14.0f %14.0f %7.2fx %12.1f\n", b, f, s, s / f, s * (*served)->macs_per_row() / 1e9);
    }
  }
  return gate.ok() ? 0 : 3;
}

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("recserve-compress --bundle=DIR [--compression=none|int8|prune+int8] ...");
  absl::ParseCommandLine(argc, argv);
  return recserve::Run();
}
