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
  ServedSlate unknown_only = slate;
  unknown_only.items = {{98, 0, 1.f}};
  ServedRowStats stats;
  const RowMatrix rows = BuildServedRows(*model, {slate, unknown_only}, kPositions, &stats);

  const int width = model->features().width();
  ASSERT_EQ(rows.width, width + kPositions);
  ASSERT_EQ(rows.count, 3);
  EXPECT_EQ(stats.rows, 3);
  EXPECT_EQ(stats.unknown_items, 2) << "99 and 98: left out and counted";
  EXPECT_EQ(stats.empty_slates, 1);
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

TEST(ServedRowsTest, SampledRowsGetZeroPositionsAndServedRowsFollowWithTheirs) {
  const std::shared_ptr<const Model> model = TinyModel();
  const int width = model->features().width();
  // Two sampled fit rows and one validation row, each column its own value.
  std::vector<float> fit(2 * width), val(width);
  for (size_t i = 0; i < fit.size(); ++i) fit[i] = static_cast<float>(i + 1);
  for (size_t i = 0; i < val.size(); ++i) val[i] = -static_cast<float>(i + 1);
  const std::vector<float> fit_labels = {1.f, 0.f}, val_labels = {0.f};
  std::vector<ServedSlate> slates(2);
  slates[0].time_ms = 1;
  slates[0].items = {{1005, 2, 1.f}, {1006, 0, 0.f}};
  slates[1].time_ms = 2;
  slates[1].items = {{1007, 4, 0.f}};
  ServedRowsOptions options;
  options.position_columns = kPositions;
  options.validation_fraction = 0.5;  // the newer slate validates
  absl::StatusOr<ServedTrainingRows> rows =
      CombineWithServedRows(*model, {fit, fit_labels, 2}, {val, val_labels, 1}, slates, options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  const int wide = width + kPositions;
  ASSERT_EQ(rows->fit.width, wide);
  ASSERT_EQ(rows->val.width, wide);
  ASSERT_EQ(rows->fit.count, 4);
  ASSERT_EQ(rows->val.count, 2);
  EXPECT_THAT(rows->fit.labels, ::testing::ElementsAre(1.f, 0.f, 1.f, 0.f));
  EXPECT_THAT(rows->val.labels, ::testing::ElementsAre(0.f, 0.f));
  auto column = [wide](const RowMatrix& m, int r, int c) { return m.rows[static_cast<size_t>(r) * wide + c]; };
  for (int c = 0; c < width; ++c) {
    EXPECT_EQ(column(rows->fit, 0, c), fit[c]);
    EXPECT_EQ(column(rows->fit, 1, c), fit[width + c]);
    EXPECT_EQ(column(rows->val, 0, c), val[c]);
  }
  const RowMatrix older = BuildServedRows(*model, absl::MakeConstSpan(slates).subspan(0, 1), kPositions);
  const RowMatrix newer = BuildServedRows(*model, absl::MakeConstSpan(slates).subspan(1), kPositions);
  for (int c = 0; c < wide; ++c) {
    // The sampled rows as shown at the top; the served rows as built, positions included.
    if (c >= width) {
      EXPECT_EQ(column(rows->fit, 0, c), 0.f);
      EXPECT_EQ(column(rows->val, 0, c), 0.f);
    }
    EXPECT_EQ(column(rows->fit, 2, c), older.rows[c]);
    EXPECT_EQ(column(rows->fit, 3, c), older.rows[wide + c]);
    EXPECT_EQ(column(rows->val, 1, c), newer.rows[c]);
  }
  EXPECT_EQ(column(rows->fit, 2, width + 1), 1.f) << "shown third: position column 2";
  EXPECT_EQ(column(rows->val, 1, width + 3), 1.f) << "shown fifth: position column 4";
  EXPECT_EQ(rows->stats.rows, 3);
}

}  // namespace
}  // namespace recserve
