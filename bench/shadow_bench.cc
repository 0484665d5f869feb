// recserve-shadow-bench: does a shadow version add latency to the served answers? The
// same open-loop load (Poisson arrivals at --rate) runs on the server's request path
// without gRPC (WorkerPool, the engine pipeline with per-worker scratch, the response
// built and serialized, ShadowScorer::Offer as RecommenderService::Handle calls it) with
// the shadow off (twice: the second shows the noise), at share 0.1 and at share 1.0 as the
// server runs it (a job starts only when no request is in flight, and the shadow thread
// takes at most --shadow_cpu of a core) and at share 1.0 without either, arms interleaved round by round in one
// run; per arm: answer latency from arrival (queueing included) p50/p99 and the ratio
// to shadow off, and the shadow's scored/dropped counts.
//
//   recserve-shadow-bench --bundle=/work/bench/models-small/1 --rate=0 --seconds=5 --rounds=4
//
// The shadow is the same bundle with its ranker's weights shuffled (same recall, other
// scores: a full pipeline's work). --rate=0 measures the closed-loop capacity first and
// runs at half of it.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/bundle.h"
#include "engine/onednn_util.h"
#include "engine/pipeline.h"
#include "server/shadow_scorer.h"
#include "server/sync.h"
#include "server/worker_pool.h"

ABSL_FLAG(std::string, bundle, "", "Model version directory (the serving version)");
ABSL_FLAG(double, rate, 0, "Requests per second; 0: half the measured closed-loop capacity");
ABSL_FLAG(int, seconds, 5, "Seconds per arm per round");
ABSL_FLAG(int, rounds, 4, "Rounds (each runs every arm once, in turn)");
ABSL_FLAG(double, shadow_cpu, 0.1, "The shadow thread's most of one core (as recserve --shadow_cpu), gated arms");
ABSL_FLAG(int, workers, 2, "Worker threads (the server's default is one per core)");
ABSL_FLAG(int, n, 20, "Items per answer");
ABSL_FLAG(int, shadow_queue, 256, "The shadow's queue size (--shadow_queue)");

namespace recserve {
namespace {

constexpr int kServingVersion = 1;
constexpr int kShadowVersion = 2;

// A fixed pool of requests: 5-20 events on items drawn by popularity rank (Zipf-like).
struct Request {
  std::vector<QueryEvent> events;
  std::string id;
};

std::vector<Request> MakeRequests(const Model& model, int count) {
  std::mt19937_64 rng(7);
  const std::vector<int32_t>& popular = model.catalog().by_popularity();
  std::uniform_int_distribution<int> length(5, 20);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<Request> requests(count);
  for (int r = 0; r < count; ++r) {
    const int events = length(rng);
    for (int e = 0; e < events; ++e) {
      const size_t rank = std::min(popular.size() - 1, static_cast<size_t>(std::pow(popular.size(), u(rng))));
      requests[r].events.push_back(
          {model.catalog().id(popular[rank]), e % 7 == 6 ? EventType::kPurchase : EventType::kClick,
           1700000000000 + e});
    }
    requests[r].id = absl::StrCat("bench-", r);
  }
  return requests;
}

struct WorkerState {
  PipelineScratch scratch;
  RecommendResult result;
  v1::RecommendResponse response;
  std::string bytes;
};

// One request as the service runs it: pipeline, response serialized, offered to the
// shadow when `scorer` is set.
void Serve(const ServingSet& set, const Request& request, ShadowScorer* scorer) {
  thread_local WorkerState w;
  const Model& model = *set.Find(ServingRole::kServing)->model;
  RecommendQuery query;
  query.events = request.events;
  query.n = absl::GetFlag(FLAGS_n);
  if (!Recommend(model, query, &w.scratch, &w.result).ok()) std::abort();
  w.response.Clear();
  for (const RecommendedItem& item : w.result.items) {
    v1::RecommendedItem* out = w.response.add_items();
    out->set_item_id(item.item_id);
    out->set_score(item.score);
    out->set_sources(item.sources);
    out->set_category(item.category);
  }
  w.response.set_model_version(model.version());
  w.response.set_request_id(request.id);
  if (scorer) scorer->Offer(set, request.id, query, model.version(), w.result);
  w.response.SerializeToString(&w.bytes);
}

// Closed loop: each worker serves back to back for `seconds`; requests per second.
double Capacity(const ServingSet& set, const std::vector<Request>& requests, int workers, double seconds) {
  std::atomic<int64_t> done{0};
  const absl::Time end = absl::Now() + absl::Seconds(seconds);
  {
    WorkerPool pool(workers);
    for (int w = 0; w < workers; ++w) {
      pool.Submit([&, w] {
        for (int64_t i = w; absl::Now() < end; i += workers) {
          Serve(set, requests[static_cast<size_t>(i) % requests.size()], nullptr);
          done.fetch_add(1);
        }
      });
    }
  }
  return static_cast<double>(done.load()) / seconds;
}

struct Arm {
  const char* name = "";
  double share = -1;  // < 0: no shadow
  bool idle_gated = true;  // the shadow starts jobs only when no request is in flight, as in the server
  std::vector<double> latencies;
  int64_t sampled = 0, scored = 0, dropped = 0;
};

// Open loop at `rate` for `seconds`: arrivals on their own schedule (Poisson), each
// latency from its arrival to its answer, so a slower path shows as queueing too.
void RunArm(const ServingSet& base, const std::vector<Request>& requests, double rate, int seconds, int workers,
            Arm* arm) {
  ServingSet set = base;
  std::atomic<int> inflight{0};  // arrived and not yet answered, as RecommenderService counts them
  std::unique_ptr<ShadowScorer> scorer;
  if (arm->share < 0) {
    set.members.pop_back();  // no shadow member
  } else {
    set.members.back().share = arm->share;
    ShadowScorerOptions options;
    options.queue_size = absl::GetFlag(FLAGS_shadow_queue);
    if (arm->idle_gated) {
      options.requests_in_flight = [&inflight] { return inflight.load(std::memory_order_relaxed); };
      options.max_cpu_share = absl::GetFlag(FLAGS_shadow_cpu);
    }
    scorer = *ShadowScorer::Create(options);
  }
  std::mt19937_64 rng(11);
  std::exponential_distribution<double> gap(rate);
  const int64_t count = static_cast<int64_t>(rate * seconds);
  std::vector<double> latencies(static_cast<size_t>(count));
  {
    WorkerPool pool(workers);
    absl::Time next = absl::Now();
    for (int64_t i = 0; i < count; ++i) {
      next += absl::Seconds(gap(rng));
      while (absl::Now() < next) absl::SleepFor(std::min(absl::Microseconds(200), next - absl::Now()));
      const absl::Time arrival = next;
      const Request& request = requests[static_cast<size_t>(i) % requests.size()];
      inflight.fetch_add(1, std::memory_order_relaxed);
      pool.Submit([&set, &request, &latencies, &inflight, i, arrival, s = scorer.get()] {
        Serve(set, request, s);
        inflight.fetch_sub(1, std::memory_order_relaxed);
        latencies[static_cast<size_t>(i)] = absl::ToDoubleSeconds(absl::Now() - arrival);
      });
    }
  }  // the pool drains and joins
  arm->latencies.insert(arm->latencies.end(), latencies.begin(), latencies.end());
  if (scorer) {
    scorer->Stop();  // what is still queued counts as dropped
    if (std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion)) {
      arm->sampled += c->sampled;
      arm->scored += c->scored;
      arm->dropped += c->dropped;
    }
  }
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

int Main() {
  absl::StatusOr<BundleContents> bundle = ReadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) {
    std::fprintf(stderr, "%s\n", bundle.status().ToString().c_str());
    return 1;
  }
  BundleContents shadow_bundle = *bundle;
  std::mt19937_64 rng(3);
  for (DenseLayer& layer : shadow_bundle.mlp.layers) std::shuffle(layer.weight.begin(), layer.weight.end(), rng);
  absl::StatusOr<std::shared_ptr<const Model>> serving = Model::Create(*std::move(bundle), kServingVersion);
  absl::StatusOr<std::shared_ptr<const Model>> shadow = Model::Create(std::move(shadow_bundle), kShadowVersion);
  if (!serving.ok() || !shadow.ok()) {
    std::fprintf(stderr, "%s\n", (serving.ok() ? shadow.status() : serving.status()).ToString().c_str());
    return 1;
  }
  ServingSet set;
  set.members.resize(2);
  set.members[0].version = kServingVersion;
  set.members[0].role = ServingRole::kServing;
  set.members[0].model = *serving;
  set.members[1].version = kShadowVersion;
  set.members[1].role = ServingRole::kShadow;
  set.members[1].model = *shadow;
  const std::vector<Request> requests = MakeRequests(**serving, 4096);
  const int workers = absl::GetFlag(FLAGS_workers), seconds = absl::GetFlag(FLAGS_seconds);

  const double capacity = Capacity(set, requests, workers, 3);
  const double rate = absl::GetFlag(FLAGS_rate) > 0 ? absl::GetFlag(FLAGS_rate) : capacity / 2;
  std::printf("%d items, n = %d, %d workers, oneDNN ISA %s; closed-loop capacity %.0f/s (shadow off); "
              "open loop at %.0f/s, %d s per arm x %d rounds\n",
              (*serving)->catalog().size(), absl::GetFlag(FLAGS_n), workers, CpuIsaName().c_str(), capacity, rate,
              seconds, absl::GetFlag(FLAGS_rounds));
  std::vector<Arm> arms(5);
  arms[0].name = "shadow off";
  arms[1].name = "shadow off, again (noise)";
  arms[2].name = "shadow share 0.1";
  arms[2].share = 0.1;
  arms[3].name = "shadow share 1.0";
  arms[3].share = 1.0;
  arms[4].name = "share 1.0, no gate, no CPU cap";
  arms[4].share = 1.0;
  arms[4].idle_gated = false;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (Arm& arm : arms) RunArm(set, requests, rate, seconds, workers, &arm);
  }
  const double off_p50 = Percentile(arms[0].latencies, 0.5), off_p99 = Percentile(arms[0].latencies, 0.99);
  std::printf("| arm | requests | p50 ms | p99 ms | p50 ratio | p99 ratio | sampled | scored | dropped |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const Arm& arm : arms) {
    const double p50 = Percentile(arm.latencies, 0.5), p99 = Percentile(arm.latencies, 0.99);
    std::printf("| %s | %zu | %.3f | %.3f | %.2fx | %.2fx | %lld | %lld | %lld |\n", arm.name, arm.latencies.size(),
                p50 * 1e3, p99 * 1e3, p50 / off_p50, p99 / off_p99, static_cast<long long>(arm.sampled),
                static_cast<long long>(arm.scored), static_cast<long long>(arm.dropped));
  }
  return 0;
}

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return recserve::Main();
}
