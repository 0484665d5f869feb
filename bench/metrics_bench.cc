// Google Benchmark of what recording one Recommend costs the request path
// (Metrics::ObserveRequest): an OK, ranked answer of n items (10, 100, 500: --max_n's
// default) on the serving version, from 1 and 2 threads at once (workers contend on
// the same series). And what the n scores would cost recorded the plain way, one
// Histogram::Observe per item (the histogram's lock each time), where Metrics bins them
// first and adds the bins with one ObserveMultiple.
//
//   build/bench/recserve-metrics-bench
//
// docs/benchmarks.md compares this with the commit before per-version series (the
// same file, without the lines that name the version).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <vector>

#include "server/metrics.h"

namespace recserve {
namespace {

RecommendResult RankedAnswer(int n) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> score(0.f, 1.f);
  RecommendResult result;
  for (int i = 0; i < n; ++i) result.items.push_back({static_cast<uint64_t>(i), score(rng), 1, 0});
  std::sort(result.items.begin(), result.items.end(),
            [](const RecommendedItem& a, const RecommendedItem& b) { return a.score > b.score; });
  result.candidates = result.ranked = 4 * n;
  result.candidates_by_source[0] = 4 * n;
  result.seconds = {0.0004, 0.0002, 0.001, 0.0017};
  return result;
}

Metrics& SharedMetrics() {
  static Metrics* const metrics = [] {
    Metrics* m = Metrics::Create("127.0.0.1:0", MetricsHttpOptions(), [] { return 0; })->release();
    m->ObserveRole(1, ServingRole::kServing);
    return m;
  }();
  return *metrics;
}

void BM_ObserveRequest(benchmark::State& state) {
  Metrics& metrics = SharedMetrics();
  const RecommendResult result = RankedAnswer(static_cast<int>(state.range(0)));
  RequestOutcome outcome;
  outcome.code = absl::StatusCode::kOk;
  outcome.seconds = 0.002;
  outcome.result = &result;
  outcome.version = 1;
  outcome.role = ServingRole::kServing;
  for (auto _ : state) metrics.ObserveRequest(outcome);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ObserveRequest)->Arg(10)->Arg(100)->Arg(500)->Threads(1)->Threads(2)->UseRealTime();

prometheus::Histogram::BucketBoundaries ScoreBounds() {
  prometheus::Histogram::BucketBoundaries bounds;
  for (int i = 1; i <= 20; ++i) bounds.push_back(i / 20.0);
  return bounds;
}

void BM_ScoresObservedEach(benchmark::State& state) {
  prometheus::Histogram histogram(ScoreBounds());
  const RecommendResult result = RankedAnswer(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    for (const RecommendedItem& item : result.items) histogram.Observe(item.score);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ScoresObservedEach)->Arg(10)->Arg(500);

}  // namespace
}  // namespace recserve

BENCHMARK_MAIN();
