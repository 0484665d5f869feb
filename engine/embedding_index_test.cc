#include "engine/embedding_index.h"

#include "engine/model.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

class EmbeddingIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BundleContents b = testing::TinyBundle(5000, 16, 2);
    auto catalog = Catalog::Create(std::move(b.items));
    ASSERT_TRUE(catalog.ok());
    catalog_ = *std::move(catalog);
  }
  std::unique_ptr<Catalog> catalog_;
};

TEST_F(EmbeddingIndexTest, ExactInt8FindsNearlyTheSameTopItemsAsFp32) {
  auto index = BuildEmbeddingIndex(catalog_.get(), {"exact-int8"});
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->name(), "exact-int8");
  EXPECT_GE(MeasureIndexRecall(*catalog_, **index, 100, 50), 0.95);
  std::vector<ScoredItem> top;
  std::vector<float> q(catalog_->embedding(7), catalog_->embedding(7) + 16);
  (*index)->TopK(q.data(), 10, nullptr, &top);
  ASSERT_EQ(top.size(), 10u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].score, top[i].score);
}

TEST_F(EmbeddingIndexTest, HnswReachesHighRecallAndReturnsBestFirst) {
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  o.hnsw_ef_search = 300;
  auto index = BuildEmbeddingIndex(catalog_.get(), o);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_GE(MeasureIndexRecall(*catalog_, **index, 100, 50), 0.9);
  std::vector<ScoredItem> top;
  std::vector<float> q(catalog_->embedding(11), catalog_->embedding(11) + 16);
  (*index)->TopK(q.data(), 20, nullptr, &top);
  ASSERT_EQ(top.size(), 20u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].score, top[i].score - 1e-5);
}

TEST_F(EmbeddingIndexTest, UnknownKindIsRefusedByName) {
  auto index = BuildEmbeddingIndex(catalog_.get(), {"faiss"});
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), ::testing::HasSubstr("'faiss'"));
}

TEST(ModelIndexTest, ModelReportsItsIndexRecallAtLoad) {
  ModelOptions o;
  o.index.kind = "exact-int8";
  auto model = Model::Create(testing::TinyBundle(3000, 16, 2), 1, o);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->index().name(), "exact-int8");
  EXPECT_GT((*model)->index_recall(), 0.9);
  EXPECT_LE((*model)->index_recall(), 1.0);
}

}  // namespace
}  // namespace recserve
