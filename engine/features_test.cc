#include "engine/features.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/embedding_index.h"
#include "engine/model.h"
#include "engine/test_util.h"
#include "engine/value_limits.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

TEST(UserStateTest, VectorIsTypeWeightedTimeDecayedMean) {
  auto model = Model::Create(testing::TinyBundle(16, 4, 2), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const Catalog& cat = (*model)->catalog();
  v1::UserModelSpec spec = DefaultUserModel();
  spec.set_half_life_seconds(10);
  UserState state;
  // Item 1 clicked now (weight 2), item 2 viewed 10 s earlier (weight 1 * 0.5).
  std::vector<UserEvent> events = {{2, EventType::kView, 0}, {1, EventType::kClick, 10000}};
  BuildUserState(cat, (*model)->covisit(), spec, events, &state);
  ASSERT_TRUE(state.has_vector());
  for (int k = 0; k < 4; ++k) {
    const float want = (2.f * cat.embedding(1)[k] + 0.5f * cat.embedding(2)[k]) / 2.5f;
    EXPECT_NEAR(state.vector()[k], want, 1e-5);
  }
  // Ring co-visitation: 1 -> 2 (1.0), 3 (0.5); 2 -> 3 (1.0), 4 (0.5).
  EXPECT_NEAR(state.covisit_score(3), 2.f * 0.5f + 0.5f * 1.f, 1e-5);
  EXPECT_NEAR(state.covisit_score(4), 0.5f * 0.5f, 1e-5);
  EXPECT_EQ(state.covisit_score(9), 0.f);
  EXPECT_EQ(state.history().front(), 1);  // newest first

  // Reuse: a new user leaves nothing of the previous one behind.
  BuildUserState(cat, (*model)->covisit(), spec, {}, &state);
  EXPECT_FALSE(state.has_vector());
  EXPECT_EQ(state.covisit_score(3), 0.f);
  EXPECT_FALSE(state.in_history(1));
}

TEST(UserStateTest, OnlyTheNewestMaxEventsShapeTheStateButEveryEventMarksItsItemConsumed) {
  auto model = Model::Create(testing::TinyBundle(16, 4, 2), 1);
  ASSERT_TRUE(model.ok());
  v1::UserModelSpec spec = DefaultUserModel();
  spec.set_max_events(1);
  UserState state;
  BuildUserState((*model)->catalog(), (*model)->covisit(), spec,
                 {{5, EventType::kPurchase, 1}, {7, EventType::kView, 2}}, &state);
  // Item 5 is past max_events: it does not move the vector, but it was bought, so the
  // answer must still leave it out.
  EXPECT_TRUE(state.purchased(5));
  EXPECT_TRUE(state.in_history(5));
  EXPECT_TRUE(state.in_history(7));
  EXPECT_NEAR(state.vector()[0], (*model)->catalog().embedding(7)[0], 1e-6);
}

// Item-kNN: the cosines summed over the newest kKnnItems distinct history items, each
// once however often it was seen; the block gives the sum over the user's largest, its
// log ratio and presence, and a new user starts from zero.
TEST(UserStateTest, KnnScoreSumsTheNewestDistinctItemsLists) {
  constexpr int kItems = 60;
  CatalogData d;
  d.dim = 2;
  for (int i = 0; i < kItems; ++i) {
    d.ids.push_back(1000 + i);
    d.category.push_back(0);
    d.popularity.push_back(1);
    d.embeddings.insert(d.embeddings.end(), {1.f, 0.f});
  }
  auto catalog = Catalog::Create(d);
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  // Item i lists 58 (weight 0.5) and 59 (weight 0.25); no co-visitation.
  CovisitData c;
  c.offsets.assign(kItems + 1, 0);
  c.knn_offsets.push_back(0);
  for (int i = 0; i < kItems; ++i) {
    c.knn_neighbors.insert(c.knn_neighbors.end(), {58, 59});
    c.knn_weights.insert(c.knn_weights.end(), {0.5f, 0.25f});
    c.knn_offsets.push_back(static_cast<int64_t>(c.knn_neighbors.size()));
  }
  auto covisit = CovisitIndex::Create(c, kItems);
  ASSERT_TRUE(covisit.ok()) << covisit.status();
  ASSERT_TRUE((*covisit)->has_knn());
  // 55 distinct items (0..54), item 0 three times: only the newest 50 distinct count.
  std::vector<UserEvent> events;
  for (int i = 0; i < 55; ++i) events.push_back({i, EventType::kPurchase, 1000 * i});
  events.push_back({0, EventType::kPurchase, 10});
  events.push_back({0, EventType::kPurchase, 20});
  UserState state;
  BuildUserState(**catalog, **covisit, DefaultUserModel(), events, &state);
  EXPECT_FLOAT_EQ(state.knn_score(58), 50 * 0.5f);
  EXPECT_FLOAT_EQ(state.knn_score(59), 50 * 0.25f);
  EXPECT_EQ(state.knn_score(3), 0.f);
  EXPECT_FLOAT_EQ(state.max_knn_score(), 25.f);

  v1::FeatureSpec spec;
  spec.set_embedding_dim(2);
  v1::FeatureBlock* block = spec.add_blocks();
  block->set_kind(v1::ITEM_KNN_SIGNALS);
  block->set_width(3);
  auto fb = FeatureBuilder::Create(spec, 2, 0);
  ASSERT_TRUE(fb.ok()) << fb.status();
  std::vector<float> rows(3 * 3);
  const std::vector<int32_t> items = {58, 59, 3};
  fb->Build(**catalog, state, RequestContext{}, items, rows.data());
  EXPECT_FLOAT_EQ(rows[0], 1.f);
  EXPECT_FLOAT_EQ(rows[1], 1.f);
  EXPECT_FLOAT_EQ(rows[2], 1.f);
  EXPECT_FLOAT_EQ(rows[3], 0.5f);
  EXPECT_FLOAT_EQ(rows[4], std::log1p(12.5f) / std::log1p(25.f));
  EXPECT_FLOAT_EQ(rows[5], 1.f);
  EXPECT_EQ(rows[6], 0.f);
  EXPECT_EQ(rows[7], 0.f);
  EXPECT_EQ(rows[8], 0.f);

  BuildUserState(**catalog, **covisit, DefaultUserModel(), {}, &state);
  EXPECT_EQ(state.knn_score(58), 0.f);
  EXPECT_EQ(state.max_knn_score(), 0.f);
}

TEST(FeatureBuilderTest, RowFollowsBlockOrderOfTheSpec) {
  auto model = Model::Create(testing::TinyBundle(16, 4, 2), 1);
  ASSERT_TRUE(model.ok());
  const Catalog& cat = (*model)->catalog();
  UserState state;
  BuildUserState(cat, (*model)->covisit(), DefaultUserModel(), {{1, EventType::kClick, 5}}, &state);
  const FeatureBuilder& fb = (*model)->features();
  // user vector 4, item embedding 4, product 4, user dense 2, item dense 2, dense
  // product 2, category affinity 2, recall signals 4, context 6.
  ASSERT_EQ(fb.width(), 4 * 3 + 2 * 4 + 4 + 6);
  std::vector<float> row(fb.width());
  const int32_t item = 2;
  fb.Build(cat, state, RequestContext{2, 6}, {item}, row.data());
  const float* u = state.vector().data();
  const float* e = cat.embedding(item);
  float dot = 0;
  for (int k = 0; k < 4; ++k) {
    EXPECT_FLOAT_EQ(row[k], u[k]);
    EXPECT_FLOAT_EQ(row[4 + k], e[k]);
    EXPECT_FLOAT_EQ(row[8 + k], u[k] * e[k]);
    dot += u[k] * e[k];
  }
  for (int k = 0; k < 2; ++k) {
    EXPECT_FLOAT_EQ(row[12 + k], cat.dense(1)[k]);  // the only history item is 1
    EXPECT_FLOAT_EQ(row[14 + k], cat.dense(item)[k]);
    EXPECT_FLOAT_EQ(row[16 + k], cat.dense(1)[k] * cat.dense(item)[k]);
  }
  // TinyBundle puts item i in category i % 4: item 2 is not in the user's category.
  EXPECT_EQ(row[18], 0.f);
  EXPECT_EQ(row[19], 0.f);
  EXPECT_NEAR(row[20], dot, 1e-5);
  EXPECT_NEAR(row[21], std::log1p(2.0f), 1e-6);  // click weight 2 x edge 1 -> 2 of 1.0
  EXPECT_EQ(row[22], 1.f);
  EXPECT_FLOAT_EQ(row[23], cat.popularity_feature(item));
  EXPECT_EQ(row[24 + 2], 1.f);  // desktop
  EXPECT_EQ(row[24 + 0], 0.f);
  EXPECT_NEAR(row[28], 1.f, 1e-6);  // sin(2 pi 6/24)
  EXPECT_NEAR(row[29], 0.f, 1e-6);
  // An item of the user's own category gets its full share.
  fb.Build(cat, state, RequestContext{}, {5}, row.data());
  EXPECT_EQ(row[18], 1.f);
  EXPECT_EQ(row[19], 1.f);
}

// Every block of a feature spec, CANDIDATE_SIGNALS and ITEM_KNN_SIGNALS included.
v1::FeatureSpec EveryBlock(int dim, int dense_dim) {
  v1::FeatureSpec spec = DefaultFeatureSpec(dim, dense_dim);
  v1::FeatureBlock* signals = spec.add_blocks();
  signals->set_kind(v1::CANDIDATE_SIGNALS);
  signals->set_width(10);
  v1::FeatureBlock* knn = spec.add_blocks();
  knn->set_kind(v1::ITEM_KNN_SIGNALS);
  knn->set_width(3);
  return spec;
}

void ExpectFinite(const std::vector<float>& values, const std::string& what) {
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_TRUE(std::isfinite(values[i])) << what << " [" << i << "] is " << values[i];
  }
}

// value_limits.h: with every bundle value at the limits (all of one sign, so that sums
// add up), the most events a user model uses, each at the largest type weight, and one
// neighbour listed many times, every feature and every exact recall score is finite.
TEST(FeatureLimitsTest, ValuesAtTheBundleLimitsKeepEveryFeatureFinite) {
  constexpr int kItems = 8, kDim = 4096, kDense = 4096, kListed = 64;
  CatalogData d;
  d.dim = kDim;
  d.dense_dim = kDense;
  for (int i = 0; i < kItems; ++i) {
    d.ids.push_back(100 + i);
    d.category.push_back(i % 2);
    d.popularity.push_back(kMaxBundleValue);
  }
  d.embeddings.assign(static_cast<size_t>(kItems) * kDim, kMaxBundleValue);
  d.dense.assign(static_cast<size_t>(kItems) * kDense, -kMaxBundleValue);
  auto catalog = Catalog::Create(d);
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  CovisitData c;
  c.offsets.push_back(0);
  for (int i = 0; i < kItems; ++i) {
    for (int j = 0; j < kListed; ++j) {
      c.neighbors.push_back((i + 1) % kItems);
      c.weights.push_back(kMaxBundleValue);
      c.counts.push_back(kMaxBundleValue);
      c.knn_neighbors.push_back((i + 2) % kItems);
      c.knn_weights.push_back(kMaxBundleValue);
    }
    c.offsets.push_back(static_cast<int64_t>(c.neighbors.size()));
  }
  c.knn_offsets = c.offsets;
  auto covisit = CovisitIndex::Create(c, kItems);
  ASSERT_TRUE(covisit.ok()) << covisit.status();
  v1::UserModelSpec spec = DefaultUserModel();
  spec.set_view_weight(kMaxEventWeight);
  spec.set_max_events(kMaxUserEvents);
  spec.set_covisit_detail(true);
  std::vector<UserEvent> events;
  for (int e = 0; e < kMaxUserEvents; ++e) events.push_back({e % kItems, EventType::kView, 1000});
  UserState state;
  BuildUserState(**catalog, **covisit, spec, events, &state);
  ASSERT_TRUE(state.has_vector());
  auto fb = FeatureBuilder::Create(EveryBlock(kDim, kDense), kDim, kDense);
  ASSERT_TRUE(fb.ok()) << fb.status();
  std::vector<int32_t> items(kItems);
  for (int i = 0; i < kItems; ++i) items[i] = i;
  std::vector<float> rows(static_cast<size_t>(kItems) * fb->width());
  fb->Build(**catalog, state, RequestContext{1, 3}, items, rows.data());
  ExpectFinite(rows, "feature");
  for (const char* kind : {"exact", "exact-int8"}) {
    EmbeddingIndexOptions o;
    o.kind = kind;
    auto index = BuildEmbeddingIndex(catalog->get(), o);
    ASSERT_TRUE(index.ok()) << index.status();
    std::vector<ScoredItem> top;
    (*index)->TopK(state.vector().data(), kItems, nullptr, &top);
    ASSERT_EQ(top.size(), static_cast<size_t>(kItems));
    for (const ScoredItem& s : top) EXPECT_TRUE(std::isfinite(s.score)) << kind << " item " << s.item;
  }
}

// Event weights so small that 1 / their sum overflows a float: the newest event's type
// weighs 0, the others are 140 half-lives older (4 x 2^-140, a subnormal float).
TEST(FeatureLimitsTest, TinyEventWeightsKeepTheUserVectorFinite) {
  auto model = Model::Create(testing::TinyBundle(16, 4, 2), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const Catalog& cat = (*model)->catalog();
  v1::UserModelSpec spec = DefaultUserModel();
  spec.set_view_weight(0);
  spec.set_half_life_seconds(1);
  UserState state;
  BuildUserState(cat, (*model)->covisit(), spec,
                 {{3, EventType::kPurchase, 0}, {5, EventType::kPurchase, 0}, {7, EventType::kView, 140000}},
                 &state);
  ExpectFinite(state.vector(), "user vector");
  ExpectFinite(state.dense_mean(), "dense mean");
  for (int32_t c : state.categories()) EXPECT_LE(state.category_share(c), 1.f);
  std::vector<float> row((*model)->features().width());
  for (int32_t item = 0; item < cat.size(); ++item) {
    (*model)->features().Build(cat, state, RequestContext{}, {item}, row.data());
    ExpectFinite(row, "feature of item " + std::to_string(item));
  }
}

TEST(FeatureBuilderTest, RefusesSpecThatDoesNotFitTheCatalog) {
  v1::FeatureSpec spec = DefaultFeatureSpec(8, 3);
  EXPECT_FALSE(FeatureBuilder::Create(spec, 16, 3).ok());
  spec.mutable_blocks(0)->set_width(7);
  auto fb = FeatureBuilder::Create(spec, 8, 3);
  ASSERT_FALSE(fb.ok());
  EXPECT_NE(fb.status().message().find("USER_VECTOR"), std::string::npos);
  spec = DefaultFeatureSpec(8, 3);
  *spec.add_blocks() = spec.blocks(0);
  EXPECT_NE(FeatureBuilder::Create(spec, 8, 3).status().message().find("twice"), std::string::npos);
}

}  // namespace
}  // namespace recserve
