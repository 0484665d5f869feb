// Training from served logs end to end: answers written by the server's own
// ImpressionLog are read back, labelled with the world's and later events, and train a
// bundle whose ranker takes the bundle's features and no position.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/features.h"
#include "engine/model.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "server/impression_log.h"
#include "train/datagen.h"
#include "train/impression_labels.h"
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

}  // namespace
}  // namespace recserve
