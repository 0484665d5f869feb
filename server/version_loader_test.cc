#include "server/version_loader.h"

#include <string>

#include "engine/bundle.h"
#include "engine/file_util.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

class VersionLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "/3";
    ASSERT_TRUE(WriteBundle(testing::TinyBundle(64), dir_).ok());
  }
  std::string dir_;
};

TEST_F(VersionLoaderTest, BuildsTheVersionFillsItsFiguresAndRunsTheHooksInOrder) {
  std::string order;
  VersionLoaderOptions o;
  o.warmup_requests = 3;
  o.check = [&order](const Model& model, v1::ModelFigures* figures) {
    order += "check;";
    EXPECT_EQ(model.version(), 3);
    EXPECT_EQ(figures->items(), 64);  // filled before the check runs
    figures->set_auc_delta(-0.25);
    return absl::OkStatus();
  };
  o.before_publish = [&order](const Model& model) { order += "before_publish " + std::to_string(model.version()); };
  const VersionLoader loader(o);
  v1::ModelFigures figures;
  absl::StatusOr<std::shared_ptr<const Model>> model = loader.Load(3, dir_, &figures);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->version(), 3);
  EXPECT_EQ((*model).use_count(), 1);  // nothing else holds it yet
  EXPECT_EQ(order, "check;before_publish 3");
  EXPECT_EQ(figures.items(), 64);
  EXPECT_GT(figures.parameters(), 0);
  EXPECT_EQ(figures.fp32_bytes(), figures.parameters() * 4);
  EXPECT_EQ(figures.compression(), (*model)->ranker().kind());
  EXPECT_EQ(figures.auc_delta(), -0.25);  // what the check wrote stays
}

TEST_F(VersionLoaderTest, ARefusingCheckRefusesTheVersionBeforeItIsPublished) {
  bool published = false;
  VersionLoaderOptions o;
  o.check = [](const Model&, v1::ModelFigures*) {
    return absl::FailedPreconditionError("accuracy gate: AUC dropped by 0.5");
  };
  o.before_publish = [&published](const Model&) { published = true; };
  const VersionLoader loader(o);
  v1::ModelFigures figures;
  absl::StatusOr<std::shared_ptr<const Model>> model = loader.Load(3, dir_, &figures);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(model.status().message(), HasSubstr("accuracy gate"));
  EXPECT_FALSE(published);
  EXPECT_EQ(figures.items(), 64);  // the figures as far as the load got
}

TEST_F(VersionLoaderTest, AnUnreadableBundleIsRefusedNamingTheFile) {
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/items.safetensors", "not safetensors").ok());
  const VersionLoader loader(VersionLoaderOptions{});
  v1::ModelFigures figures;
  EXPECT_THAT(loader.Load(3, dir_, &figures).status().message(), HasSubstr("items.safetensors"));
}

TEST_F(VersionLoaderTest, CancelEndsALoadInProgressAndRefusesLaterOnes) {
  VersionLoader* self = nullptr;
  bool published = false;
  VersionLoaderOptions o;
  o.warmup_requests = 1000;
  // The load is cancelled while it runs (shutdown during the accuracy gate).
  o.check = [&self](const Model&, v1::ModelFigures*) {
    self->Cancel();
    return absl::OkStatus();
  };
  o.before_publish = [&published](const Model&) { published = true; };
  VersionLoader loader(o);
  self = &loader;
  v1::ModelFigures figures;
  EXPECT_EQ(loader.Load(3, dir_, &figures).status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(published);
  EXPECT_EQ(loader.Load(3, dir_, &figures).status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace recserve
