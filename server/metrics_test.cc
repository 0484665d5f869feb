#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::unique_ptr<Metrics> NewMetrics() {
  auto metrics = Metrics::Create("127.0.0.1:0", MetricsHttpOptions(), [] { return 0; });
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return metrics.ok() ? *std::move(metrics) : nullptr;
}

std::string Scrape(Metrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry().Collect());
}

// A ranked answer of `scores.size()` items.
RecommendResult RankedAnswer(const std::vector<float>& scores) {
  RecommendResult result;
  for (size_t i = 0; i < scores.size(); ++i) result.items.push_back({100 + i, scores[i], 1, 0});
  result.candidates = result.ranked = 50;
  result.candidates_by_source[0] = 50;
  return result;
}

RequestOutcome Answered(const RecommendResult* result, int64_t version, ServingRole role) {
  RequestOutcome o;
  o.seconds = 0.002;
  o.result = result;
  o.version = version;
  o.role = role;
  return o;
}

// The sample of `series` (its whole line up to the value), or -1.
double Sample(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(MetricsTest, RequestSeriesCarryTheVersionAndRoleThatAnswered) {
  std::unique_ptr<Metrics> metrics = NewMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->ObserveRole(3, ServingRole::kServing);
  metrics->ObserveRole(4, ServingRole::kCanary);
  const RecommendResult serving_answer = RankedAnswer({0.0f, 0.25f, 0.5f, 0.75f, 1.0f});
  const RecommendResult canary_answer = RankedAnswer({0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.875f});
  metrics->ObserveRequest(Answered(&serving_answer, 3, ServingRole::kServing));
  metrics->ObserveRequest(Answered(&serving_answer, 3, ServingRole::kServing));
  metrics->ObserveRequest(Answered(&canary_answer, 4, ServingRole::kCanary));
  RequestOutcome engine_error = Answered(nullptr, 4, ServingRole::kCanary);
  engine_error.code = absl::StatusCode::kInternal;
  metrics->ObserveRequest(engine_error);
  RequestOutcome invalid;  // refused before a version was chosen
  invalid.code = absl::StatusCode::kInvalidArgument;
  metrics->ObserveRequest(invalid);

  const std::string text = Scrape(*metrics);
  const std::string v3 = "role=\"serving\",version=\"3\"";
  const std::string v4 = "role=\"canary\",version=\"4\"";
  const std::string none = "role=\"none\",version=\"\"";
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\"," + v3 + "}"), 2) << text;
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\"," + v4 + "}"), 1);
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"INTERNAL\",method=\"Recommend\"," + v4 + "}"), 1);
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"INVALID_ARGUMENT\",method=\"Recommend\"," + none + "}"), 1);
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\"," + none + "}"), 0);
  EXPECT_EQ(Sample(text, "recserve_request_duration_seconds_count{code=\"OK\",method=\"Recommend\"," + v3 + "}"), 2);
  EXPECT_EQ(Sample(text, "recserve_stage_duration_seconds_count{role=\"serving\",stage=\"rank\",version=\"3\"}"), 2);
  EXPECT_EQ(Sample(text, "recserve_stage_duration_seconds_count{role=\"canary\",stage=\"rank\",version=\"4\"}"), 1);
  EXPECT_EQ(Sample(text, "recserve_candidates_count{role=\"canary\",source=\"embedding\",version=\"4\"}"), 1);
  // No version answered: request count and latency only.
  EXPECT_THAT(text, Not(HasSubstr("recserve_stage_duration_seconds_count{role=\"none\"")));
  EXPECT_THAT(text, Not(HasSubstr("recserve_score_count{" + none)));

  // One score per item returned, in Prometheus's `le` buckets.
  EXPECT_EQ(Sample(text, "recserve_score_count{" + v3 + "}"), 10);
  EXPECT_EQ(Sample(text, "recserve_score_sum{" + v3 + "}"), 5.0);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"0.05\"}"), 2);  // 0 twice
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"0.25\"}"), 4);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"0.7\"}"), 6);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"0.75\"}"), 8);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"0.95\"}"), 8);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v3 + ",le=\"1\"}"), 10);
  EXPECT_EQ(Sample(text, "recserve_score_count{" + v4 + "}"), 7);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v4 + ",le=\"0.85\"}"), 6);
  EXPECT_EQ(Sample(text, "recserve_score_bucket{" + v4 + ",le=\"0.9\"}"), 7);
}

// Unranked answers (recall order, popularity) carry score 0 for every item: not scores
// of the model, so not in recserve_score; the degraded counter names the stage.
TEST(MetricsTest, UnrankedAnswersAddNoScores) {
  std::unique_ptr<Metrics> metrics = NewMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->ObserveRole(3, ServingRole::kServing);
  RecommendResult popularity = RankedAnswer({0.f, 0.f, 0.f});
  popularity.ranked = 0;
  popularity.degraded = Degraded::kPopularity;
  metrics->ObserveRequest(Answered(&popularity, 3, ServingRole::kServing));
  const std::string text = Scrape(*metrics);
  EXPECT_EQ(Sample(text, "recserve_score_count{role=\"serving\",version=\"3\"}"), 0) << text;
  EXPECT_EQ(Sample(text, "recserve_degraded_total{role=\"serving\",stage=\"popularity\",version=\"3\"}"), 1);
}

TEST(MetricsTest, UnloadingAVersionRemovesItsSeries) {
  std::unique_ptr<Metrics> metrics = NewMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->ObserveRole(3, ServingRole::kServing);
  metrics->ObserveRole(3, ServingRole::kCanary);  // a promoted canary keeps both
  metrics->ObserveRole(4, ServingRole::kServing);
  const RecommendResult answer = RankedAnswer({0.5f});
  metrics->ObserveRequest(Answered(&answer, 3, ServingRole::kServing));
  metrics->ObserveRequest(Answered(&answer, 4, ServingRole::kServing));
  ASSERT_THAT(Scrape(*metrics), HasSubstr("version=\"3\""));

  metrics->ObserveUnloaded(3);
  std::string text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr("version=\"3\""))) << text;
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"serving\",version=\"4\"}"), 1);
  // A request that finishes on the removed version: counted, as answered by none.
  metrics->ObserveRequest(Answered(&answer, 3, ServingRole::kServing));
  text = Scrape(*metrics);
  EXPECT_EQ(Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"none\",version=\"\"}"), 1);
  EXPECT_THAT(text, Not(HasSubstr("version=\"3\"")));
  // Loaded again (a pin back to it): fresh series.
  metrics->ObserveRole(3, ServingRole::kServing);
  metrics->ObserveRequest(Answered(&answer, 3, ServingRole::kServing));
  EXPECT_EQ(Sample(Scrape(*metrics), "recserve_score_count{role=\"serving\",version=\"3\"}"), 1);
}

// Requests keep recording while their version's series are removed and created again,
// more times than there are slots: none touches freed series (the ThreadSanitizer build
// runs this), none is lost, and freed slots are reused.
TEST(MetricsTest, RequestsRecordWhileTheirVersionIsRemoved) {
  std::unique_ptr<Metrics> metrics = NewMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->ObserveRole(1, ServingRole::kServing);  // stays: requests alternate with version 2
  constexpr int kThreads = 2;
  constexpr int kCycles = 1000;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> observed{0};
  BlockingCounter started(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      const RecommendResult answer = RankedAnswer({0.5f, 0.25f});
      started.DecrementCount();
      for (int64_t i = 0; !stop.load(); ++i) {
        metrics->ObserveRequest(Answered(&answer, 1 + i % 2, ServingRole::kServing));
        observed.fetch_add(1);
      }
    });
  }
  started.Wait();
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    metrics->ObserveRole(2, ServingRole::kServing);
    metrics->ObserveUnloaded(2);
  }
  stop = true;
  for (std::thread& t : threads) t.join();

  // Every request is counted under version 1 or as answered by none (version 2's
  // counts went with its series).
  const std::string text = Scrape(*metrics);
  const double on_1 = Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"serving\",version=\"1\"}");
  const double none = Sample(text, "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"none\",version=\"\"}");
  EXPECT_GT(on_1, 0);
  EXPECT_LE(on_1 + none, observed.load());
  EXPECT_GE(on_1, (observed.load() - 1) / 2);
  EXPECT_EQ(Sample(text, "recserve_score_count{role=\"serving\",version=\"1\"}"), 2 * on_1);
  // The slots went back each time: version 2 gets series once more.
  metrics->ObserveRole(2, ServingRole::kServing);
  const RecommendResult answer = RankedAnswer({0.5f});
  metrics->ObserveRequest(Answered(&answer, 2, ServingRole::kServing));
  EXPECT_EQ(Sample(Scrape(*metrics), "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"serving\",version=\"2\"}"), 1);
}

}  // namespace
}  // namespace recserve
