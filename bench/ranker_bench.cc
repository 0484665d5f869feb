// Google Benchmark kernels for the ranking MLP: fp32 vs int8 vs structured-pruned int8
// (30% of hidden neurons removed) at batch 1, 64, 256, 1000, one thread. The MLP has the
// default feature layout's 156 inputs, 54 of them request-constant (user and context
// blocks); each batch is one request's rows, so int8 takes those 54 in fp32 once per
// batch and quantizes the other 102 ("int8"). "int8_allq" quantizes all 156 (the form
// before that change), for comparison. Reports rows/s, GMAC/s and two fractions:
//   VNNI% = GMAC/s / (2 FMA ports x 64 int8 MAC per cycle x 2.8 GHz = 358.4 GMAC/s per
//           core), the Ice Lake figure of shared/design/targets.md;
//   ISA%  = GMAC/s / (int8 MACs per cycle of the ISA oneDNN runs here x the clock):
//           1024 with AMX (TDPBUSD), 128 with AVX-512 VNNI; the context lines name it.
// The clock is 2.8 GHz unless RECSERVE_BENCH_GHZ says otherwise. On an AMX machine,
// ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI runs the same kernels on VNNI for comparison.
//
//   OMP_NUM_THREADS=1 build/bench/recserve-ranker-bench
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <random>

#include "absl/strings/str_format.h"
#include "compression/compress.h"
#include "compression/prune.h"
#include "engine/features.h"
#include "engine/onednn_util.h"
#include "engine/test_util.h"

namespace recserve {
namespace {

const std::vector<int> kSizes = {156, 256, 128, 64, 1};

double BenchGhz() {
  const char* ghz = std::getenv("RECSERVE_BENCH_GHZ");
  return ghz ? std::atof(ghz) : 2.8;
}
double VnniLimitGmacs() { return 2 * 64 * BenchGhz(); }
double IsaLimitGmacs() { return Int8MacsPerCycle() * BenchGhz(); }

CalibrationSet RandomRows(int rows, int width) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal;
  CalibrationSet c;
  c.rows = rows;
  c.width = width;
  for (int i = 0; i < rows * width; ++i) c.features.push_back(normal(rng));
  c.labels.assign(rows, 0.f);
  c.groups.assign(rows, 0);
  return c;
}

// The default layout's request-constant columns (embedding dim 32, 16 dense features).
const std::vector<int>& ConstantColumns() {
  static const std::vector<int> columns = RequestConstantColumns(DefaultFeatureSpec(32, 16));
  return columns;
}

std::unique_ptr<Ranker> Build(const std::string& kind) {
  const Mlp mlp = testing::RandomMlp(kSizes, 3);
  const CalibrationSet cal = RandomRows(4000, kSizes[0]);
  CompressionPolicy policy;
  policy.mode = kind == "fp32" ? "none" : kind == "int8_pruned30" ? "prune+int8" : "int8";
  policy.structured_ratio = kind == "int8_pruned30" ? 0.3f : 0.f;
  if (kind != "int8_allq") policy.quantize.constant_columns = ConstantColumns();
  return *BuildRanker(mlp, cal, policy);
}

void BM_Ranker(benchmark::State& state, const std::string& kind) {
  static std::map<std::string, std::unique_ptr<Ranker>>* rankers = new std::map<std::string, std::unique_ptr<Ranker>>();
  auto& ranker = (*rankers)[kind];
  if (!ranker) ranker = Build(kind);
  const int batch = static_cast<int>(state.range(0));
  std::vector<float> rows = SyntheticRequestRows(kSizes[0], ranker->PaddedRows(batch), ConstantColumns(), 2);
  std::vector<float> out(batch);
  auto scratch = ranker->NewScratch();
  for (auto _ : state) {
    if (!ranker->Score(rows.data(), batch, out.data(), scratch.get()).ok()) state.SkipWithError("score failed");
    benchmark::DoNotOptimize(out.data());
  }
  const double rows_done = static_cast<double>(state.iterations()) * batch;
  state.counters["rows/s"] = benchmark::Counter(rows_done, benchmark::Counter::kIsRate);
  state.counters["GMAC/s"] = benchmark::Counter(rows_done * ranker->macs_per_row() / 1e9, benchmark::Counter::kIsRate);
  state.counters["VNNI%"] = benchmark::Counter(rows_done * ranker->macs_per_row() / 1e9 / VnniLimitGmacs() * 100,
                                               benchmark::Counter::kIsRate);
  if (IsaLimitGmacs() > 0) {
    state.counters["ISA%"] = benchmark::Counter(rows_done * ranker->macs_per_row() / 1e9 / IsaLimitGmacs() * 100,
                                                benchmark::Counter::kIsRate);
  }
}

BENCHMARK_CAPTURE(BM_Ranker, fp32, std::string("fp32"))->Arg(1)->Arg(64)->Arg(256)->Arg(1000);
BENCHMARK_CAPTURE(BM_Ranker, int8, std::string("int8"))->Arg(1)->Arg(64)->Arg(256)->Arg(1000);
BENCHMARK_CAPTURE(BM_Ranker, int8_allq, std::string("int8_allq"))->Arg(1)->Arg(64)->Arg(256)->Arg(1000);
BENCHMARK_CAPTURE(BM_Ranker, int8_pruned30, std::string("int8_pruned30"))->Arg(1)->Arg(64)->Arg(256)->Arg(1000);

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("onednn_isa", recserve::CpuIsaName());
  benchmark::AddCustomContext("int8_limit_gmacs_per_core",
                              absl::StrFormat("%.1f (%d MAC/cycle x %.2f GHz)", recserve::IsaLimitGmacs(),
                                              recserve::Int8MacsPerCycle(), recserve::BenchGhz()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
