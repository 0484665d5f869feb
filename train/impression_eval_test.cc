// Bundles judged on served answers: the metrics of hand-made slates are the hand-computed
// values, a bundle that ranks the clicked items first beats one that ranks them last,
// scores are the served ones and ignore the shown position, expected clicks are those of
// each bundle's own answer under the world's truth, and bad input is refused by name.
#include "train/impression_eval.h"

#include <cmath>

#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "train/click_truth.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kT = 1'800'000'000'000;
constexpr int kItems = 64;

ServedSlate Slate(const std::string& user, int64_t time_ms, const std::vector<uint64_t>& items,
                  const std::vector<float>& labels) {
  ServedSlate slate;
  slate.user = user;
  slate.time_ms = time_ms;
  slate.context = {1, 9};
  slate.events = {{1, EventType::kClick, time_ms - 60'000}, {2, EventType::kView, time_ms - 30'000}};
  for (size_t p = 0; p < items.size(); ++p) slate.items.push_back({items[p], static_cast<int32_t>(p), labels[p]});
  return slate;
}

// --------------------------------------------------------------------------------------
// MeasureRanking on hand-made slates and scores.

TEST(MeasureRankingTest, MetricsAreTheHandComputedValues) {
  const std::vector<ServedSlate> slates = {
      Slate("1", kT, {10, 11, 12, 13}, {0, 1, 0, 1}),
      Slate("2", kT, {20, 21, 22}, {0, 0, 1}),
      Slate("3", kT, {30, 31}, {0, 0}),  // no click: in AUC and logloss only
  };
  const std::vector<float> scores = {0.9f, 0.8f, 0.3f, 0.1f, 0.5f, 0.2f, 0.7f, 0.6f, 0.4f};
  const RankingMetrics m = MeasureRanking(slates, scores, /*top_k=*/3);
  // Positives 0.8, 0.1, 0.7 against negatives 0.9, 0.3, 0.5, 0.2, 0.6, 0.4: 5 + 0 + 5 of 18.
  EXPECT_NEAR(m.auc, 10.0 / 18, 1e-6);
  const double logloss = -(std::log(0.1) + std::log(0.8) + std::log(0.7) + std::log(0.1) + std::log(0.5) +
                           std::log(0.8) + std::log(0.7) + std::log(0.4) + std::log(0.6)) / 9;
  EXPECT_NEAR(m.logloss, logloss, 1e-5);
  // Slate 1 re-ranked: clicks at ranks 2 and 4; slate 2: its click first.
  const double ndcg1 = (1 / std::log2(3.0) + 1 / std::log2(5.0)) / (1 + 1 / std::log2(3.0));
  EXPECT_NEAR(m.ndcg, (ndcg1 + 1.0) / 2, 1e-6);
  EXPECT_DOUBLE_EQ(m.hit1, 0.5);              // slate 2's first is clicked, slate 1's is not
  // Of 3 clicks, ranks 2 (slate 1) and 1 (slate 2) are in the top 3; rank 4 (slate 1) is not.
  EXPECT_DOUBLE_EQ(m.clicks_top, 2.0 / 3.0);
}

TEST(MeasureRankingTest, TiesRankTheUnclickedFirstNotTheLoggedOrder) {
  // The click was shown first; a constant score must not inherit that position.
  const std::vector<ServedSlate> slates = {Slate("1", kT, {10, 11, 12}, {1, 0, 0})};
  const RankingMetrics m = MeasureRanking(slates, {0.5f, 0.5f, 0.5f}, /*top_k=*/1);
  EXPECT_DOUBLE_EQ(m.hit1, 0);
  EXPECT_DOUBLE_EQ(m.clicks_top, 0);
  EXPECT_NEAR(m.ndcg, 1 / std::log2(4.0), 1e-6);  // the click ranked third
  EXPECT_DOUBLE_EQ(m.auc, 0.5);
}

// --------------------------------------------------------------------------------------
// Whole bundles.

// A bundle of items 1..kItems whose ranker reads one input only: the first dense feature,
// which rises with the item id, weighted by `weight` (> 0: higher ids first).
std::shared_ptr<const Model> DenseRanker(float weight, uint64_t first_id = 1) {
  BundleContents b = testing::TinyBundle(kItems, 8, 3, /*hidden=*/{});
  for (int i = 0; i < kItems; ++i) {
    b.items.ids[i] = first_id + i;
    b.items.dense[static_cast<size_t>(i) * 3] = static_cast<float>(i) / kItems;
  }
  int column = 0;
  for (const v1::FeatureBlock& block : b.manifest.features().blocks()) {
    if (block.kind() == v1::ITEM_DENSE) break;
    column += block.width();
  }
  DenseLayer& layer = b.mlp.layers[0];
  std::fill(layer.weight.begin(), layer.weight.end(), 0.f);
  layer.weight[column] = weight;
  layer.bias = {-1.f};
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Create(std::move(b), 1);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

// Slates whose clicked items are the higher ids, shown below the unclicked ones.
std::vector<ServedSlate> HighIdsClicked() {
  return {Slate("3", kT, {5, 9, 40, 50}, {0, 0, 1, 1}), Slate("4", kT + 1, {7, 30, 60}, {0, 0, 1}),
          Slate("5", kT + 2, {12, 20, 33, 44, 55}, {0, 1, 0, 0, 1})};
}

TEST(EvaluateOnImpressionsTest, ABundleRankingTheClickedFirstBeatsOneRankingThemLast) {
  const std::shared_ptr<const Model> last = DenseRanker(-4.f), first = DenseRanker(4.f);
  const std::vector<EvalBundle> bundles = {{"last", last.get()}, {"first", first.get()}};
  absl::StatusOr<ImpressionEvalReport> report = EvaluateOnImpressions(bundles, HighIdsClicked(), {});
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->bundles.size(), 2u);
  EXPECT_EQ(report->slates, 3);
  EXPECT_EQ(report->shown, 12);
  EXPECT_EQ(report->clicks, 5);
  const RankingMetrics& l = report->bundles[0];
  const RankingMetrics& f = report->bundles[1];
  EXPECT_GT(f.auc, l.auc);
  EXPECT_GT(f.ndcg, l.ndcg);
  EXPECT_GT(f.hit1, l.hit1);
  EXPECT_GT(f.clicks_top, l.clicks_top);
  // Every slate's highest id is clicked, its lowest not.
  EXPECT_DOUBLE_EQ(f.hit1, 1.0);
  EXPECT_DOUBLE_EQ(l.hit1, 0.0);
  // The figures are MeasureRanking's of the scores the report gives.
  const RankingMetrics again = MeasureRanking(HighIdsClicked(), report->scores[1], 3);
  EXPECT_DOUBLE_EQ(again.auc, f.auc);
  EXPECT_DOUBLE_EQ(again.ndcg, f.ndcg);
}

TEST(EvaluateOnImpressionsTest, ScoresAreTheServedScoresWhateverThePosition) {
  const std::shared_ptr<const Model> model = DenseRanker(4.f);
  // The bundle's own answer to a request: the served pipeline's scores.
  ServedSlate slate = Slate("3", kT, {}, {});
  RecommendQuery query;
  query.events = slate.events;
  query.context = slate.context;
  query.n = 6;
  PipelineScratch scratch;
  RecommendResult result;
  ASSERT_TRUE(Recommend(*model, query, &scratch, &result).ok());
  ASSERT_EQ(result.items.size(), 6u);
  for (size_t p = 0; p < result.items.size(); ++p) {
    slate.items.push_back({result.items[p].item_id, static_cast<int32_t>(p), p == 2 ? 1.f : 0.f});
  }
  // The same items shown in reverse order: the same score per item.
  ServedSlate reversed = slate;
  for (ServedItem& item : reversed.items) item.position = static_cast<int32_t>(slate.items.size()) - 1 - item.position;
  const EvalBundle bundle[] = {{"b", model.get()}};
  absl::StatusOr<ImpressionEvalReport> served = EvaluateOnImpressions(bundle, {slate}, {});
  absl::StatusOr<ImpressionEvalReport> shown_reversed = EvaluateOnImpressions(bundle, {reversed}, {});
  ASSERT_TRUE(served.ok()) << served.status();
  ASSERT_TRUE(shown_reversed.ok()) << shown_reversed.status();
  for (size_t p = 0; p < result.items.size(); ++p) {
    EXPECT_NEAR(served->scores[0][p], result.items[p].score, 1e-6) << p;
    EXPECT_EQ(served->scores[0][p], shown_reversed->scores[0][p]) << p;
  }
}

TEST(EvaluateOnImpressionsTest, ExpectedClicksAreEachBundlesOwnAnswerUnderTheTruth) {
  WorldOptions world = TinyWorld();
  world.num_users = 50;
  world.num_items = 200;
  ClickModel truth;
  GenerateWorld(world, &truth);
  const std::shared_ptr<const Model> last = DenseRanker(-4.f), first = DenseRanker(4.f);
  const std::vector<EvalBundle> bundles = {{"last", last.get()}, {"first", first.get()}};
  const std::vector<ServedSlate> slates = HighIdsClicked();
  ImpressionEvalOptions options;
  options.truth = &truth;
  options.position_decay = 0.5;
  absl::StatusOr<ImpressionEvalReport> report = EvaluateOnImpressions(bundles, slates, options);
  ASSERT_TRUE(report.ok()) << report.status();

  PipelineScratch scratch;
  double logged = 0;
  std::vector<double> want(bundles.size(), 0);
  for (const ServedSlate& slate : slates) {
    const uint64_t user = std::stoull(slate.user);
    const int n = static_cast<int>(slate.items.size());
    for (const ServedItem& item : slate.items) {
      logged += std::pow(1.0 + item.position, -0.5) *
                truth.Probability(user, item.item_id, slate.context.device, slate.context.hour);
    }
    for (size_t b = 0; b < bundles.size(); ++b) {
      absl::StatusOr<std::vector<uint64_t>> answer = AnswerItems(*bundles[b].model, slate.events, slate.context, n, &scratch);
      ASSERT_TRUE(answer.ok());
      ASSERT_EQ(answer->size(), static_cast<size_t>(n));
      for (int k = 0; k < n; ++k) {
        want[b] += std::pow(1.0 + k, -0.5) * truth.Probability(user, (*answer)[k], slate.context.device, slate.context.hour);
      }
    }
  }
  EXPECT_NEAR(report->logged_expected_clicks, logged / 3, 1e-9);
  EXPECT_NEAR(report->bundles[0].expected_clicks, want[0] / 3, 1e-9);
  EXPECT_NEAR(report->bundles[1].expected_clicks, want[1] / 3, 1e-9);
  EXPECT_NE(report->bundles[0].expected_clicks, report->bundles[1].expected_clicks)
      << "the two bundles answer differently";
}

TEST(EvaluateOnImpressionsTest, BadInputIsRefusedByName) {
  const std::shared_ptr<const Model> model = DenseRanker(4.f);
  const std::vector<EvalBundle> one = {{"models/1", model.get()}};
  auto error = [](const absl::StatusOr<ImpressionEvalReport>& r) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    return std::string(r.status().message());
  };
  EXPECT_THAT(error(EvaluateOnImpressions({}, HighIdsClicked(), {})), HasSubstr("no bundle"));
  EXPECT_THAT(error(EvaluateOnImpressions(one, {}, {})), HasSubstr("no labelled slate"));
  EXPECT_THAT(error(EvaluateOnImpressions(one, {Slate("3", kT, {5, 9}, {0, 0})}, {})), HasSubstr("all unclicked"));
  // A shown item the bundle does not know: the log is of another catalog.
  EXPECT_THAT(error(EvaluateOnImpressions(one, {Slate("3", kT, {5, 900}, {0, 1})}, {})),
              HasSubstr("item 900 shown to user '3'"));
  // Bundles of two catalogs.
  const std::shared_ptr<const Model> other = DenseRanker(4.f, /*first_id=*/1000);
  const std::vector<EvalBundle> mixed = {{"models/1", model.get()}, {"other/1", other.get()}};
  EXPECT_THAT(error(EvaluateOnImpressions(mixed, HighIdsClicked(), {})),
              HasSubstr("bundle other/1 has another catalog than models/1"));
  ImpressionEvalOptions bad_k;
  bad_k.top_k = 0;
  EXPECT_THAT(error(EvaluateOnImpressions(one, HighIdsClicked(), bad_k)), HasSubstr("top_k"));

  // With a truth: users and items must be the world's.
  WorldOptions world = TinyWorld();
  world.num_users = 50;
  world.num_items = 40;  // the bundle's items go to 64
  ClickModel truth;
  GenerateWorld(world, &truth);
  ImpressionEvalOptions judged;
  judged.truth = &truth;
  EXPECT_THAT(error(EvaluateOnImpressions(one, HighIdsClicked(), judged)),
              HasSubstr("bundle models/1: item 41 is not the world's"));
  world.num_items = 200;
  GenerateWorld(world, &truth);
  EXPECT_THAT(error(EvaluateOnImpressions(one, {Slate("h:00ff", kT, {5, 9}, {0, 1})}, judged)),
              HasSubstr("user 'h:00ff'"));
}

// --------------------------------------------------------------------------------------
// Held-out answers of a hand-made log.

v1::Impression Record(const std::string& user, int64_t time_ms, int64_t version, const std::vector<uint64_t>& items) {
  v1::Impression r;
  r.set_user(user);
  r.set_time_unix_ms(time_ms);
  r.mutable_response()->set_model_version(version);
  for (uint64_t item : items) r.mutable_response()->add_items()->set_item_id(item);
  return r;
}

void AddClick(v1::Impression* r, uint64_t item, int64_t time_ms) {
  v1::Event* e = r->add_events();
  e->set_item_id(item);
  e->set_type(v1::CLICK);
  e->set_timestamp_ms(time_ms);
}

TEST(LabelHeldOutTest, KeepsTheHeldOutAnswersLabelledByLaterRequests) {
  // User 7: answered by version 1, then 2, then 2 again; each later request carries the
  // click on the previous answer.
  std::vector<v1::Impression> log = {Record("7", kT, 1, {10, 11}), Record("7", kT + 5000, 2, {12, 13}),
                                     Record("7", kT + 9000, 2, {14, 15})};
  AddClick(&log[1], 11, kT + 1000);
  AddClick(&log[2], 11, kT + 1000);
  AddClick(&log[2], 13, kT + 6000);
  LabelOptions labels;
  labels.window = absl::Seconds(2);
  HeldOut by_version;
  by_version.from_version = 2;
  absl::StatusOr<HeldOutSlates> held = LabelHeldOut(log, {}, labels, by_version);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->records, 3);
  EXPECT_EQ(held->held_out_records, 2);
  ASSERT_EQ(held->slates.size(), 1u);  // the last answer's window is still open
  EXPECT_EQ(held->slates[0].time_ms, kT + 5000);
  EXPECT_THAT(held->slates[0].items, ::testing::ElementsAre(::testing::Field(&ServedItem::label, 0.f),
                                                            ::testing::Field(&ServedItem::label, 1.f)));
  HeldOut by_time;
  by_time.from_ms = kT + 1;
  ASSERT_TRUE(LabelHeldOut(log, {}, labels, by_time).ok());
  EXPECT_EQ(LabelHeldOut(log, {}, labels, by_time)->slates.size(), 1u);
  EXPECT_EQ(LabelHeldOut(log, {}, labels, {})->slates.size(), 2u);
}

TEST(LabelHeldOutTest, BadInputIsRefusedByName) {
  LabelOptions labels;
  labels.window = absl::Seconds(2);
  auto error = [](const absl::StatusOr<HeldOutSlates>& r) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    return std::string(r.status().message());
  };
  EXPECT_THAT(error(LabelHeldOut({}, {}, labels, {})), HasSubstr("no records"));

  std::vector<v1::Impression> log = {Record("7", kT, 1, {10, 11}), Record("7", kT + 5000, 1, {12})};
  HeldOut later;
  later.from_version = 2;
  EXPECT_THAT(error(LabelHeldOut(log, {}, labels, later)), HasSubstr("none of the log's 2 records is held out"));

  // Records that kept only their events' digest cannot be scored.
  std::vector<v1::Impression> digests = log;
  for (v1::Impression& r : digests) {
    r.set_events_count(3);
    r.set_events_digest(0x1234);
  }
  EXPECT_THAT(error(LabelHeldOut(digests, {}, labels, {})), HasSubstr("all 2 held-out records kept only their events' digest"));

  // No later request: every window open.
  EXPECT_THAT(error(LabelHeldOut({Record("7", kT, 1, {10})}, {}, labels, {})), HasSubstr("still open"));
}

}  // namespace
}  // namespace recserve
