#include "train/datagen.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "train/world.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

auto EventKey(const LoggedEvent& e) {
  return std::make_tuple(e.user_id, e.item_id, e.kind, e.timestamp_ms);
}
auto ImpressionKey(const Impression& i) {
  return std::make_tuple(i.impression_id, i.user_id, i.item_id, i.timestamp_ms, i.device, i.hour,
                         i.label, i.true_p);
}
auto ItemKey(const ItemInfo& i) { return std::make_tuple(i.item_id, i.category, i.dense); }

template <typename Row, typename Key>
bool SameRows(const std::vector<Row>& a, const std::vector<Row>& b, Key key) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (key(a[i]) != key(b[i])) return false;
  }
  return true;
}

bool SameWorld(const World& a, const World& b) {
  return SameRows(a.items, b.items, ItemKey) &&
         SameRows(a.train_events, b.train_events, EventKey) &&
         SameRows(a.test_events, b.test_events, EventKey) &&
         SameRows(a.train_impressions, b.train_impressions, ImpressionKey) &&
         SameRows(a.test_impressions, b.test_impressions, ImpressionKey) &&
         a.params == b.params && a.oracle_auc == b.oracle_auc;
}

WorldOptions TinyWithSeed(uint64_t seed) {
  WorldOptions options = TinyWorld();
  options.seed = seed;
  return options;
}

// The tiny world is generated once and shared by the tests that only read it.
class TinyWorldTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new World(GenerateWorld(TinyWorld())); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  static const World& world() { return *world_; }

 private:
  static World* world_;
};
World* TinyWorldTest::world_ = nullptr;

TEST(DatagenTest, SameSeedGivesIdenticalWorld) {
  const World a = GenerateWorld(TinyWithSeed(7));
  const World b = GenerateWorld(TinyWithSeed(7));
  EXPECT_TRUE(SameWorld(a, b));
}

TEST(DatagenTest, DifferentSeedGivesDifferentWorld) {
  const World a = GenerateWorld(TinyWithSeed(7));
  const World b = GenerateWorld(TinyWithSeed(8));
  EXPECT_FALSE(SameRows(a.items, b.items, ItemKey));
  EXPECT_FALSE(SameRows(a.train_events, b.train_events, EventKey));
  EXPECT_NE(a.oracle_auc, b.oracle_auc);
}

TEST(DatagenTest, PresetsAreTinySmallAndOneMillionItems) {
  ASSERT_TRUE(WorldPreset("tiny").ok());
  EXPECT_EQ(WorldPreset("tiny")->num_items, TinyWorld().num_items);
  EXPECT_EQ(WorldPreset("small")->num_users, SmallWorld().num_users);
  EXPECT_EQ(WorldPreset("1m")->num_items, 1000000);
  for (const char* name : {"tiny", "small", "1m"}) {
    EXPECT_TRUE(ValidateWorldOptions(*WorldPreset(name)).ok()) << name;
  }
  const absl::StatusOr<WorldOptions> unknown = WorldPreset("huge");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("'huge'"));
}

TEST(DatagenTest, ClickModelGivesEveryLoggedImpressionItsProbability) {
  ClickModel truth;
  const World world = GenerateWorld(TinyWithSeed(7), &truth);
  EXPECT_TRUE(SameWorld(world, GenerateWorld(TinyWithSeed(7))));  // the truth changes nothing
  ASSERT_EQ(truth.num_users(), TinyWorld().num_users);
  ASSERT_EQ(truth.num_items(), TinyWorld().num_items);
  int64_t checked = 0;
  for (const auto* impressions : {&world.train_impressions, &world.test_impressions}) {
    for (const Impression& i : *impressions) {
      ASSERT_EQ(static_cast<float>(truth.Probability(i.user_id, i.item_id, i.device, i.hour)), i.true_p)
          << "user " << i.user_id << " item " << i.item_id;
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);
}

TEST(DatagenTest, WorldOptionsFromParamsRegeneratesTheWorld) {
  const World world = GenerateWorld(TinyWithSeed(9));
  const absl::StatusOr<WorldOptions> options = WorldOptionsFromParams(world.params);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(SameWorld(world, GenerateWorld(*options)));

  std::map<std::string, std::string> missing = world.params;
  missing.erase("click_bias");
  EXPECT_THAT(std::string(WorldOptionsFromParams(missing).status().message()), HasSubstr("click_bias"));
  std::map<std::string, std::string> bad = world.params;
  bad["num_items"] = "many";
  EXPECT_THAT(std::string(WorldOptionsFromParams(bad).status().message()), HasSubstr("num_items=many"));
}

TEST(DatagenTest, ValidateNamesTheOptionOutOfRange) {
  WorldOptions options = TinyWorld();
  options.num_categories = options.num_items + 1;
  EXPECT_THAT(std::string(ValidateWorldOptions(options).message()), HasSubstr("num_categories"));
  options = TinyWorld();
  options.test_fraction_of_time = 1.0;
  EXPECT_THAT(std::string(ValidateWorldOptions(options).message()),
              HasSubstr("test_fraction_of_time"));
  options = TinyWorld();
  options.cart_probability = NAN;
  EXPECT_THAT(std::string(ValidateWorldOptions(options).message()), HasSubstr("cart_probability"));
}

TEST_F(TinyWorldTest, EveryTestTimestampIsLaterThanEveryTrainTimestamp) {
  const World& w = world();
  ASSERT_FALSE(w.train_events.empty());
  ASSERT_FALSE(w.test_events.empty());
  ASSERT_FALSE(w.train_impressions.empty());
  ASSERT_FALSE(w.test_impressions.empty());
  int64_t last_train = 0;
  for (const LoggedEvent& e : w.train_events) last_train = std::max(last_train, e.timestamp_ms);
  for (const Impression& i : w.train_impressions) last_train = std::max(last_train, i.timestamp_ms);
  int64_t first_test = INT64_MAX;
  for (const LoggedEvent& e : w.test_events) first_test = std::min(first_test, e.timestamp_ms);
  for (const Impression& i : w.test_impressions) first_test = std::min(first_test, i.timestamp_ms);
  EXPECT_LT(last_train, first_test);
  EXPECT_LE(std::stoll(w.params.at("cut_ms")), first_test);
  EXPECT_GT(std::stoll(w.params.at("cut_ms")), last_train);
}

TEST_F(TinyWorldTest, EventsAreSortedByTimestampThenUser) {
  for (const auto* events : {&world().train_events, &world().test_events}) {
    EXPECT_TRUE(std::is_sorted(events->begin(), events->end(),
                               [](const LoggedEvent& a, const LoggedEvent& b) {
                                 return std::tie(a.timestamp_ms, a.user_id) <
                                        std::tie(b.timestamp_ms, b.user_id);
                               }));
  }
}

TEST_F(TinyWorldTest, OracleAucIsBetween070And095) {
  EXPECT_GE(world().oracle_auc, 0.70);
  EXPECT_LE(world().oracle_auc, 0.95);
  EXPECT_EQ(std::stod(world().params.at("oracle_auc")), world().oracle_auc);
}

TEST_F(TinyWorldTest, LabelsMatchTrueProbabilityOnAverage) {
  double labels = 0, probabilities = 0, rows = 0;
  for (const auto* impressions : {&world().train_impressions, &world().test_impressions}) {
    for (const Impression& i : *impressions) {
      labels += i.label;
      probabilities += i.true_p;
      rows += 1;
    }
  }
  ASSERT_GT(rows, 0);
  EXPECT_NEAR(labels / rows, probabilities / rows, 0.02);
  // A realistic click rate, not a coin flip.
  EXPECT_GT(labels / rows, 0.03);
  EXPECT_LT(labels / rows, 0.3);
}

TEST_F(TinyWorldTest, PopularityIsSkewed) {
  std::map<uint64_t, int64_t> counts;
  int64_t total = 0;
  for (const auto* events : {&world().train_events, &world().test_events}) {
    for (const LoggedEvent& e : *events) {
      ++counts[e.item_id];
      ++total;
    }
  }
  std::vector<int64_t> sorted;
  for (const auto& [item, count] : counts) sorted.push_back(count);
  std::sort(sorted.rbegin(), sorted.rend());
  const size_t top = world().items.size() / 100;
  int64_t top_events = 0;
  for (size_t i = 0; i < top && i < sorted.size(); ++i) top_events += sorted[i];
  EXPECT_GT(static_cast<double>(top_events) / static_cast<double>(total), 0.10);
}

TEST_F(TinyWorldTest, MedianUserHasAtLeast15TrainEvents) {
  const WorldSummary summary = SummarizeWorld(world());
  EXPECT_GE(summary.median_train_events_per_user, 15);
  EXPECT_EQ(summary.users, TinyWorld().num_users);
}

// Personalisation is learnable: a user's next clicks mostly fall in the categories the
// user's train history is about, far more often than popularity alone would predict.
TEST_F(TinyWorldTest, NextClicksFollowTheUsersCategories) {
  std::map<uint64_t, int32_t> category;
  for (const ItemInfo& item : world().items) category[item.item_id] = item.category;
  std::map<uint64_t, std::map<int32_t, int>> history;  // user -> category -> events
  for (const LoggedEvent& e : world().train_events) ++history[e.user_id][category[e.item_id]];
  int clicks = 0, in_top_categories = 0;
  for (const LoggedEvent& e : world().test_events) {
    if (e.kind != EventKind::kClick) continue;
    std::vector<std::pair<int, int32_t>> ranked;
    for (const auto& [k, n] : history[e.user_id]) ranked.emplace_back(-n, k);
    std::sort(ranked.begin(), ranked.end());
    ++clicks;
    for (size_t i = 0; i < ranked.size() && i < 3; ++i) {
      in_top_categories += ranked[i].second == category[e.item_id];
    }
  }
  ASSERT_GT(clicks, 100);
  EXPECT_GT(static_cast<double>(in_top_categories) / clicks, 0.6);
}

TEST_F(TinyWorldTest, ImpressionsAreSlatesWithConsistentContext) {
  const int slate_size = TinyWorld().slate_size;
  std::map<uint64_t, std::set<uint64_t>> slates;
  for (const auto* impressions : {&world().train_impressions, &world().test_impressions}) {
    for (const Impression& i : *impressions) {
      EXPECT_EQ(i.hour, (i.timestamp_ms / 3600000) % 24);
      EXPECT_GE(i.device, 0);
      EXPECT_LE(i.device, 3);
      EXPECT_GT(i.true_p, 0.0f);
      EXPECT_LT(i.true_p, 1.0f);
      EXPECT_TRUE(i.label == 0.0f || i.label == 1.0f);
      EXPECT_GE(i.item_id, 1u);
      EXPECT_LE(i.item_id, world().items.size());
      slates[i.impression_id].insert(i.item_id);
    }
  }
  for (const auto& [id, items] : slates) {
    ASSERT_EQ(static_cast<int>(items.size()), slate_size) << "slate " << id;
  }
}

TEST_F(TinyWorldTest, DenseFeaturesHaveTheConfiguredWidth) {
  for (const ItemInfo& item : world().items) {
    ASSERT_EQ(static_cast<int>(item.dense.size()), TinyWorld().item_dense_dim);
  }
}

TEST_F(TinyWorldTest, SurvivesWriteAndRead) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/datagen_test_world");
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteWorld(world(), dir).ok());
  const absl::StatusOr<World> read = ReadWorld(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(SameWorld(*read, world()));
  std::filesystem::remove_all(dir);
}

TEST(PopularityHitRateTest, CountsTestClicksOnTheMostClickedTrainItems) {
  World world;
  // Item 1: 3 train clicks, item 2: 2, item 3: 1 (views do not count).
  for (const uint64_t item : {1, 1, 1, 2, 2, 3}) {
    world.train_events.push_back({9, item, EventKind::kClick, 1});
  }
  world.train_events.push_back({9, 3, EventKind::kView, 1});
  world.train_events.push_back({9, 3, EventKind::kView, 1});
  world.test_events = {{5, 1, EventKind::kClick, 10},
                       {5, 3, EventKind::kClick, 11},
                       {5, 2, EventKind::kView, 12},  // not a click: ignored
                       {5, 4, EventKind::kClick, 13}};
  EXPECT_DOUBLE_EQ(PopularityHitRate(world, 1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(PopularityHitRate(world, 2), 1.0 / 3);
  EXPECT_DOUBLE_EQ(PopularityHitRate(world, 3), 2.0 / 3);
  EXPECT_DOUBLE_EQ(PopularityHitRate(World(), 100), 0.0);
}

}  // namespace
}  // namespace recserve
