#include "engine/pipeline.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/test_util.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Create(testing::TinyBundle(64), 3);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
  }
  std::shared_ptr<const Model> model_;
  PipelineScratch scratch_;
  RecommendResult result_;
};

TEST_F(PipelineTest, ReturnsTopNByRankerScoreBestFirst) {
  std::vector<QueryEvent> events = {{1010, EventType::kClick, 1000}, {1020, EventType::kView, 900}};
  RecommendQuery q;
  q.events = events;
  q.n = 5;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  ASSERT_EQ(result_.items.size(), 5u);
  EXPECT_GT(result_.candidates, 5);
  for (size_t i = 1; i < result_.items.size(); ++i) {
    EXPECT_GE(result_.items[i - 1].score, result_.items[i].score);
  }
  // The scores are the MLP's on the very rows the feature builder makes.
  const Catalog& cat = model_->catalog();
  UserState state;
  std::vector<UserEvent> ue = {{10, EventType::kClick, 1000}, {20, EventType::kView, 900}};
  BuildUserState(cat, model_->covisit(), model_->manifest().user_model(), ue, &state);
  std::vector<float> row(model_->features().width());
  for (const RecommendedItem& it : result_.items) {
    model_->features().Build(cat, state, {}, {cat.Find(it.item_id)}, row.data());
    float p;
    ReferenceScore(model_->fp32_mlp(), row, 1, absl::MakeSpan(&p, 1));
    EXPECT_NEAR(it.score, p, 1e-5);
    EXPECT_NE(it.sources, 0u);
  }
}

TEST(PipelineRecentShareTest, TheAnswersTailGoesToTheRestsMostRecentlyPopularCandidates) {
  // Recent popularity: a shuffle of 0..63, unrelated to the ranker's order.
  BundleContents bundle = testing::TinyBundle(64);
  for (int i = 0; i < 64; ++i) bundle.items.recent_popularity.push_back(static_cast<float>((i * 37) % 64));
  bundle.manifest.mutable_answer()->set_recent_share(0.25f);
  auto blended = Model::Create(bundle, 1);
  bundle.manifest.mutable_answer()->set_recent_share(0.f);
  auto plain = Model::Create(bundle, 2);
  ASSERT_TRUE(blended.ok() && plain.ok()) << blended.status() << plain.status();
  std::vector<QueryEvent> events = {{1010, EventType::kClick, 1000}, {1020, EventType::kView, 900}};
  RecommendQuery q;
  q.events = events;
  q.n = 8;
  PipelineScratch scratch;
  RecommendResult by_rank, with_tail;
  ASSERT_TRUE(Recommend(**plain, q, &scratch, &by_rank).ok());
  ASSERT_TRUE(Recommend(**blended, q, &scratch, &with_tail).ok());
  ASSERT_EQ(with_tail.items.size(), 8u);
  // floor(0.25 * 8) = 2 slots: the first six are the ranker's.
  for (int k = 0; k < 6; ++k) EXPECT_EQ(with_tail.items[k].item_id, by_rank.items[k].item_id) << k;
  // The last two: of the candidates outside those six, the two with the most recent
  // events, most first (candidates: every item ranked with n = all of them).
  q.n = 64;
  RecommendResult all;
  ASSERT_TRUE(Recommend(**plain, q, &scratch, &all).ok());
  std::vector<std::pair<float, uint64_t>> rest;
  for (size_t k = 6; k < all.items.size(); ++k) {
    const uint64_t id = all.items[k].item_id;
    rest.push_back({bundle.items.recent_popularity[id - 1000], id});
  }
  std::sort(rest.begin(), rest.end(), std::greater<>());
  ASSERT_GT(rest[1].first, 0.f);
  EXPECT_EQ(with_tail.items[6].item_id, rest[0].second);
  EXPECT_EQ(with_tail.items[7].item_id, rest[1].second);
  EXPECT_NE(with_tail.items[6].item_id, by_rank.items[6].item_id);
  // A per-category cap keeps the ranker's order.
  q.n = 8;
  q.per_category_cap = 8;
  ASSERT_TRUE(Recommend(**blended, q, &scratch, &with_tail).ok());
  ASSERT_TRUE(Recommend(**plain, q, &scratch, &by_rank).ok());
  for (int k = 0; k < 8; ++k) EXPECT_EQ(with_tail.items[k].item_id, by_rank.items[k].item_id) << k;
}

TEST_F(PipelineTest, UnknownItemsAreSkippedAndCounted) {
  std::vector<QueryEvent> events = {{999999, EventType::kClick, 1000}, {1010, EventType::kView, 900}};
  RecommendQuery q;
  q.events = events;
  q.n = 3;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  EXPECT_EQ(result_.unknown_items, 1);
  EXPECT_EQ(result_.items.size(), 3u);
}

TEST_F(PipelineTest, PerCategoryCapLimitsEachCategory) {
  RecommendQuery q;
  q.n = 8;
  q.per_category_cap = 2;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  EXPECT_EQ(result_.items.size(), 8u);  // 4 categories x 2
  std::map<int, int> per;
  for (const auto& it : result_.items) ++per[it.category];
  for (auto& [cat, count] : per) EXPECT_LE(count, 2) << "category " << cat;
  // The counts live in the scratch: the next call starts from zero again.
  const std::vector<RecommendedItem> first = result_.items;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  ASSERT_EQ(result_.items.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(result_.items[i].item_id, first[i].item_id) << i;
}

TEST_F(PipelineTest, ExpiredDeadlineIsRefusedBeforeRecall) {
  RecommendQuery q;
  q.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(Recommend(*model_, q, &scratch_, &result_).code(), absl::StatusCode::kDeadlineExceeded);
  // No stage ran: none was measured (this version has served no request before).
  const StageEstimates measured = model_->stage_costs().Estimates(absl::Now());
  EXPECT_EQ(measured.prepare, absl::ZeroDuration());
  EXPECT_EQ(measured.recall, absl::ZeroDuration());
  EXPECT_EQ(measured.rank_per_candidate, absl::ZeroDuration());
  EXPECT_EQ(result_.candidates, 0);
}

// The plan is chosen by fixed stage costs (RecommendQuery::estimates) against deadlines
// minutes away: each plan is the only one that fits, however busy the machine.
class PipelineDeadlineTest : public PipelineTest {
 protected:
  RecommendQuery Query(absl::Duration prepare, absl::Duration recall, absl::Duration per_candidate,
                       absl::Duration time_left) {
    estimates_ = {prepare, recall, per_candidate};
    RecommendQuery q;
    q.events = events_;
    q.n = 5;
    q.estimates = &estimates_;
    q.deadline = absl::Now() + time_left;
    return q;
  }
  // Runs `q`, which must answer OK by `plan`.
  void Run(const RecommendQuery& q, Degraded plan) {
    const absl::Status status = Recommend(*model_, q, &scratch_, &result_);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(result_.degraded, plan) << DegradedName(result_.degraded);
  }
  // Recall's own candidates for events_, in its order.
  std::vector<Candidate> RecallOrder() {
    UserState user;
    std::vector<UserEvent> ue = {{10, EventType::kClick, 1000}, {20, EventType::kView, 900}};
    BuildUserState(model_->catalog(), model_->covisit(), model_->manifest().user_model(), ue, &user);
    RecallScratch scratch;
    std::vector<Candidate> candidates;
    model_->recaller().Recall(user, model_->recall_options(), &scratch, &candidates);
    return candidates;
  }
  std::vector<QueryEvent> events_ = {{1010, EventType::kClick, 1000}, {1020, EventType::kView, 900}};
  StageEstimates estimates_;
};

TEST_F(PipelineDeadlineTest, FullPipelineWhenEverythingFits) {
  RecommendQuery q = Query(absl::Microseconds(1), absl::Microseconds(1), absl::Microseconds(1), absl::Hours(1));
  Run(q, Degraded::kNone);
  EXPECT_GT(result_.candidates, 9);
  EXPECT_EQ(result_.ranked, result_.candidates);
  ASSERT_EQ(result_.items.size(), 5u);
}

TEST_F(PipelineDeadlineTest, RanksTheFirstCandidatesOfRecallsOrderTheTimeLeftAffords) {
  // 95 s left at 10 s a candidate: 9 of recall's candidates are ranked.
  RecommendQuery q = Query(absl::ZeroDuration(), absl::ZeroDuration(), absl::Seconds(10), absl::Seconds(95));
  Run(q, Degraded::kFewerCandidates);
  EXPECT_EQ(result_.ranked, 9);
  const std::vector<Candidate> recall = RecallOrder();
  ASSERT_EQ(result_.candidates, static_cast<int>(recall.size()));
  // The answer is the ranker's best 5 of those 9, with their full-pipeline scores.
  RecommendQuery all = q;
  all.estimates = nullptr;
  all.deadline = absl::InfiniteFuture();
  all.n = 1000;
  RecommendResult full;
  ASSERT_TRUE(Recommend(*model_, all, &scratch_, &full).ok());
  ASSERT_EQ(full.degraded, Degraded::kNone);
  std::set<uint64_t> first9;
  for (int i = 0; i < 9; ++i) first9.insert(model_->catalog().id(recall[i].item));
  std::vector<RecommendedItem> expected;
  for (const RecommendedItem& it : full.items) {
    if (first9.count(it.item_id) && expected.size() < 5) expected.push_back(it);
  }
  ASSERT_EQ(result_.items.size(), 5u);
  for (int k = 0; k < 5; ++k) {
    EXPECT_EQ(result_.items[k].item_id, expected[k].item_id) << k;
    EXPECT_FLOAT_EQ(result_.items[k].score, expected[k].score) << k;
  }
}

TEST_F(PipelineDeadlineTest, AnswersInRecallOrderWhenNotEvenNCandidatesCanBeRanked) {
  // A minute left at 20 s a candidate: 3 candidates, fewer than the 5 wanted.
  RecommendQuery q = Query(absl::ZeroDuration(), absl::ZeroDuration(), absl::Seconds(20), absl::Minutes(1));
  Run(q, Degraded::kRecallOrder);
  EXPECT_EQ(result_.ranked, 0);
  const std::vector<Candidate> recall = RecallOrder();
  EXPECT_EQ(result_.candidates, static_cast<int>(recall.size()));
  ASSERT_EQ(result_.items.size(), 5u);
  for (int k = 0; k < 5; ++k) {
    EXPECT_EQ(result_.items[k].item_id, model_->catalog().id(recall[k].item)) << k;
    EXPECT_EQ(result_.items[k].sources, recall[k].sources) << k;
    EXPECT_EQ(result_.items[k].score, 0.f) << k;
  }
}

TEST_F(PipelineDeadlineTest, AnswersByPopularityLessConsumedAndExcludedWhenRecallDoesNotFit) {
  const Catalog& cat = model_->catalog();
  const std::vector<int32_t>& popular = cat.by_popularity();
  // The most popular item purchased (consumed), the second excluded by the caller.
  std::vector<QueryEvent> events = {{cat.id(popular[0]), EventType::kPurchase, 1000},
                                    {cat.id(popular[5]), EventType::kView, 900}};
  const std::vector<uint64_t> excluded = {cat.id(popular[1])};
  RecommendQuery q = Query(absl::ZeroDuration(), absl::Hours(1), absl::ZeroDuration(), absl::Minutes(1));
  q.events = events;
  q.exclude_items = excluded;
  Run(q, Degraded::kPopularity);
  EXPECT_EQ(result_.candidates, 0);
  EXPECT_EQ(result_.ranked, 0);
  ASSERT_EQ(result_.items.size(), 5u);
  for (int k = 0; k < 5; ++k) {  // a view is not consumed: popular[5] stays
    EXPECT_EQ(result_.items[k].item_id, cat.id(popular[k + 2])) << k;
    EXPECT_EQ(result_.items[k].score, 0.f) << k;
    EXPECT_EQ(result_.items[k].sources, kFromPopularity) << k;
  }
  // The per-category cap holds here too, and its counts start from zero on the next call.
  q.per_category_cap = 1;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  std::set<int32_t> categories;
  for (const RecommendedItem& it : result_.items) EXPECT_TRUE(categories.insert(it.category).second);
  EXPECT_EQ(result_.items.size(), static_cast<size_t>(cat.num_categories()));
  const std::vector<RecommendedItem> first = result_.items;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  ASSERT_EQ(result_.items.size(), first.size());
}

TEST_F(PipelineDeadlineTest, RefusedBeforeAnyWorkWhenNotEvenPopularityFits) {
  RecommendQuery q = Query(absl::Hours(1), absl::ZeroDuration(), absl::ZeroDuration(), absl::Minutes(1));
  const absl::Status status = Recommend(*model_, q, &scratch_, &result_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(status.message().find("less than the 1h even the popularity answer takes"), absl::string_view::npos)
      << status;
  EXPECT_EQ(model_->stage_costs().Estimates(absl::Now()).prepare, absl::ZeroDuration());
}

TEST(PipelineRecentShareTest, TheTailStaysOnAnAnswerRankedOnFewerCandidates) {
  BundleContents bundle = testing::TinyBundle(64);
  for (int i = 0; i < 64; ++i) bundle.items.recent_popularity.push_back(static_cast<float>((i * 37) % 64));
  bundle.manifest.mutable_answer()->set_recent_share(0.25f);
  auto model = Model::Create(bundle, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<QueryEvent> events = {{1010, EventType::kClick, 1000}, {1020, EventType::kView, 900}};
  // 12 of recall's 19 candidates ranked (125 s at 10 s each); n = 8: 2 tail slots.
  const StageEstimates estimates = {absl::ZeroDuration(), absl::ZeroDuration(), absl::Seconds(10)};
  RecommendQuery q;
  q.events = events;
  q.n = 8;
  q.estimates = &estimates;
  q.deadline = absl::Now() + absl::Seconds(125);
  PipelineScratch scratch;
  RecommendResult fewer;
  ASSERT_TRUE(Recommend(**model, q, &scratch, &fewer).ok());
  ASSERT_EQ(fewer.degraded, Degraded::kFewerCandidates) << fewer.candidates;
  ASSERT_EQ(fewer.ranked, 12);
  ASSERT_EQ(fewer.items.size(), 8u);
  // The head: the ranker's best six of recall's first 12; the tail: the two most recently
  // popular of the other six, most first.
  UserState user;
  std::vector<UserEvent> ue = {{10, EventType::kClick, 1000}, {20, EventType::kView, 900}};
  BuildUserState((*model)->catalog(), (*model)->covisit(), (*model)->manifest().user_model(), ue, &user);
  RecallScratch recall_scratch;
  std::vector<Candidate> recall;
  (*model)->recaller().Recall(user, (*model)->recall_options(), &recall_scratch, &recall);
  ASSERT_GT(recall.size(), 12u);
  std::set<uint64_t> head;
  for (int k = 0; k < 6; ++k) head.insert(fewer.items[k].item_id);
  std::vector<std::pair<float, uint64_t>> rest;
  for (int i = 0; i < 12; ++i) {
    const uint64_t id = (*model)->catalog().id(recall[i].item);
    if (!head.count(id)) rest.push_back({bundle.items.recent_popularity[recall[i].item], id});
  }
  ASSERT_EQ(rest.size(), 6u);  // the head came from the first 12
  std::sort(rest.begin(), rest.end(), std::greater<>());
  EXPECT_EQ(fewer.items[6].item_id, rest[0].second);
  EXPECT_EQ(fewer.items[7].item_id, rest[1].second);
  for (int k = 1; k < 6; ++k) EXPECT_GE(fewer.items[k - 1].score, fewer.items[k].score) << k;
}

TEST(StageCostsTest, EstimatesMeanPlusTwoDeviationsAndHalveWhenStaleEachSecond) {
  StageCosts costs;
  const absl::Time t = absl::FromUnixSeconds(1700000000);
  auto recall_ms = [&](absl::Time at) { return absl::ToDoubleMilliseconds(costs.Estimates(at).recall); };
  EXPECT_EQ(costs.Estimates(t).recall, absl::ZeroDuration());
  costs.Record(StageCosts::kRecall, absl::Milliseconds(8), t);   // mean 8, deviation 4
  EXPECT_NEAR(recall_ms(t), 8 + 2 * 4, 1e-9);
  costs.Record(StageCosts::kRecall, absl::Milliseconds(16), t);  // mean 8 + 8/8, deviation 4 + (8 - 4)/4
  EXPECT_NEAR(recall_ms(t), 9 + 2 * 5, 1e-9);
  EXPECT_NEAR(recall_ms(t + absl::Milliseconds(900)), 19, 1e-9);  // fresh for a second
  EXPECT_NEAR(recall_ms(t + absl::Seconds(2)), 9.5, 1e-9);
  EXPECT_NEAR(recall_ms(t + absl::Seconds(3)), 4.75, 1e-9);
  EXPECT_EQ(costs.Estimates(t).prepare, absl::ZeroDuration());  // stages are apart
  // Measured again: folded into what is left (mean 2.25, deviation 1.25), not the old figures.
  costs.Record(StageCosts::kRecall, absl::Milliseconds(1), t + absl::Seconds(3));
  EXPECT_NEAR(recall_ms(t + absl::Seconds(3)), (2.25 - 1.25 / 8) + 2 * 1.25, 1e-9);
}

TEST_F(PipelineTest, EveryRequestMeasuresTheStagesItRan) {
  RecommendQuery q;
  std::vector<QueryEvent> events = {{1010, EventType::kClick, 1000}};
  q.events = events;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  const StageEstimates measured = model_->stage_costs().Estimates(absl::Now());
  EXPECT_GT(measured.recall, absl::ZeroDuration());
  EXPECT_GT(measured.rank_per_candidate, absl::ZeroDuration());
}

TEST_F(PipelineTest, ScratchFollowsANewModelVersion) {
  RecommendQuery q;
  q.n = 4;
  ASSERT_TRUE(Recommend(*model_, q, &scratch_, &result_).ok());
  auto bigger = Model::Create(testing::TinyBundle(200, 8, 3, {32}), 4);
  ASSERT_TRUE(bigger.ok());
  std::vector<QueryEvent> events = {{1150, EventType::kClick, 1000}};
  q.events = events;
  ASSERT_TRUE(Recommend(**bigger, q, &scratch_, &result_).ok());
  EXPECT_EQ(result_.items.size(), 4u);
  EXPECT_EQ(result_.unknown_items, 0);
}

TEST(PipelineNonFiniteTest, NonFiniteScoresNeverReachTheAnswer) {
  auto model = Model::Create(testing::OverflowingRankerBundle(), 5);
  ASSERT_TRUE(model.ok()) << model.status();
  PipelineScratch scratch;
  RecommendResult result;
  std::vector<QueryEvent> events = {{1010, EventType::kClick, 1000}, {1020, EventType::kView, 900}};
  RecommendQuery q;
  q.events = events;
  q.n = 1000;  // every candidate, to see the whole order
  ASSERT_TRUE(Recommend(**model, q, &scratch, &result).ok());
  ASSERT_EQ(static_cast<int>(result.items.size()), result.candidates);
  // The ranker scored some candidates NaN: they are counted, answered with 0 (the lowest
  // probability) and ordered like every other score, best first, ties by catalog index.
  EXPECT_GT(result.non_finite_scores, 0);
  EXPECT_LT(result.non_finite_scores, result.candidates);
  int zeros = 0;
  for (size_t i = 0; i < result.items.size(); ++i) {
    const RecommendedItem& it = result.items[i];
    ASSERT_TRUE(std::isfinite(it.score)) << "rank " << i;
    zeros += it.score == 0.f;
    if (i == 0) continue;
    const RecommendedItem& prev = result.items[i - 1];
    EXPECT_TRUE(prev.score > it.score ||
                (prev.score == it.score &&
                 (*model)->catalog().Find(prev.item_id) < (*model)->catalog().Find(it.item_id)))
        << "rank " << i;
  }
  EXPECT_GE(zeros, result.non_finite_scores);
  // The same request, the same answer.
  const std::vector<RecommendedItem> first = result.items;
  ASSERT_TRUE(Recommend(**model, q, &scratch, &result).ok());
  ASSERT_EQ(result.items.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(result.items[i].item_id, first[i].item_id) << i;
}

}  // namespace
}  // namespace recserve
