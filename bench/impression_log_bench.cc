// What one impression record costs: the request thread's part (Offer: serialize the
// record, queue it) and the whole process's CPU per record written (the writer's write()
// included), for a typical answer (50 items, 50 events) and a long one (500 items, 200
// events), side by side with an Offer that samples the record out (share 1e-6: the cost
// every unlogged call pays) and with serializing the response alone (what gRPC does for
// every answer).
//   build/bench/recserve-impression-bench [--benchmark_min_time=2]
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/impression_log.h"

namespace recserve {
namespace {

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Call {
  v1::RecommendRequest request;
  v1::RecommendResponse response;
};

Call MakeCall(int items, int events) {
  Call call;
  v1::RecommendRequest& request = call.request;
  request.set_user_id("user-123456");
  request.set_n(items);
  for (int i = 0; i < events; ++i) {
    v1::Event* e = request.add_events();
    e->set_item_id(1000000 + 7 * i);
    e->set_type(v1::CLICK);
    e->set_timestamp_ms(1700000000000 + 60000 * i);
  }
  v1::RecommendResponse& response = call.response;
  response.set_request_id("18c2f5a0b1-2f");
  response.set_model_name("default");
  response.set_model_version(12);
  response.set_model_role(v1::ROLE_SERVING);
  response.set_candidates(800);
  for (int i = 0; i < items; ++i) {
    v1::RecommendedItem* item = response.add_items();
    item->set_item_id(2000000 + 13 * i);
    item->set_item(absl::StrCat(2000000 + 13 * i));
    item->set_score(0.9f - 0.001f * i);
    item->set_sources(3);
    item->set_category(i % 40);
  }
  return call;
}

// The baseline: serializing the response, which gRPC does for every answer anyway.
void SerializeResponse(benchmark::State& state) {
  const Call call = MakeCall(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  std::string bytes;
  for (auto _ : state) {
    bytes.clear();
    call.response.AppendToString(&bytes);
    benchmark::DoNotOptimize(bytes.data());
  }
}
BENCHMARK(SerializeResponse)->Args({50, 50})->Args({500, 200});

void Offer(benchmark::State& state) {
  const Call call = MakeCall(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  const v1::RecommendRequest& request = call.request;
  const v1::RecommendResponse& response = call.response;
  const double share = state.range(2) == 0 ? 1e-6 : 1.0;
  const std::string dir = absl::StrCat("/tmp/recserve_impression_bench_", ::getpid());
  std::filesystem::remove_all(dir);
  ImpressionLogOptions options;
  options.dir = dir;
  options.share = share;
  options.queue_records = 1 << 20;
  options.flush_interval = absl::Milliseconds(state.range(3));
  options.max_total_bytes = int64_t{4} << 30;
  auto log = ImpressionLog::Create(options);
  if (!log.ok()) {
    state.SkipWithError(log.status().ToString().c_str());
    return;
  }
  const double cpu0 = ProcessCpuSeconds();
  int64_t offered = 0;
  for (auto _ : state) {
    (*log)->Offer(request, response);
    ++offered;
  }
  (*log)->Stop();  // the writer finishes the queue: its CPU is in the process figure
  const double cpu = ProcessCpuSeconds() - cpu0;
  const ImpressionLog::Counts c = (*log)->counts();
  state.counters["written"] = static_cast<double>(c.written);
  state.counters["bytes/record"] = c.written ? static_cast<double>(c.bytes_written) / c.written : 0;
  state.counters["process_cpu_us/offer"] = 1e6 * cpu / static_cast<double>(offered);
  std::filesystem::remove_all(dir);
}
// {items, events, logged (1) or sampled out (0), flush interval ms}
BENCHMARK(Offer)
    ->Args({50, 50, 1, 100})
    ->Args({50, 50, 1, 1})
    ->Args({50, 50, 0, 100})
    ->Args({500, 200, 1, 100})
    ->Args({500, 200, 1, 1})
    ->UseRealTime();

}  // namespace
}  // namespace recserve

BENCHMARK_MAIN();
