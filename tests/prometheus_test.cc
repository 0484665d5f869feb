// A real Prometheus (Debian's prometheus package) scrapes a running recserve: the
// request counter (under the serving version and role) and the served-score count
// match what the client got, histogram_quantile over the stage histograms returns a
// number, the model version gauge equals the serving version. And promtool accepts our
// exposition and the rule files in deploy/prometheus, and its rule unit tests pass.
#include <filesystem>
#include <atomic>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "recserve/v1/recommender.grpc.pb.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

std::string Deploy(const std::string& file) {
  return absl::StrCat(std::getenv("RECSERVE_SOURCE_DIR"), "/deploy/prometheus/", file);
}

// The first sample value of an instant-vector query ("" if none yet).
std::string QueryValue(int port, const std::string& promql) {
  auto body = e2e::HttpGet(port, "/api/v1/query?query=" + e2e::UrlEncode(promql));
  if (!body.ok()) return "";
  // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[t,"v"]}]}}
  const size_t at = body->find("\"value\":[");
  if (at == std::string::npos) return "";
  const size_t q1 = body->find('"', body->find(',', at) + 1);
  const size_t q2 = body->find('"', q1 + 1);
  return body->substr(q1 + 1, q2 - q1 - 1);
}

// Polls until the query's value satisfies `ok` (Prometheus scrapes on its own clock).
std::string WaitFor(int port, const std::string& promql, const std::function<bool(const std::string&)>& ok) {
  std::string got;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (absl::Now() < deadline) {
    got = QueryValue(port, promql);
    if (ok(got)) return got;
    absl::SleepFor(absl::Milliseconds(250));
  }
  return got;
}

std::string WaitForValue(int port, const std::string& promql, const std::string& want) {
  return WaitFor(port, promql, [&want](const std::string& v) { return v == want; });
}

TEST(PrometheusTest, RealPrometheusScrapesWhatClientsSent) {
  if (!std::filesystem::exists("/usr/bin/prometheus")) GTEST_SKIP() << "Debian's prometheus is not installed";
  const std::string dir = testing::TempDir("prometheus");
  ASSERT_TRUE(e2e::WriteTinyBundle(dir + "/models", 1).ok());
  auto server = e2e::ServerProcess::Start({"--model_base_path=" + dir + "/models", "--metrics_port=0",
                                           "--warmup_requests=10"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(e2e::WaitForServing((*server)->address(), "recserve.v1.Recommender", absl::Seconds(60)));

  auto stub = v1::Recommender::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  v1::RecommendRequest request;
  request.set_n(5);
  const World& world = e2e::TinyWorld();
  for (int i = 0; i < 10; ++i) {
    v1::Event* e = request.add_events();
    e->set_item_id(world.train_events[i * 31].item_id);
    e->set_type(v1::VIEW);
    e->set_timestamp_ms(absl::ToUnixMillis(absl::Now()) - 1000 * i);
  }
  for (int i = 0; i < 25; ++i) {
    grpc::ClientContext ctx;
    v1::RecommendResponse response;
    ASSERT_TRUE(stub->Recommend(&ctx, request, &response).ok());
  }

  // promtool on our exposition.
  auto exposition = e2e::HttpGet((*server)->metrics_port(), "/metrics");
  ASSERT_TRUE(exposition.ok());
  std::ofstream(dir + "/metrics.txt") << *exposition;
  std::string out;
  EXPECT_EQ(e2e::RunCommand("promtool check metrics < " + dir + "/metrics.txt", &out), 0) << out;

  // Prometheus with our recording rules, scraping every second.
  const int prom_port = e2e::FreePort();
  std::ofstream(dir + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "rule_files:\n  - " << Deploy("recording_rules.yml") << "\n"
      << "scrape_configs:\n  - job_name: recserve\n    static_configs:\n      - targets: [\"127.0.0.1:"
      << (*server)->metrics_port() << "\"]\n";
  auto prom = e2e::ChildProcess::Start(
      {"/usr/bin/prometheus", "--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/tsdb",
       absl::StrCat("--web.listen-address=127.0.0.1:", prom_port), "--log.level=warn"},
      dir + "/prometheus.log");
  ASSERT_TRUE(prom.ok());

  EXPECT_EQ(WaitForValue(prom_port, "recserve_requests_total{code=\"OK\",role=\"serving\",version=\"1\"}", "25"),
            "25");
  // One served score per item: 25 answers of 5.
  EXPECT_EQ(WaitForValue(prom_port, "recserve_score_count{role=\"serving\",version=\"1\"}", "125"), "125");
  EXPECT_EQ(WaitForValue(prom_port, "recserve_model_version", "1"), "1");
  // A quantile needs traffic inside the rate window: keep some flowing.
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    while (!stop.load()) {
      grpc::ClientContext ctx;
      v1::RecommendResponse response;
      stub->Recommend(&ctx, request, &response);
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  const std::string p99 = WaitFor(
      prom_port,
      "histogram_quantile(0.99, sum by (le) (rate(recserve_stage_duration_seconds_bucket{stage=\"total\"}[1m])))",
      [](const std::string& v) { return !v.empty() && v != "NaN"; });
  stop = true;
  traffic.join();
  ASSERT_FALSE(p99.empty());
  ASSERT_NE(p99, "NaN");
  EXPECT_GT(std::stod(p99), 0.0);
  EXPECT_LT(std::stod(p99), 1.0);
  // The recording rules evaluate too, the ones by version and role as well.
  const auto number = [](const std::string& v) { return !v.empty() && v != "NaN"; };
  EXPECT_FALSE(WaitFor(prom_port, "recserve:stage_latency_seconds:p99_5m{stage=\"rank\"}", number).empty());
  const std::string median =
      WaitFor(prom_port, "recserve:score_median_by_version_role:5m{role=\"serving\",version=\"1\"}", number);
  ASSERT_TRUE(number(median)) << median;
  EXPECT_GT(std::stod(median), 0.0);
  EXPECT_LE(std::stod(median), 1.0);
  EXPECT_EQ(WaitForValue(prom_port, "recserve:error_ratio_by_version_role:5m{role=\"serving\",version=\"1\"}", "0"),
            "0");
}

// Every query of the Grafana dashboard names only metrics recserve exports (checked
// against a live exposition), and the file is valid JSON with the panels ops need.
TEST(PrometheusTest, DashboardQueriesNameOnlyExportedMetrics) {
  const std::string dir = testing::TempDir("dashboard");
  ASSERT_TRUE(e2e::WriteTinyBundle(dir + "/models", 1).ok());
  auto server = e2e::ServerProcess::Start({"--model_base_path=" + dir + "/models", "--metrics_port=0",
                                           "--warmup_requests=10"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(e2e::WaitForServing((*server)->address(), "recserve.v1.Recommender", absl::Seconds(60)));
  auto exposition = e2e::HttpGet((*server)->metrics_port(), "/metrics");
  ASSERT_TRUE(exposition.ok());
  std::set<std::string> exported;
  for (size_t at = exposition->find("# TYPE "); at != std::string::npos; at = exposition->find("# TYPE ", at + 1)) {
    const size_t name_end = exposition->find(' ', at + 7);
    const std::string name = exposition->substr(at + 7, name_end - at - 7);
    const std::string type = exposition->substr(name_end + 1, exposition->find('\n', name_end) - name_end - 1);
    exported.insert(name);
    if (type == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) exported.insert(name + suffix);
    }
  }
  ASSERT_TRUE(exported.count("recserve_requests_total"));

  std::ifstream in(absl::StrCat(std::getenv("RECSERVE_SOURCE_DIR"), "/deploy/grafana/recserve-dashboard.json"));
  const nlohmann::json dashboard = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << "dashboard JSON does not parse";
  ASSERT_TRUE(dashboard.contains("panels"));
  const std::regex metric("\\b(recserve_[a-z_]+|process_[a-z_]+)\\b");
  int queries = 0;
  std::set<std::string> used;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      const std::string expr = target["expr"].get<std::string>();
      ++queries;
      for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric); it != std::sregex_iterator(); ++it) {
        const std::string name = (*it)[1];
        used.insert(name);
        EXPECT_TRUE(exported.count(name)) << "panel '" << panel["title"] << "' queries " << name
                                          << ", which recserve does not export";
      }
    }
  }
  EXPECT_GE(queries, 10);
  for (const char* needed : {"recserve_requests_total", "recserve_stage_duration_seconds_bucket",
                             "recserve_inflight_requests", "recserve_candidates_sum", "recserve_model_version",
                             "recserve_model_sparsity", "recserve_model_reloads_total", "recserve_degraded_total",
                             "recserve_request_duration_seconds_bucket", "recserve_score_bucket"}) {
    EXPECT_TRUE(used.count(needed)) << "the dashboard shows nothing of " << needed;
  }
}

TEST(PrometheusTest, PromtoolAcceptsTheDeployConfigAndRules) {
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "Debian's prometheus is not installed";
  std::string out;
  EXPECT_EQ(e2e::RunCommand("promtool check rules " + Deploy("recording_rules.yml") + " " + Deploy("alert_rules.yml"), &out), 0)
      << out;
  // The roll-out and answer-quality alerts on made-up series (rules_test.yml).
  EXPECT_EQ(e2e::RunCommand("cd " + Deploy("") + " && promtool test rules rules_test.yml", &out), 0) << out;
  // Debian's prometheus is built without Kubernetes discovery, so only the static config
  // can be checked by promtool here.
  EXPECT_EQ(e2e::RunCommand("cd " + Deploy("") + " && promtool check config prometheus.yml", &out), 0) << out;
}

}  // namespace
}  // namespace recserve
