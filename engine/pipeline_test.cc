#include "engine/pipeline.h"

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

TEST_F(PipelineTest, ExpiredDeadlineStopsWithDeadlineExceeded) {
  RecommendQuery q;
  q.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(Recommend(*model_, q, &scratch_, &result_).code(), absl::StatusCode::kDeadlineExceeded);
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
