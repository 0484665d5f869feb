// Training from served logs end to end: answers written by the server's own
// ImpressionLog are read back, labelled with the world's and later events, and train a
// bundle whose ranker takes the bundle's features and no position; the same for a real
// event log (online-retail slice) and a hand-made impression file; recserve-train
// refuses --impressions with --ratings_csv.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/features.h"
#include "engine/model.h"
#include "engine/impression_file.h"
#include "engine/file_util.h"
#include "engine/item_key.h"
#include "engine/pipeline.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/impression_log.h"
#include "tests/e2e_util.h"
#include "train/datagen.h"
#include "train/event_log.h"
#include "train/impression_labels.h"
#include "train/split_flags.h"
#include "train/trainer.h"

namespace recserve {
namespace {

v1::RecommendRequest Request(const World& world, uint64_t user) {
  v1::RecommendRequest r;
  r.set_user_id(absl::StrCat(user));
  r.set_n(3);
  r.mutable_context()->set_device(v1::DESKTOP);
  r.mutable_context()->set_hour(20);
  for (const LoggedEvent& e : world.train_events) {
    if (e.user_id != user) continue;
    v1::Event* event = r.add_events();
    event->set_item_id(e.item_id);
    event->set_type(static_cast<v1::EventType>(e.kind));
    event->set_timestamp_ms(e.timestamp_ms);
  }
  return r;
}

v1::RecommendResponse Response(const std::vector<uint64_t>& items) {
  v1::RecommendResponse r;
  r.set_model_name("default");
  r.set_model_version(1);
  for (uint64_t item : items) r.add_items()->set_item_id(item);
  return r;
}

TEST(ImpressionTrainingTest, AnswersLoggedByTheServerBecomeLabelledRowsOfARankerWithoutPosition) {
  const World world = GenerateWorld(TinyWorld());
  const std::string dir = testing::TempDir("impression_training");
  ImpressionLogOptions log_options;
  log_options.dir = dir;
  log_options.share = 1;
  absl::StatusOr<std::unique_ptr<ImpressionLog>> log = ImpressionLog::Create(log_options);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->Offer(Request(world, 5), Response({11, 12, 13}));
  (*log)->Offer(Request(world, 6), Response({11}));
  (*log)->Stop();
  ASSERT_EQ((*log)->counts().written, 2);

  absl::StatusOr<std::vector<v1::Impression>> records = ReadImpressionLog(dir);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 2u);
  const int64_t t5 = (*records)[0].user() == "5" ? (*records)[0].time_unix_ms() : (*records)[1].time_unix_ms();
  const int64_t t6 = (*records)[0].user() == "6" ? (*records)[0].time_unix_ms() : (*records)[1].time_unix_ms();

  // What the users did next: user 5 clicked item 12 ten seconds after the answer, user
  // 6 clicked 11 two minutes after theirs (past the minute's window).
  std::vector<LoggedEvent> events = world.train_events;
  events.push_back({5, 12, EventKind::kClick, t5 + 10'000});
  events.push_back({6, 11, EventKind::kClick, t6 + 120'000});
  LabelOptions label_options;
  label_options.window = absl::Minutes(1);
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(*records, events, label_options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();
  ASSERT_EQ(slates->size(), 2u);
  for (const ServedSlate& slate : *slates) {
    EXPECT_EQ(slate.context.device, 2);
    EXPECT_EQ(slate.context.hour, 20);
    EXPECT_EQ(static_cast<int>(slate.events.size()), Request(world, std::stoull(slate.user)).events_size());
    std::vector<std::pair<uint64_t, float>> got;
    for (const ServedItem& item : slate.items) got.emplace_back(item.item_id, item.label);
    if (slate.user == "5") {
      EXPECT_EQ(got, (std::vector<std::pair<uint64_t, float>>{{11, 0.f}, {12, 1.f}, {13, 0.f}}));
    } else {
      EXPECT_EQ(got, (std::vector<std::pair<uint64_t, float>>{{11, 0.f}}));
    }
  }
  EXPECT_EQ(stats.clicked, 1);
  EXPECT_EQ(stats.open, 0);

  TrainerOptions options;
  options.verbose = false;
  options.mlp.hidden = {8};
  options.mlp.max_epochs = 2;
  options.item2vec.epochs = 1;
  options.served = *slates;
  absl::StatusOr<TrainOutput> trained = TrainModel(world, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  const BundleContents& bundle = trained->bundle;
  int width = 0;
  for (const v1::FeatureBlock& block : bundle.manifest.features().blocks()) width += block.width();
  EXPECT_EQ(bundle.mlp.input_dim(), width) << "the served ranker takes no position input";
  EXPECT_EQ(bundle.manifest.layer_sizes(0), width);
  EXPECT_EQ(bundle.calibration.width, width);
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Create(bundle, 1);
  EXPECT_TRUE(model.ok()) << model.status();

  // The served rows did train it: the newest served slate validated alongside the
  // world's validation rows.
  options.served.clear();
  absl::StatusOr<TrainOutput> plain = TrainModel(world, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(trained->mlp_report.val_predictions.size(),
            plain->mlp_report.val_predictions.size() + slates->back().items.size());
}

std::string SlicePath() {
  const char* root = std::getenv("RECSERVE_SOURCE_DIR");
  return std::string(root != nullptr ? root : ".") + "/tests/data/online-retail-slice.csv.gz";
}

// A real log's answers: for users active around 80% of the log's range, their events
// before it as the request, shown the items they bought in the next week (clicked) among
// popular ones, then a user and an item the log does not know; the newest answer shows
// one item twice (positions 0 and 5), so that only the position tells its rows apart.
TEST(ImpressionTrainingTest, RealLogAnswersTrainTheLogRankerAndTheBundleServesWithoutPositions) {
  absl::StatusOr<EventLog> log = ReadEventLog(SlicePath(), EventLogOptions());
  ASSERT_TRUE(log.ok()) << log.status();
  const std::vector<LoggedEvent>& events = log->events;
  const int64_t t = events.front().timestamp_ms +
                    static_cast<int64_t>(0.8 * (events.back().timestamp_ms - events.front().timestamp_ms));
  std::map<uint64_t, int> popularity;
  for (const LoggedEvent& e : events) {
    if (e.timestamp_ms < t) ++popularity[e.item_id];
  }
  std::vector<std::pair<int, uint64_t>> by_count;
  for (const auto& [item, count] : popularity) by_count.push_back({-count, item});
  std::sort(by_count.begin(), by_count.end());
  std::map<uint64_t, std::vector<const LoggedEvent*>> by_user;
  for (const LoggedEvent& e : events) by_user[e.user_id].push_back(&e);

  const std::string dir = testing::TempDir("impression_training_real");
  std::string bytes;
  int64_t at = t;
  int written = 0;
  auto add_item = [&](v1::Impression* r, uint64_t item) {
    v1::RecommendedItem* shown = r->mutable_response()->add_items();
    shown->set_item_id(item);
    shown->set_item(log->item_keys.at(item));
  };
  for (const auto& [user, history] : by_user) {
    if (written == 20) break;
    v1::Impression r;
    r.set_user(absl::StrCat(user));
    r.set_time_unix_ms(++at);
    std::vector<uint64_t> next;
    for (const LoggedEvent* e : history) {
      if (e->timestamp_ms < t) {
        v1::Event* event = r.add_events();
        event->set_item(log->item_keys.at(e->item_id));
        event->set_type(static_cast<v1::EventType>(e->kind));
        event->set_timestamp_ms(e->timestamp_ms);
      } else if (e->timestamp_ms <= t + 7 * 86'400'000LL && next.size() < 2 &&
                 popularity.count(e->item_id) > 0 &&
                 std::find(next.begin(), next.end(), e->item_id) == next.end()) {
        next.push_back(e->item_id);
      }
    }
    if (r.events_size() == 0 || next.empty()) continue;
    for (uint64_t item : next) add_item(&r, item);
    for (int k = 0; k < 4; ++k) add_item(&r, by_count[k].second);
    AppendImpression(r, &bytes);
    ++written;
  }
  ASSERT_EQ(written, 20) << "the slice has enough users active around the cut";
  // A user the log does not know, and an item it does not know.
  v1::Impression stranger;
  stranger.set_user("no-such-customer");
  stranger.set_time_unix_ms(++at);
  add_item(&stranger, by_count[0].second);
  AppendImpression(stranger, &bytes);
  v1::Impression newest;
  newest.set_time_unix_ms(++at);
  for (const auto& [user, history] : by_user) {
    bool before = false;
    for (const LoggedEvent* e : history) before |= e->timestamp_ms < t;
    if (!before) continue;
    newest.set_user(absl::StrCat(user));
    for (const LoggedEvent* e : history) {
      if (e->timestamp_ms >= t) break;
      v1::Event* event = newest.add_events();
      event->set_item(log->item_keys.at(e->item_id));
      event->set_type(static_cast<v1::EventType>(e->kind));
      event->set_timestamp_ms(e->timestamp_ms);
    }
    break;
  }
  for (uint64_t item : {by_count[0].second, by_count[1].second, by_count[2].second, by_count[3].second,
                        ItemIdFromKey("NO-SUCH-SKU"), by_count[0].second}) {
    v1::RecommendedItem* shown = newest.mutable_response()->add_items();
    shown->set_item_id(item);
  }
  AppendImpression(newest, &bytes);
  ASSERT_TRUE(WriteFileAtomically(dir + "/" + ImpressionFileName(t, 0, /*active=*/false), bytes).ok());

  absl::StatusOr<std::vector<v1::Impression>> records = ReadImpressionLog(dir);
  ASSERT_TRUE(records.ok()) << records.status();
  LabelOptions label_options;
  label_options.window = absl::Hours(7 * 24);
  label_options.known_users_only = true;
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(*records, events, label_options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();
  EXPECT_EQ(stats.unknown_users, 1);
  EXPECT_EQ(stats.records, 21);
  EXPECT_GE(stats.clicked, 20) << "each user bought a shown item within the week";
  ASSERT_EQ(slates->size(), 21u);

  const World world = WorldFromLog(*std::move(log), events, "online-retail-slice");
  TrainerOptions options;
  options.verbose = false;
  options.mlp.verbose = false;
  options.mlp.hidden = {16};
  options.mlp.max_epochs = 2;
  options.log.anchor_fractions = {0.6, 0.9};
  options.log.negatives_per_request = 20;
  options.log.item2vec_epochs = 1;
  options.log.ensemble = 1;
  options.validation_fraction = 0.05;  // the two newest of the 21 answers validate
  absl::StatusOr<TrainOutput> plain = TrainModel(world, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  options.served = *slates;
  absl::StatusOr<TrainOutput> trained = TrainModel(world, options);
  ASSERT_TRUE(trained.ok()) << trained.status();

  // Every known shown item became a row; the unknown one was counted and left out.
  int64_t known_shown = 0;
  for (const ServedSlate& s : *slates) known_shown += static_cast<int64_t>(s.items.size());
  EXPECT_EQ(trained->served_rows.unknown_items, 1);
  EXPECT_EQ(trained->served_rows.rows, known_shown - 1);
  // The served rows reached the ranker's training set, with their positions: the two
  // newest answers validated after the anchor's rows, and the newest one's item shown
  // at positions 0 and 5 (the same features otherwise) scored apart.
  const std::vector<float>& p = trained->mlp_report.val_predictions;
  const size_t served_val = (*slates)[19].items.size() + (*slates)[20].items.size() - 1;
  ASSERT_EQ(p.size(), plain->mlp_report.val_predictions.size() + served_val);
  EXPECT_NE(p[p.size() - 5], p[p.size() - 1]) << "positions 0 and 5 of one item: the position is an input";

  // The exported ranker takes the bundle's features, no position: as wide as without
  // impressions, and it serves.
  const BundleContents& bundle = trained->bundle;
  int width = 0;
  for (const v1::FeatureBlock& block : bundle.manifest.features().blocks()) width += block.width();
  EXPECT_EQ(bundle.mlp.input_dim(), width);
  EXPECT_EQ(bundle.mlp.input_dim(), plain->bundle.mlp.input_dim());
  EXPECT_EQ(bundle.manifest.layer_sizes(0), width);
  EXPECT_EQ(bundle.calibration.width, width);
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Create(bundle, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  RecommendQuery q;
  q.events = (*slates)[0].events;
  q.n = 10;
  PipelineScratch scratch;
  RecommendResult result;
  ASSERT_TRUE(Recommend(**model, q, &scratch, &result).ok());
  EXPECT_EQ(result.items.size(), 10u);
}

TEST(ImpressionTrainingTest, RecserveTrainRefusesImpressionsWithRatingsCsvByName) {
  std::string output;
  const int code = e2e::RunCommand(e2e::BinaryPath("train/recserve-train") + " --ratings_csv=/nonexistent.csv" +
                                  " --impressions=/nonexistent --model_dir=" +
                                  testing::TempDir("impression_training_ratings"),
                              &output);
  EXPECT_EQ(code, 2) << output;
  EXPECT_THAT(output, ::testing::HasSubstr("--impressions works with --world or --events_csv, not --ratings_csv"));
}

}  // namespace
}  // namespace recserve
