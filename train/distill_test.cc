// Distillation through the trainer: the teacher's checks, the report, and the student
// bundle as the server loads it (compression and the accuracy gate).
#include "train/distill.h"

#include <filesystem>
#include <string>

#include "absl/strings/str_format.h"
#include "compression/compress.h"
#include "engine/bundle.h"
#include "engine/model.h"
#include "engine/onnx_mlp.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "train/datagen.h"
#include "train/trainer.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

TrainerOptions FastOptions() {
  TrainerOptions o;
  o.verbose = false;
  o.item2vec.threads = 1;
  o.mlp.hidden = {16, 8};
  o.mlp.max_epochs = 2;
  o.eval_clicks = 500;
  return o;
}

int InputWidth(const TrainerOptions& options, const World& world) {
  int width = 0;
  const v1::Manifest m = DefaultManifest(options, static_cast<int>(world.items.front().dense.size()));
  for (const v1::FeatureBlock& b : m.features().blocks()) width += b.width();
  return width;
}

// A logistic-regression teacher of the given input width.
Mlp LinearTeacher(int width) {
  Mlp mlp;
  mlp.layers.push_back({width, 1, std::vector<float>(width, 0.01f), {0.f}, false});
  return mlp;
}

TEST(DistillTest, StudentBundleRoundTripsAndServesInt8ThroughTheGate) {
  const World world = GenerateWorld(TinyWorld());
  TrainerOptions options = FastOptions();
  options.distill.teacher_hidden = {64, 32};
  absl::StatusOr<TrainOutput> trained = TrainModel(world, options);
  ASSERT_TRUE(trained.ok()) << trained.status();

  const v1::DistillationReport& report = trained->report.distillation();
  ASSERT_EQ(report.rankers_size(), 3);
  EXPECT_EQ(report.teacher(), "trained in this run");
  EXPECT_EQ(report.held_out(), "test impressions");
  EXPECT_GT(report.held_out_rows(), 1000);
  const v1::RankerFigures &teacher = report.rankers(0), &student = report.rankers(1), &baseline = report.rankers(2);
  EXPECT_EQ(teacher.name(), "teacher");
  EXPECT_EQ(student.name(), "student");
  EXPECT_EQ(baseline.name(), "baseline");
  const std::vector<int> student_sizes(student.layer_sizes().begin(), student.layer_sizes().end());
  EXPECT_EQ(student_sizes, trained->bundle.mlp.LayerSizes());
  EXPECT_EQ(trained->teacher.LayerSizes()[1], 64);
  EXPECT_EQ(trained->baseline.LayerSizes(), trained->bundle.mlp.LayerSizes());
  EXPECT_NE(trained->baseline.layers[0].weight, trained->bundle.mlp.layers[0].weight);
  EXPECT_EQ(teacher.macs_per_row(), trained->teacher.MacsPerRow());
  EXPECT_LT(student.macs_per_row(), teacher.macs_per_row());
  EXPECT_EQ(student.macs_per_row(), baseline.macs_per_row());
  for (const v1::RankerFigures& r : report.rankers()) {
    EXPECT_GT(r.auc(), 0.55) << r.name();
    EXPECT_GT(r.ndcg10(), 0) << r.name();
    EXPECT_GT(r.served_ns_per_candidate(), 0) << r.name();
    EXPECT_EQ(r.served_form(), "int8") << r.name();
  }
  EXPECT_EQ(trained->bundle.manifest.training().distillation().SerializeAsString(), report.SerializeAsString());

  const std::string dir = testing::TempDir("distill_student");
  absl::StatusOr<std::string> version_dir = WriteVersion(trained->bundle, dir, 0);
  ASSERT_TRUE(version_dir.ok()) << version_dir.status();
  absl::StatusOr<BundleContents> read = ReadBundle(*version_dir);
  ASSERT_TRUE(read.ok()) << read.status();
  for (size_t l = 0; l < read->mlp.layers.size(); ++l) {
    EXPECT_EQ(read->mlp.layers[l].weight, trained->bundle.mlp.layers[l].weight) << "layer " << l;
  }
  EXPECT_EQ(read->manifest.training().distillation().SerializeAsString(), report.SerializeAsString());

  // Loaded as the server loads it: the default policy's int8 passes the gate and serves.
  ModelOptions model_options;
  auto check = InstallCompression(PolicyOverrides(), &model_options);
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(*version_dir, 1, model_options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->ranker().kind(), "int8");
  v1::ModelFigures figures;
  ASSERT_TRUE(check(**model, &figures).ok());
  EXPECT_EQ(figures.compression(), "int8");
}

TEST(DistillTest, TeacherOfAnotherInputWidthIsRefusedNamingBothWidths) {
  const World world = GenerateWorld(TinyWorld());
  const TrainerOptions options = FastOptions();
  const int width = InputWidth(options, world);
  const std::string dir = testing::TempDir("distill_teacher_width");

  // An ONNX ranker three features too wide.
  ASSERT_TRUE(WriteOnnxMlp(LinearTeacher(width + 3), dir + "/wide.onnx").ok());
  TrainerOptions distill = options;
  distill.distill.teacher_path = dir + "/wide.onnx";
  absl::StatusOr<TrainOutput> refused = TrainModel(world, distill);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrFormat("teacher %s/wide.onnx takes %d input features; the student's rows have %d",
                                        dir, width + 3, width)));

  // A bundle whose feature blocks differ (embeddings of another width).
  TrainerOptions narrow = options;
  narrow.embedding_dim = 16;
  absl::StatusOr<TrainOutput> other = TrainModel(world, narrow);
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::string> other_dir = WriteVersion(other->bundle, dir + "/narrow", 0);
  ASSERT_TRUE(other_dir.ok()) << other_dir.status();
  distill.distill.teacher_path = *other_dir;
  refused = TrainModel(world, distill);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrFormat("teacher bundle %s takes %d input features", *other_dir,
                                        InputWidth(narrow, world))));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(absl::StrFormat("the student's rows have %d", width)));

  // The right width distils, and the report names the teacher.
  ASSERT_TRUE(WriteOnnxMlp(LinearTeacher(width), dir + "/fits.onnx").ok());
  distill.distill.teacher_path = dir + "/fits.onnx";
  absl::StatusOr<TrainOutput> trained = TrainModel(world, distill);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->report.distillation().teacher(), dir + "/fits.onnx");
}

TEST(DistillTest, RealLogTrainerDistilsToo) {
  // A log without impressions goes to the real-log trainer (ensemble of two, refit).
  World world = GenerateWorld(TinyWorld());
  world.train_impressions.clear();
  world.test_impressions.clear();
  world.items.clear();
  TrainerOptions options = FastOptions();
  options.log.anchor_fractions = {0.5, 0.7, 0.9};
  options.log.item2vec_epochs = 1;
  options.distill.teacher_hidden = {64, 32};
  absl::StatusOr<TrainOutput> trained = TrainModel(world, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  const v1::DistillationReport& report = trained->report.distillation();
  ASSERT_EQ(report.rankers_size(), 3);
  EXPECT_THAT(report.held_out(), HasSubstr("validation anchor"));
  EXPECT_EQ(trained->teacher.LayerSizes()[1], 64);  // two members of 32
  EXPECT_EQ(trained->baseline.LayerSizes(), trained->bundle.mlp.LayerSizes());
  EXPECT_LT(report.rankers(1).macs_per_row(), report.rankers(0).macs_per_row());
}

TEST(DistillTest, OptionsNamingTwoTeachersOrBadSettingsAreRefused) {
  DistillOptions o;
  o.teacher_path = "t.onnx";
  o.teacher_hidden = {8};
  EXPECT_THAT(std::string(ValidateDistillOptions(o).message()), HasSubstr("not both"));
  o.teacher_hidden.clear();
  o.alpha = -0.1f;
  EXPECT_THAT(std::string(ValidateDistillOptions(o).message()), HasSubstr("alpha is -0.1"));
  o.alpha = 0.5f;
  o.temperature = 0;
  EXPECT_THAT(std::string(ValidateDistillOptions(o).message()), HasSubstr("temperature is 0"));
}

}  // namespace
}  // namespace recserve
