// Served rows carry the server's features plus the shown position, one-hot; the served
// ranker has no position input and scores every candidate as if shown at the top.
#include "train/served_rows.h"

#include <random>

#include "engine/features.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

constexpr int kPositions = 9;

std::shared_ptr<const Model> TinyModel() {
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Create(testing::TinyBundle(), 0);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

TEST(ServedRowsTest, RowsAreTheServersFeaturesThenTheShownPositionOneHot) {
  const std::shared_ptr<const Model> model = TinyModel();
  ServedSlate slate;
  slate.time_ms = 1'800'000'000'000;
  slate.context = {2, 5};
  slate.events = {{1000, EventType::kClick, slate.time_ms - 5000},
                  {1001, EventType::kView, slate.time_ms - 9000},
                  {77, EventType::kView, slate.time_ms - 100}};  // unknown: skipped, as served
  slate.items = {{1005, 0, 1.f}, {99, 1, 0.f}, {1006, 3, 0.f}, {1007, 12, 1.f}};  // 99 unknown
  const RowMatrix rows = BuildServedRows(*model, {slate}, kPositions);

  const int width = model->features().width();
  ASSERT_EQ(rows.width, width + kPositions);
  ASSERT_EQ(rows.count, 3);
  EXPECT_THAT(rows.labels, ::testing::ElementsAre(1.f, 0.f, 1.f));

  // What the server computes for this request (engine/pipeline.cc's steps).
  const Catalog& catalog = model->catalog();
  UserState state;
  const std::vector<UserEvent> events = {{catalog.Find(1000), EventType::kClick, slate.time_ms - 5000},
                                         {catalog.Find(1001), EventType::kView, slate.time_ms - 9000}};
  BuildUserState(catalog, model->covisit(), model->manifest().user_model(), events, &state);
  const std::vector<int32_t> items = {catalog.Find(1005), catalog.Find(1006), catalog.Find(1007)};
  std::vector<float> want(items.size() * width);
  model->features().Build(catalog, state, {2, 5}, items, want.data());

  const int shown_column[] = {-1, 2, kPositions - 1};  // position 0: none; 3: column 2; 12: the last
  for (int r = 0; r < 3; ++r) {
    const float* row = &rows.rows[static_cast<size_t>(r) * rows.width];
    for (int c = 0; c < width; ++c) ASSERT_EQ(row[c], want[static_cast<size_t>(r) * width + c]) << r << "," << c;
    for (int p = 0; p < kPositions; ++p) {
      EXPECT_EQ(row[width + p], p == shown_column[r] ? 1.f : 0.f) << "row " << r << " position column " << p;
    }
  }
}

TEST(ServedRowsTest, ServedRankerHasNoPositionInputAndScoresAsShownAtTheTop) {
  const int width = 20;
  const Mlp trained = testing::RandomMlp({width + kPositions, 16, 8, 1}, 3);
  absl::StatusOr<Mlp> served = DropPositionInputs(trained, width);
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->input_dim(), width);
  EXPECT_THAT(served->LayerSizes(), ::testing::ElementsAre(width, 16, 8, 1));
  EXPECT_TRUE(ValidateMlp(*served).ok());

  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal;
  const int n = 50;
  std::vector<float> features(n * width), at_top(n * (width + kPositions), 0.f), at_four(at_top.size(), 0.f);
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < width; ++c) {
      features[r * width + c] = at_top[r * (width + kPositions) + c] = at_four[r * (width + kPositions) + c] =
          normal(rng);
    }
    at_four[r * (width + kPositions) + width + 3] = 1.f;
  }
  std::vector<float> p_served(n), p_top(n), p_four(n);
  ReferenceScore(*served, features, n, absl::MakeSpan(p_served));
  ReferenceScore(trained, at_top, n, absl::MakeSpan(p_top));
  ReferenceScore(trained, at_four, n, absl::MakeSpan(p_four));
  for (int r = 0; r < n; ++r) EXPECT_FLOAT_EQ(p_served[r], p_top[r]) << r;
  EXPECT_NE(p_served, p_four) << "the trained network does read the position";

  EXPECT_EQ(DropPositionInputs(trained, width + kPositions + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recserve
