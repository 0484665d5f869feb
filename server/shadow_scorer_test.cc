#include "server/shadow_scorer.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::ElementsAre;
using Offered = ShadowScorer::Offered;

constexpr int kServingVersion = 1;
constexpr int kShadowVersion = 2;

std::shared_ptr<const Model> MakeModel(BundleContents bundle, int64_t version) {
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Create(std::move(bundle), version);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// The same bundle with every ranker layer's weights shuffled: same catalog and recall,
// a different ranker (the broken version of issue 14).
BundleContents ShuffledRanker(BundleContents bundle, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (DenseLayer& layer : bundle.mlp.layers) std::shuffle(layer.weight.begin(), layer.weight.end(), rng);
  return bundle;
}

ServingSet SetOf(std::shared_ptr<const Model> serving, std::shared_ptr<const Model> shadow, double share) {
  ServingSet set;
  set.members.push_back({kServingVersion, ServingRole::kServing, std::move(serving), 1.0, nullptr});
  if (shadow) set.members.push_back({kShadowVersion, ServingRole::kShadow, std::move(shadow), share, nullptr});
  return set;
}

// Request `q` of a fixed varied set: three events on TinyBundle's items, one of their
// co-visitation neighbours excluded, purchases consumed, per-category cap on odd ones.
class TestQuery {
 public:
  explicit TestQuery(int q) {
    for (int k = 0; k < 3; ++k) {
      events_.push_back({1000u + static_cast<uint64_t>((q * 7 + k * 3) % 64),
                         k == 2 ? EventType::kPurchase : EventType::kClick, 1700000000000 + k});
    }
    exclude_.push_back(1000u + static_cast<uint64_t>((q * 7 + 1) % 64));
    query_.events = events_;
    query_.exclude_items = exclude_;
    query_.context = {q % 4, q % 24};
    query_.n = 10;
    query_.per_category_cap = q % 2 == 1 ? 4 : 0;
  }
  const RecommendQuery& get() const { return query_; }

 private:
  std::vector<QueryEvent> events_;
  std::vector<uint64_t> exclude_;
  RecommendQuery query_;
};

std::string RequestId(int q) { return absl::StrCat("request-", q); }

// What the service sends of an answer (the fields Handle fills from the engine).
std::string ResponseBytes(const Model& model, const RecommendResult& result) {
  v1::RecommendResponse response;
  for (const RecommendedItem& item : result.items) {
    v1::RecommendedItem* out = response.add_items();
    out->set_item_id(item.item_id);
    out->set_score(item.score);
    out->set_sources(item.sources);
    out->set_category(item.category);
  }
  response.set_model_version(model.version());
  response.set_candidates(result.candidates);
  response.set_unknown_items(result.unknown_items);
  response.set_degraded(static_cast<v1::Degraded>(result.degraded));
  return response.SerializeAsString();
}

// Stalls the shadow thread in its first job until released (ShadowScorerOptions::before_job).
class StallFirstJob {
 public:
  std::function<void()> Hook() {
    return [this] {
      if (!first_.exchange(false)) return;
      entered.Notify();
      release.WaitForNotification();
    };
  }
  Notification entered;  // the shadow thread is inside its first job
  Notification release;

 private:
  std::atomic<bool> first_{true};
};

// At normal priority: see ShadowScorerOptions::idle_priority.
std::unique_ptr<ShadowScorer> MakeScorer(ShadowScorerOptions options = {}) {
  options.idle_priority = false;
  absl::StatusOr<std::unique_ptr<ShadowScorer>> scorer = ShadowScorer::Create(std::move(options));
  EXPECT_TRUE(scorer.ok()) << scorer.status();
  return scorer.ok() ? std::move(*scorer) : nullptr;
}

// Serves `queries` requests from `set`'s serving model, offering each to `scorer`, and
// waits until the shadow has scored them all.
void ServeAndOffer(const ServingSet& set, ShadowScorer* scorer, int queries) {
  const Model& serving = *set.Find(ServingRole::kServing)->model;
  PipelineScratch scratch;
  RecommendResult result;
  for (int q = 0; q < queries; ++q) {
    TestQuery query(q);
    ASSERT_TRUE(Recommend(serving, query.get(), &scratch, &result).ok());
    ASSERT_EQ(scorer->Offer(set, RequestId(q), query.get(), kServingVersion, result), Offered::kQueued);
    ASSERT_TRUE(scorer->WaitUntilIdle(absl::Now() + absl::Minutes(1)));
  }
}

TEST(ShadowScorerTest, CreateRefusesAnEmptyQueue) {
  ShadowScorerOptions options;
  options.queue_size = 0;
  const absl::Status status = ShadowScorer::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), ::testing::HasSubstr("queue_size: 0"));
  for (double share : {0.0, -0.5, 1.5}) {
    ShadowScorerOptions capped;
    capped.max_cpu_share = share;
    const absl::Status refused = ShadowScorer::Create(capped).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.message(), ::testing::HasSubstr("max_cpu_share"));
  }
}

// ShadowScorerOptions::max_cpu_share: after a job the thread rests (here for many
// seconds: a millionth of a core), so the next job waits; Stop() ends the rest at once.
TEST(ShadowScorerTest, CpuCapRestsTheThreadBetweenJobs) {
  ShadowScorerOptions options;
  options.max_cpu_share = 1e-6;
  std::unique_ptr<ShadowScorer> scorer = MakeScorer(options);
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const ServingSet set = SetOf(serving, MakeModel(testing::TinyBundle(), kShadowVersion), 1.0);
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());
  ASSERT_EQ(scorer->Offer(set, RequestId(0), query.get(), kServingVersion, served), Offered::kQueued);
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (scorer->Comparison(kShadowVersion)->scored == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(scorer->Comparison(kShadowVersion)->scored, 1);
  ASSERT_EQ(scorer->Offer(set, RequestId(1), query.get(), kServingVersion, served), Offered::kQueued);
  EXPECT_FALSE(scorer->WaitUntilIdle(absl::Now() + absl::Milliseconds(300)));  // resting
  EXPECT_EQ(scorer->Comparison(kShadowVersion)->scored, 1);
  scorer->Stop();
  EXPECT_EQ(scorer->Comparison(kShadowVersion)->dropped, 1);
}

TEST(ShadowScorerTest, ServedAnswerIsByteIdenticalWithAndWithoutShadow) {
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const ServingSet set = SetOf(serving, MakeModel(ShuffledRanker(testing::TinyBundle(), 3), kShadowVersion), 1.0);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer();
  PipelineScratch alone_scratch, scratch;
  for (int q = 0; q < 20; ++q) {
    TestQuery query(q);
    RecommendResult alone, with_shadow;
    ASSERT_TRUE(Recommend(*serving, query.get(), &alone_scratch, &alone).ok());
    ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &with_shadow).ok());
    ASSERT_EQ(scorer->Offer(set, RequestId(q), query.get(), kServingVersion, with_shadow), Offered::kQueued);
    ASSERT_TRUE(scorer->WaitUntilIdle(absl::Now() + absl::Minutes(1)));
    EXPECT_EQ(ResponseBytes(*serving, with_shadow), ResponseBytes(*serving, alone)) << "request " << q;
  }
  // The shadow did run on every one, and answered differently.
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->scored, 20);
  EXPECT_LT(c->topk_overlap_mean, 1.0);
}

TEST(ShadowScorerTest, IdenticalShadowOverlapsFullyWithZeroPsi) {
  const ServingSet set = SetOf(MakeModel(testing::TinyBundle(), kServingVersion),
                               MakeModel(testing::TinyBundle(), kShadowVersion), 1.0);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer();
  ServeAndOffer(set, scorer.get(), 30);
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->serving_version, kServingVersion);
  EXPECT_EQ(c->sampled, 30);
  EXPECT_EQ(c->scored, 30);
  EXPECT_EQ(c->dropped, 0);
  EXPECT_EQ(c->failed, 0);
  EXPECT_DOUBLE_EQ(c->topk_overlap_mean, 1.0);
  EXPECT_EQ(c->served_score_bins, c->shadow_score_bins);
  int64_t scores = 0;
  for (int64_t count : c->served_score_bins) scores += count;
  EXPECT_EQ(scores, 300);  // 30 answers of n = 10
  EXPECT_DOUBLE_EQ(c->score_psi, 0.0);
  // Latency figures exist for every scored request (their values are for benchmarks).
  EXPECT_EQ(c->latency_samples, 30);
  EXPECT_GT(c->served_p99_seconds, 0);
  EXPECT_GT(c->shadow_p99_seconds, 0);
  EXPECT_GE(c->served_p99_seconds, c->served_p50_seconds);
  EXPECT_DOUBLE_EQ(c->latency_ratio_p99, c->shadow_p99_seconds / c->served_p99_seconds);
}

TEST(ShadowScorerTest, ShuffledRankerShadowDivergesInOverlapAndPsi) {
  const BundleContents bundle = testing::TinyBundle();
  const ServingSet set = SetOf(MakeModel(bundle, kServingVersion),
                               MakeModel(ShuffledRanker(bundle, 3), kShadowVersion), 1.0);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer();
  ServeAndOffer(set, scorer.get(), 30);
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->scored, 30);
  EXPECT_EQ(c->failed, 0);
  EXPECT_LT(c->topk_overlap_mean, 1.0);
  EXPECT_GT(c->topk_overlap_mean, 0.0);  // same recall: the same candidates, ranked otherwise
  EXPECT_GT(c->score_psi, 0.0);
  EXPECT_NE(c->served_score_bins, c->shadow_score_bins);
  EXPECT_DOUBLE_EQ(c->score_psi, PopulationStabilityIndex(c->served_score_bins, c->shadow_score_bins));
}

TEST(ShadowScorerTest, ShadowRunsLeaveTheShadowVersionsStageCostsAlone) {
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const std::shared_ptr<const Model> shadow = MakeModel(testing::TinyBundle(), kShadowVersion);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer();
  ServeAndOffer(SetOf(serving, shadow, 1.0), scorer.get(), 5);
  ASSERT_EQ(scorer->Comparison(kShadowVersion)->scored, 5);
  // Served requests measure their version's stages; the shadow's idle-priority runs do
  // not, or its estimates would carry the machine's load into its answers once it serves.
  EXPECT_GT(serving->stage_costs().Estimates(absl::Now()).recall, absl::ZeroDuration());
  const StageEstimates shadow_costs = shadow->stage_costs().Estimates(absl::Now());
  EXPECT_EQ(shadow_costs.prepare, absl::ZeroDuration());
  EXPECT_EQ(shadow_costs.recall, absl::ZeroDuration());
  EXPECT_EQ(shadow_costs.rank_per_candidate, absl::ZeroDuration());
}

TEST(ShadowScorerTest, StalledShadowThreadMakesOffersDropNeverWait) {
  StallFirstJob stall;
  std::atomic<int> dropped_reported{0};
  ShadowScorerOptions options;
  options.queue_size = 2;
  options.before_job = stall.Hook();
  options.on_job = [&](const ShadowJobResult& job) {
    if (job.outcome == ShadowJobResult::kDropped) dropped_reported.fetch_add(1);
  };
  std::unique_ptr<ShadowScorer> scorer = MakeScorer(options);
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const ServingSet set = SetOf(serving, MakeModel(testing::TinyBundle(), kShadowVersion), 1.0);
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());

  ASSERT_EQ(scorer->Offer(set, RequestId(0), query.get(), kServingVersion, served), Offered::kQueued);
  stall.entered.WaitForNotification();
  // Another thread offers six more: two fill the queue, four are dropped, and it returns
  // while the shadow thread is still stalled.
  std::vector<Offered> outcomes(6);
  Notification offered;
  std::thread offerer([&] {
    for (int i = 0; i < 6; ++i) outcomes[i] = scorer->Offer(set, RequestId(i + 1), query.get(), kServingVersion, served);
    offered.Notify();
  });
  const bool returned = offered.WaitForNotificationWithTimeout(absl::Minutes(1));
  stall.release.Notify();
  offerer.join();
  ASSERT_TRUE(returned) << "an offer waited for the stalled shadow thread";
  EXPECT_THAT(outcomes, ElementsAre(Offered::kQueued, Offered::kQueued, Offered::kDropped, Offered::kDropped,
                                    Offered::kDropped, Offered::kDropped));
  ASSERT_TRUE(scorer->WaitUntilIdle(absl::Now() + absl::Minutes(1)));
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->sampled, 7);
  EXPECT_EQ(c->scored, 3);
  EXPECT_EQ(c->dropped, 4);
  EXPECT_EQ(dropped_reported.load(), 4);
}

TEST(ShadowScorerTest, StopWithJobsQueuedDiscardsThemAndReleasesTheirModels) {
  StallFirstJob stall;
  std::atomic<int> scored_reported{0}, dropped_reported{0};
  ShadowScorerOptions options;
  options.queue_size = 3;
  options.before_job = stall.Hook();
  options.on_job = [&](const ShadowJobResult& job) {
    (job.outcome == ShadowJobResult::kScored ? scored_reported : dropped_reported).fetch_add(1);
  };
  std::unique_ptr<ShadowScorer> scorer = MakeScorer(options);
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const std::shared_ptr<const Model> shadow = MakeModel(testing::TinyBundle(), kShadowVersion);
  const ServingSet set = SetOf(serving, shadow, 1.0);
  const long holders = shadow.use_count();  // this test and the set
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(scorer->Offer(set, RequestId(i), query.get(), kServingVersion, served), Offered::kQueued);
    if (i == 0) stall.entered.WaitForNotification();
  }
  EXPECT_EQ(shadow.use_count(), holders + 4);  // one job running, three queued

  scorer->RequestStop();
  stall.release.Notify();
  scorer->Stop();
  EXPECT_EQ(shadow.use_count(), holders);  // no job holds the shadow model any more
  EXPECT_EQ(scorer->Offer(set, RequestId(9), query.get(), kServingVersion, served), Offered::kNotOffered);
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->sampled, 4);
  EXPECT_EQ(c->scored, 1);   // the job in progress ends
  EXPECT_EQ(c->dropped, 3);  // the queued ones are discarded, counted
  EXPECT_EQ(scored_reported.load(), 1);
  EXPECT_EQ(dropped_reported.load(), 3);
  scorer->Stop();  // idempotent
}

// Until `polls` reaches `target`, for a minute at most.
void WaitForPolls(const std::atomic<int>& polls, int target) {
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (polls.load() < target && absl::Now() < deadline) absl::SleepFor(absl::Microseconds(50));
  ASSERT_GE(polls.load(), target) << "the shadow thread never asked whether requests are in flight";
}

// ShadowScorerOptions::requests_in_flight: a job waits while requests are in flight, is
// scored once none is, and is counted dropped if the scorer stops while it waits.
TEST(ShadowScorerTest, JobsStartOnlyWhenNoRequestIsInFlight) {
  std::atomic<int> inflight{1};
  std::atomic<int> polls{0};
  ShadowScorerOptions options;
  options.requests_in_flight = [&] {
    polls.fetch_add(1);
    return inflight.load();
  };
  options.idle_poll = absl::Microseconds(50);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer(options);
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const std::shared_ptr<const Model> shadow = MakeModel(testing::TinyBundle(), kShadowVersion);
  const ServingSet set = SetOf(serving, shadow, 1.0);
  const long holders = shadow.use_count();
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());

  ASSERT_EQ(scorer->Offer(set, RequestId(0), query.get(), kServingVersion, served), Offered::kQueued);
  WaitForPolls(polls, 20);  // it has looked, many times
  EXPECT_FALSE(scorer->WaitUntilIdle(absl::Now()));
  EXPECT_EQ(scorer->Comparison(kShadowVersion)->scored, 0);  // held back while busy

  inflight.store(0);
  ASSERT_TRUE(scorer->WaitUntilIdle(absl::Now() + absl::Minutes(1)));
  EXPECT_EQ(scorer->Comparison(kShadowVersion)->scored, 1);

  inflight.store(2);
  ASSERT_EQ(scorer->Offer(set, RequestId(1), query.get(), kServingVersion, served), Offered::kQueued);
  WaitForPolls(polls, polls.load() + 20);
  scorer->Stop();  // while the job waits for an idle request path
  EXPECT_EQ(shadow.use_count(), holders);
  const std::optional<ShadowComparison> c = scorer->Comparison(kShadowVersion);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->sampled, 2);
  EXPECT_EQ(c->scored, 1);
  EXPECT_EQ(c->dropped, 1);
}

TEST(ShadowScorerTest, OnlyFullAnswersOfTheServingVersionAreOffered) {
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const std::shared_ptr<const Model> shadow = MakeModel(testing::TinyBundle(), kShadowVersion);
  std::unique_ptr<ShadowScorer> scorer = MakeScorer();
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());
  const ServingSet with_shadow = SetOf(serving, shadow, 1.0);
  // No shadow member; share 0.
  EXPECT_EQ(scorer->Offer(SetOf(serving, nullptr, 1.0), "a", query.get(), kServingVersion, served),
            Offered::kNotOffered);
  EXPECT_EQ(scorer->Offer(SetOf(serving, shadow, 0.0), "a", query.get(), kServingVersion, served),
            Offered::kNotOffered);
  // Answered by a canary (another version than the serving member).
  EXPECT_EQ(scorer->Offer(with_shadow, "a", query.get(), 7, served), Offered::kNotOffered);
  // A degraded answer.
  RecommendResult degraded = served;
  degraded.degraded = Degraded::kRecallOrder;
  EXPECT_EQ(scorer->Offer(with_shadow, "a", query.get(), kServingVersion, degraded), Offered::kNotOffered);
  EXPECT_FALSE(scorer->Comparison(kShadowVersion).has_value());
  EXPECT_EQ(scorer->Offer(with_shadow, "a", query.get(), kServingVersion, served), Offered::kQueued);
}

TEST(ShadowScorerTest, ShareSamplesAStableSubsetOfRequestIds) {
  const std::shared_ptr<const Model> serving = MakeModel(testing::TinyBundle(), kServingVersion);
  const ServingSet set = SetOf(serving, MakeModel(testing::TinyBundle(), kShadowVersion), 0.1);
  TestQuery query(0);
  PipelineScratch scratch;
  RecommendResult served;
  ASSERT_TRUE(Recommend(*serving, query.get(), &scratch, &served).ok());
  // Two scorers (two replicas) decide the same for every request id.
  std::unique_ptr<ShadowScorer> a = MakeScorer(), b = MakeScorer();
  constexpr int kRequests = 2000;
  int sampled = 0;
  for (int i = 0; i < kRequests; ++i) {
    const bool in_a = a->Offer(set, RequestId(i), query.get(), kServingVersion, served) != Offered::kNotOffered;
    const bool in_b = b->Offer(set, RequestId(i), query.get(), kServingVersion, served) != Offered::kNotOffered;
    ASSERT_EQ(in_a, in_b) << RequestId(i);
    sampled += in_a;
  }
  // Binomial(2000, 0.1): mean 200, standard deviation 13.4; five deviations either side.
  EXPECT_GE(sampled, 133);
  EXPECT_LE(sampled, 267);
  EXPECT_EQ(a->Comparison(kShadowVersion)->sampled, sampled);
}

TEST(PopulationStabilityIndexTest, ZeroForTheSameSharesAndLargeForDisjointOnes) {
  std::array<int64_t, kScoreBins> low{}, high{}, low_twice{}, empty{};
  low[1] = 50;
  low[2] = 50;
  low_twice[1] = 100;
  low_twice[2] = 100;
  high[kScoreBins - 1] = 100;
  EXPECT_DOUBLE_EQ(PopulationStabilityIndex(low, low_twice), 0.0);  // shares, not counts
  // Disjoint: each side's empty bins floored at 1e-4.
  const double disjoint = 2 * (0.5 - 1e-4) * std::log(0.5 / 1e-4) + (1 - 1e-4) * std::log(1 / 1e-4);
  EXPECT_NEAR(PopulationStabilityIndex(low, high), disjoint, 1e-9);
  EXPECT_NEAR(PopulationStabilityIndex(high, low), disjoint, 1e-9);
  EXPECT_EQ(PopulationStabilityIndex(low, empty), 0.0);
}

}  // namespace
}  // namespace recserve
