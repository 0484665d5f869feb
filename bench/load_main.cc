// recserve-load: open-loop load generator for recserve.
//
//   recserve-load --address=127.0.0.1:8500 --world=out/world-small --rate=500 --seconds=20
//   recserve-load ... --sweep --p99_bound_ms=5           # highest rate whose p99 stays under
//   recserve-load ... --reload_from=models/x/1 --reload_dir=models/x --reload_every=1s
//
// Requests leave on a Poisson schedule at --rate, independent of responses, and latency
// is measured from each request's *intended* send time, so a stalled server shows up
// in the tail instead of slowing the sender (no coordinated omission). Requests carry
// real users' recent events from the world's test period, so recall and ranking do real
// work. With --server_pid, the server's CPU time (utime + stime from /proc) per request
// and its peak resident memory are reported. Every request asks for its stage timings,
// and the mean time per engine stage (recall, features, rank) is printed under each run.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "train/world.h"

ABSL_FLAG(std::string, address, "127.0.0.1:8500", "recserve address");
ABSL_FLAG(std::string, world, "", "World directory whose test-period users make the requests");
ABSL_FLAG(double, rate, 200, "Target requests per second (Poisson arrivals)");
ABSL_FLAG(double, seconds, 10, "Duration of one run (or of each sweep step)");
ABSL_FLAG(int, channels, 4, "gRPC channels (connections) to spread requests over");
ABSL_FLAG(int, n, 50, "Items requested per call");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(5),
          "Deadline of each call; shorter than the server's pipeline, answers degrade (counted)");
ABSL_FLAG(int, max_events, 50, "Newest events per request");
ABSL_FLAG(bool, sweep, false, "Find the highest rate whose p99 stays under --p99_bound_ms");
ABSL_FLAG(double, p99_bound_ms, 5, "Sweep: p99 bound in milliseconds");
ABSL_FLAG(int, server_pid, 0, "recserve's pid, to report its CPU per request and peak RSS");
ABSL_FLAG(std::string, reload_from, "", "Version directory to publish repeatedly during the run");
ABSL_FLAG(std::string, reload_dir, "", "Model base path to publish new versions into");
ABSL_FLAG(absl::Duration, reload_every, absl::Seconds(1), "How often to publish a version");
ABSL_FLAG(int64_t, reload_first_version, 1000, "Version number of the first published copy");

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  double achieved_rate = 0;
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> errors;
  int64_t sent = 0;
  double stage_ms[4] = {};  // server-side recall, features, rank, total, summed over ok calls
  int64_t candidates = 0;   // candidates recall proposed, summed over ok calls
  std::map<std::string, int64_t> degraded;  // ok calls by RecommendResponse.degraded, when not NONE
  double cpu_seconds = 0;
  int64_t peak_rss = 0;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

double ProcessCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

int64_t ResidentBytes(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string key;
  int64_t kb = 0;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

std::vector<recserve::v1::RecommendRequest> BuildRequests(const recserve::World& world, int n,
                                                          int max_events) {
  // One request per user with test events: that user's events up to their first test
  // click, newest max_events, re-dated to end now.
  std::map<uint64_t, std::vector<const recserve::LoggedEvent*>> by_user;
  for (const auto* events : {&world.train_events, &world.test_events}) {
    for (const recserve::LoggedEvent& e : *events) by_user[e.user_id].push_back(&e);
  }
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<recserve::v1::RecommendRequest> out;
  for (auto& [user, events] : by_user) {
    if (events.size() < 2) continue;
    std::sort(events.begin(), events.end(),
              [](auto* a, auto* b) { return a->timestamp_ms < b->timestamp_ms; });
    const size_t take = std::min<size_t>(events.size() - 1, max_events);
    recserve::v1::RecommendRequest r;
    r.set_user_id(absl::StrCat(user));
    r.set_n(n);
    r.mutable_options()->set_include_timings(true);
    const int64_t shift = now_ms - 60000 - events[events.size() - 2]->timestamp_ms;
    for (size_t i = events.size() - 1 - take; i + 1 < events.size(); ++i) {
      recserve::v1::Event* e = r.add_events();
      e->set_item_id(events[i]->item_id);
      e->set_type(static_cast<recserve::v1::EventType>(events[i]->kind));
      e->set_timestamp_ms(events[i]->timestamp_ms + shift);
    }
    out.push_back(std::move(r));
    if (out.size() >= 20000) break;
  }
  return out;
}

Result RunAt(double rate, double seconds, const std::vector<recserve::v1::RecommendRequest>& requests,
             const std::vector<std::unique_ptr<recserve::v1::Recommender::Stub>>& stubs, int pid) {
  Result result;
  std::mutex mu;
  std::atomic<int64_t> outstanding{0};
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> gap(rate);
  const double cpu0 = pid ? ProcessCpuSeconds(pid) : 0;
  std::atomic<bool> sampling{pid != 0};
  std::atomic<int64_t> peak{0};
  std::thread sampler([&] {
    while (sampling.load()) {
      peak = std::max<int64_t>(peak.load(), ResidentBytes(pid));
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  const Clock::time_point start = Clock::now();
  Clock::time_point next = start;
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  int64_t i = 0;
  while (next < end) {
    std::this_thread::sleep_until(next);
    struct Call {
      grpc::ClientContext ctx;
      recserve::v1::RecommendResponse response;
      Clock::time_point intended;
    };
    auto* call = new Call;
    call->intended = next;
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_deadline)));
    ++outstanding;
    stubs[i % stubs.size()]->async()->Recommend(
        &call->ctx, &requests[i % requests.size()], &call->response, [&, call](grpc::Status s) {
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - call->intended).count();
          {
            std::lock_guard<std::mutex> lock(mu);
            if (s.ok()) {
              result.latencies_ms.push_back(ms);
              const recserve::v1::StageTimings& t = call->response.timings();
              result.stage_ms[0] += t.recall_ms();
              result.stage_ms[1] += t.features_ms();
              result.stage_ms[2] += t.rank_ms();
              result.stage_ms[3] += t.total_ms();
              result.candidates += call->response.candidates();
              if (call->response.degraded() != recserve::v1::DEGRADED_NONE) {
                ++result.degraded[recserve::v1::Degraded_Name(call->response.degraded())];
              }
            } else {
              ++result.errors[absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()))];
            }
          }
          delete call;
          --outstanding;
        });
    ++i;
    next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
  }
  while (outstanding.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  sampling = false;
  sampler.join();
  result.sent = i;
  result.achieved_rate = result.latencies_ms.size() / elapsed;
  result.cpu_seconds = pid ? ProcessCpuSeconds(pid) - cpu0 : 0;
  result.peak_rss = peak.load();
  return result;
}

void Print(double rate, Result& r) {
  const double p50 = Percentile(r.latencies_ms, 50), p90 = Percentile(r.latencies_ms, 90),
               p99 = Percentile(r.latencies_ms, 99), p999 = Percentile(r.latencies_ms, 99.9);
  std::printf("target %7.1f/s achieved %7.1f/s  p50 %6.2f  p90 %6.2f  p99 %6.2f  p99.9 %6.2f ms  ok %zu/%lld",
              rate, r.achieved_rate, p50, p90, p99, p999, r.latencies_ms.size(), static_cast<long long>(r.sent));
  for (auto& [code, count] : r.errors) std::printf("  %s %lld", code.c_str(), static_cast<long long>(count));
  if (r.cpu_seconds > 0 && !r.latencies_ms.empty()) {
    std::printf("  server CPU %.3f ms/request", 1e3 * r.cpu_seconds / r.latencies_ms.size());
  }
  if (r.peak_rss > 0) std::printf("  peak RSS %.1f MB", r.peak_rss / 1e6);
  for (auto& [kind, count] : r.degraded) std::printf("  %s %lld", kind.c_str(), static_cast<long long>(count));
  std::printf("\n");
  if (!r.latencies_ms.empty()) {
    // Where a request's time goes inside the server (engine stages, wall time on the
    // worker); the rest of the latency is queueing, gRPC and the network stack.
    const double ok = static_cast<double>(r.latencies_ms.size());
    std::printf("    server stages, mean ms: recall %.3f  features %.3f  rank %.3f  engine total %.3f;  %.0f candidates\n",
                r.stage_ms[0] / ok, r.stage_ms[1] / ok, r.stage_ms[2] / ok, r.stage_ms[3] / ok, r.candidates / ok);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("recserve-load --address=HOST:PORT --world=DIR [--rate=R] [--sweep]");
  absl::ParseCommandLine(argc, argv);
  auto world = recserve::ReadWorld(absl::GetFlag(FLAGS_world));
  if (!world.ok()) {
    std::fprintf(stderr, "recserve-load: --world: %s\n", world.status().ToString().c_str());
    return 2;
  }
  const auto requests = BuildRequests(*world, absl::GetFlag(FLAGS_n), absl::GetFlag(FLAGS_max_events));
  if (requests.empty()) {
    std::fprintf(stderr, "recserve-load: the world has no users with events\n");
    return 2;
  }
  std::vector<std::unique_ptr<recserve::v1::Recommender::Stub>> stubs;
  for (int c = 0; c < absl::GetFlag(FLAGS_channels); ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);  // distinct connections
    stubs.push_back(recserve::v1::Recommender::NewStub(grpc::CreateCustomChannel(
        absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials(), args)));
  }
  const int pid = absl::GetFlag(FLAGS_server_pid);
  const double seconds = absl::GetFlag(FLAGS_seconds);

  std::atomic<bool> reloading{false};
  std::thread reloader;
  if (!absl::GetFlag(FLAGS_reload_from).empty()) {
    reloading = true;
    reloader = std::thread([&] {
      int64_t v = absl::GetFlag(FLAGS_reload_first_version);
      const std::string dir = absl::GetFlag(FLAGS_reload_dir);
      while (reloading.load()) {
        absl::SleepFor(absl::GetFlag(FLAGS_reload_every));
        const std::string tmp = absl::StrCat(dir, "/.incoming-", v);
        std::error_code ec;
        std::filesystem::copy(absl::GetFlag(FLAGS_reload_from), tmp, std::filesystem::copy_options::recursive, ec);
        std::filesystem::rename(tmp, absl::StrCat(dir, "/", v), ec);
        if (ec) std::fprintf(stderr, "recserve-load: publishing version %lld: %s\n", static_cast<long long>(v), ec.message().c_str());
        ++v;
      }
    });
  }

  std::printf("%zu distinct requests from %s, %d channels, n=%d\n", requests.size(),
              absl::GetFlag(FLAGS_world).c_str(), absl::GetFlag(FLAGS_channels), absl::GetFlag(FLAGS_n));
  int rc = 0;
  if (!absl::GetFlag(FLAGS_sweep)) {
    Result r = RunAt(absl::GetFlag(FLAGS_rate), seconds, requests, stubs, pid);
    Print(absl::GetFlag(FLAGS_rate), r);
    rc = r.errors.empty() ? 0 : 1;
  } else {
    // Double until p99 breaks the bound (or errors), then bisect.
    const double bound = absl::GetFlag(FLAGS_p99_bound_ms);
    double good = 0, bad = 0, rate = absl::GetFlag(FLAGS_rate);
    auto passes = [&](double at) {
      Result r = RunAt(at, seconds, requests, stubs, pid);
      Print(at, r);
      return r.errors.empty() && Percentile(r.latencies_ms, 99) <= bound && r.achieved_rate >= 0.95 * at;
    };
    while (bad == 0) {
      if (passes(rate)) {
        good = rate;
        rate *= 2;
      } else {
        bad = rate;
      }
      if (rate > 1e6) break;
    }
    for (int step = 0; step < 4 && bad > 0; ++step) {
      const double mid = (good + bad) / 2;
      (passes(mid) ? good : bad) = mid;
    }
    std::printf("max sustainable rate with p99 <= %.2f ms: %.0f requests/s\n", bound, good);
  }
  if (reloader.joinable()) {
    reloading = false;
    reloader.join();
  }
  return rc;
}
