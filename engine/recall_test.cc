#include "engine/recall.h"

#include <algorithm>
#include <random>

#include "engine/model.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

class RecallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Create(testing::TinyBundle(64), 1);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
  }
  const Catalog& catalog() const { return model_->catalog(); }
  void Build(const std::vector<UserEvent>& events) {
    BuildUserState(catalog(), model_->covisit(), model_->manifest().user_model(), events, &user_);
  }
  std::shared_ptr<const Model> model_;
  UserState user_;
  RecallScratch scratch_;
  std::vector<Candidate> candidates_;
};

TEST_F(RecallTest, ExactIndexFindsTheBestInnerProducts) {
  std::vector<float> q(catalog().dim(), 0.f);
  q[0] = 1.f;
  q[3] = -0.5f;
  std::vector<ScoredItem> top;
  model_->index().TopK(q.data(), 7, nullptr, &top);
  std::vector<std::pair<float, int>> all;
  for (int i = 0; i < catalog().size(); ++i) {
    const float* e = catalog().embedding(i);
    all.push_back({-(e[0] - 0.5f * e[3]), i});
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(top.size(), 7u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(top[i].item, all[i].second);
    EXPECT_NEAR(top[i].score, -all[i].first, 1e-5);
  }
}

TEST_F(RecallTest, ColdUserGetsPopularityOnly) {
  Build({});
  model_->recaller().Recall(user_, model_->recall_options(), &scratch_, &candidates_);
  ASSERT_EQ(candidates_.size(), 20u);  // max_candidates
  for (size_t i = 0; i < candidates_.size(); ++i) {
    EXPECT_EQ(candidates_[i].item, catalog().by_popularity()[i]);
    EXPECT_EQ(candidates_[i].sources, kFromPopularity);
  }
}

TEST_F(RecallTest, WarmUserGetsCovisitNeighboursDedupedWithSources) {
  Build({{10, EventType::kClick, 1000}, {11, EventType::kClick, 2000}});
  model_->recaller().Recall(user_, model_->recall_options(), &scratch_, &candidates_);
  ASSERT_LE(candidates_.size(), 20u);
  std::vector<int32_t> items;
  for (const Candidate& c : candidates_) items.push_back(c.item);
  std::vector<int32_t> sorted = items;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "duplicates";
  // Ring graph: 10 -> 11, 12; 11 -> 12, 13. Item 12 is co-visited by both.
  for (int32_t want : {11, 12, 13}) {
    auto it = std::find(items.begin(), items.end(), want);
    ASSERT_NE(it, items.end()) << want;
    EXPECT_TRUE(candidates_[it - items.begin()].sources & kFromCovisit);
  }
  // The co-visitation source proposes the strongest accumulated score first.
  CovisitSource covisit;
  std::vector<ScoredItem> proposed;
  covisit.Propose(user_, 3, &scratch_, &proposed);
  ASSERT_FALSE(proposed.empty());
  EXPECT_EQ(proposed[0].item, 12);
}

TEST_F(RecallTest, EmbeddingSourceIsAskedOnlyForItsQuotaPlusPurchasedItems) {
  // The embedding index runs first, so it needs slack only for purchased items the merge
  // drops: an HNSW search widens its beam to the k it is asked for.
  Build({{10, EventType::kPurchase, 1000}, {11, EventType::kView, 2000}});
  RecallOptions options = model_->recall_options();
  options.embedding_k = 5;
  options.covisit_k = 0;
  options.popularity_k = 0;
  options.max_candidates = 100;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_EQ(scratch_.scored.size(), 6u);  // 5 + one purchased item
  EXPECT_EQ(candidates_.size(), 5u);
  for (const Candidate& c : candidates_) {
    EXPECT_EQ(c.sources & kFromEmbedding, kFromEmbedding);
    EXPECT_NE(c.item, 10);
  }
}

TEST_F(RecallTest, WithAnExactIndexOverlapsDoNotCountAgainstTheEmbeddingQuota) {
  // Co-visitation goes first; the embedding source then adds its quota of items that
  // are new, so the candidates are every co-visited item plus embedding_k more.
  Build({{10, EventType::kClick, 1000}, {11, EventType::kClick, 2000}});
  ASSERT_FALSE(model_->index().cost_grows_with_k());
  RecallOptions options = model_->recall_options();
  options.covisit_k = 1000;
  options.embedding_k = 5;
  options.popularity_k = 0;
  options.max_candidates = 1000;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  const size_t covisited = user_.covisited().size();
  ASSERT_GT(covisited, 0u);
  EXPECT_EQ(candidates_.size(), covisited + 5);
  int embedding_only = 0;
  for (const Candidate& c : candidates_) embedding_only += c.sources == kFromEmbedding;
  EXPECT_EQ(embedding_only, 5);
}

TEST_F(RecallTest, PurchasedItemsAreDroppedUnlessKept) {
  Build({{10, EventType::kPurchase, 1000}, {12, EventType::kPurchase, 1500}, {11, EventType::kView, 2000}});
  RecallOptions options = model_->recall_options();
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  for (const Candidate& c : candidates_) {
    EXPECT_NE(c.item, 10);
    EXPECT_NE(c.item, 12);
  }
  options.exclude_types = 0;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_TRUE(std::any_of(candidates_.begin(), candidates_.end(), [](const Candidate& c) { return c.item == 12; }));
}

TEST_F(RecallTest, EveryConsumedTypeAndExplicitExclusionsAreDropped) {
  Build({{10, EventType::kPurchase, 1000}, {12, EventType::kView, 1500}, {11, EventType::kClick, 2000}});
  RecallOptions options = model_->recall_options();
  options.max_candidates = 1000;
  options.popularity_k = 1000;
  // Purchases only: the viewed and clicked items may come back.
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  auto has = [&](int32_t item) {
    return std::any_of(candidates_.begin(), candidates_.end(), [item](const Candidate& c) { return c.item == item; });
  };
  EXPECT_FALSE(has(10));
  EXPECT_TRUE(has(12) || has(11));
  // Every type: nothing of the history comes back.
  options.exclude_types = kAllEventTypes;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_FALSE(has(10));
  EXPECT_FALSE(has(11));
  EXPECT_FALSE(has(12));
  // Explicit exclusions drop items no event names, and only for this call.
  ASSERT_FALSE(candidates_.empty());
  const int32_t shown = candidates_.front().item;
  const int32_t excluded[] = {shown};
  model_->recaller().Recall(user_, options, &scratch_, &candidates_, excluded);
  EXPECT_FALSE(has(shown));
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_TRUE(has(shown));
}

TEST_F(RecallTest, QuotasAndCapAreRespected) {
  Build({{5, EventType::kClick, 1000}});
  RecallOptions options;
  options.covisit_k = 1;
  options.embedding_k = 3;
  options.popularity_k = 2;
  options.max_candidates = 100;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_EQ(candidates_.size(), 6u);
  options.max_candidates = 4;
  model_->recaller().Recall(user_, options, &scratch_, &candidates_);
  EXPECT_EQ(candidates_.size(), 4u);
}

TEST(TopKCollectorTest, KeepsTheKBestInOrder) {
  std::vector<ScoredItem> heap;
  TopKCollector top(3, &heap);
  const float scores[] = {0.5f, 2.f, -1.f, 3.f, 2.f, 0.f};
  for (int i = 0; i < 6; ++i) top.Push(i, scores[i]);
  top.Finish();
  ASSERT_EQ(heap.size(), 3u);
  EXPECT_EQ(heap[0].item, 3);
  EXPECT_EQ(heap[1].item, 1);  // tie at 2.0: smaller index first
  EXPECT_EQ(heap[2].item, 4);
}

}  // namespace
}  // namespace recserve
