#include "engine/features.h"

#include <cmath>

#include "engine/model.h"
#include "engine/test_util.h"
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
