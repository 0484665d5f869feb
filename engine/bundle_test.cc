#include "engine/bundle.h"

#include <filesystem>
#include <fstream>

#include "engine/file_util.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    contents_ = testing::TinyBundle();
    ASSERT_TRUE(WriteBundle(contents_, dir_).ok());
  }
  std::string Path(const std::string& f) const { return dir_ + "/" + f; }

  // Replaces a file and fixes its size and checksum in the manifest, so the reader gets
  // past the integrity check and must catch the problem in the content itself.
  void ReplaceFile(const std::string& name, const std::string& bytes) {
    ASSERT_TRUE(WriteFileAtomically(Path(name), bytes).ok());
    auto text = ReadFileToString(Path(kManifestFile));
    ASSERT_TRUE(text.ok());
    v1::Manifest m;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(*text, &m));
    for (v1::FileEntry& e : *m.mutable_files()) {
      if (e.name() == name) {
        e.set_size(bytes.size());
        e.set_sha256(Sha256Hex(bytes));
      }
    }
    std::string out;
    google::protobuf::TextFormat::PrintToString(m, &out);
    ASSERT_TRUE(WriteFileAtomically(Path(kManifestFile), out).ok());
  }

  void EditManifest(const std::function<void(v1::Manifest*)>& edit) {
    auto text = ReadFileToString(Path(kManifestFile));
    ASSERT_TRUE(text.ok());
    v1::Manifest m;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(*text, &m));
    edit(&m);
    std::string out;
    google::protobuf::TextFormat::PrintToString(m, &out);
    ASSERT_TRUE(WriteFileAtomically(Path(kManifestFile), out).ok());
  }

  // A valid items file with one tensor changed by `edit`.
  std::string ItemsWith(const std::function<void(CatalogData*)>& edit,
                        std::vector<int64_t> emb_shape = {}) {
    CatalogData d = contents_.items;
    edit(&d);
    const int64_t n = d.ids.size();
    if (emb_shape.empty()) emb_shape = {n, d.dim};
    SafetensorsWriter w;
    w.AddU64("ids", {n}, d.ids);
    w.AddF32("embeddings", emb_shape, d.embeddings);
    w.AddF32("dense", {n, d.dense_dim}, d.dense);
    w.AddI32("category", {n}, d.category);
    w.AddF32("popularity", {n}, d.popularity);
    return w.Serialize();
  }

  absl::Status Read() { return ReadBundle(dir_).status(); }

  std::string dir_;
  BundleContents contents_;
};

TEST_F(BundleTest, RoundTripIsBitExact) {
  auto read = ReadBundle(dir_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->items.ids, contents_.items.ids);
  EXPECT_EQ(read->items.embeddings, contents_.items.embeddings);
  EXPECT_EQ(read->items.dense, contents_.items.dense);
  EXPECT_EQ(read->items.category, contents_.items.category);
  EXPECT_EQ(read->items.popularity, contents_.items.popularity);
  EXPECT_EQ(read->covisit.offsets, contents_.covisit.offsets);
  EXPECT_EQ(read->covisit.neighbors, contents_.covisit.neighbors);
  EXPECT_EQ(read->covisit.weights, contents_.covisit.weights);
  EXPECT_EQ(read->calibration.features, contents_.calibration.features);
  EXPECT_EQ(read->calibration.labels, contents_.calibration.labels);
  EXPECT_EQ(read->calibration.groups, contents_.calibration.groups);
  ASSERT_EQ(read->mlp.layers.size(), contents_.mlp.layers.size());
  for (size_t i = 0; i < read->mlp.layers.size(); ++i) {
    EXPECT_EQ(read->mlp.layers[i].weight, contents_.mlp.layers[i].weight);
    EXPECT_EQ(read->mlp.layers[i].bias, contents_.mlp.layers[i].bias);
    EXPECT_EQ(read->mlp.layers[i].relu, contents_.mlp.layers[i].relu);
  }
  EXPECT_EQ(read->manifest.files_size(), 4);
  EXPECT_EQ(read->manifest.model_name(), "tiny");
  EXPECT_TRUE(Model::Create(*std::move(read), 1).ok());
}

TEST_F(BundleTest, MissingReadyIsRefused) {
  std::filesystem::remove(Path(kReadyFile));
  EXPECT_EQ(Read().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Read().message(), HasSubstr("READY"));
}

TEST_F(BundleTest, WritingOverAReadyVersionIsRefused) {
  EXPECT_EQ(WriteBundle(contents_, dir_).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(BundleTest, ChecksumMismatchNamesTheFile) {
  std::string bytes = *ReadFileToString(Path(kItemsFile));
  bytes[bytes.size() - 3] ^= 0x40;
  ASSERT_TRUE(WriteFileAtomically(Path(kItemsFile), bytes).ok());
  EXPECT_EQ(Read().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Read().message(), HasSubstr("items.safetensors: checksum mismatch"));
}

TEST_F(BundleTest, TruncatedFileIsASizeMismatch) {
  std::string bytes = *ReadFileToString(Path(kCovisitFile));
  ASSERT_TRUE(WriteFileAtomically(Path(kCovisitFile), bytes.substr(0, bytes.size() / 2)).ok());
  EXPECT_EQ(Read().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Read().message(), HasSubstr("covisit.safetensors: size"));
}

TEST_F(BundleTest, MissingFileIsNotFound) {
  std::filesystem::remove(Path(kRankerFile));
  EXPECT_EQ(Read().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Read().message(), HasSubstr("ranker.onnx"));
}

TEST_F(BundleTest, ManifestSyntaxErrorGivesLineAndColumn) {
  ASSERT_TRUE(WriteFileAtomically(Path(kManifestFile), "schema_version: 1\nmodel_name: \n}").ok());
  EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Read().message(), HasSubstr("manifest.textproto: line"));
}

TEST_F(BundleTest, ManifestUnknownFieldIsRefused) {
  ASSERT_TRUE(WriteFileAtomically(Path(kManifestFile), "schema_version: 1\nbogus_field: 3\n").ok());
  EXPECT_THAT(Read().message(), HasSubstr("bogus_field"));
}

TEST_F(BundleTest, ManifestChecksAreNamed) {
  struct Case {
    std::function<void(v1::Manifest*)> edit;
    std::string want;
  } cases[] = {
      {[](v1::Manifest* m) { m->set_schema_version(7); }, "schema_version"},
      {[](v1::Manifest* m) { m->set_layer_sizes(0, 5); }, "layer_sizes"},
      {[](v1::Manifest* m) { m->mutable_user_model()->set_half_life_seconds(-1); }, "half_life_seconds"},
      {[](v1::Manifest* m) { m->mutable_compression()->set_unstructured_sparsity(1.5); }, "unstructured_sparsity"},
      {[](v1::Manifest* m) { m->mutable_files(0)->set_name("../etc/passwd"); }, "not a plain file name"},
      {[](v1::Manifest* m) { m->mutable_files()->RemoveLast(); }, "does not list"},
      {[](v1::Manifest* m) { m->mutable_recall()->set_max_candidates(0); }, "max_candidates"},
  };
  for (const Case& c : cases) {
    SetUp();
    EditManifest(c.edit);
    EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_THAT(Read().message(), HasSubstr(c.want));
    EXPECT_THAT(Read().message(), HasSubstr("manifest.textproto"));
  }
}

TEST_F(BundleTest, RankerShapeMustMatchManifest) {
  EditManifest([](v1::Manifest* m) { m->set_layer_sizes(1, 17); });
  EXPECT_THAT(Read().message(), HasSubstr("ranker.onnx: layer sizes"));
}

TEST_F(BundleTest, EmbeddingShapeMustMatchManifestDim) {
  const int64_t n = contents_.items.ids.size();
  ReplaceFile(kItemsFile, ItemsWith([](CatalogData*) {}, {n * 2, contents_.items.dim / 2}));
  EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Read().message(), HasSubstr("embeddings"));
}

TEST_F(BundleTest, NanEmbeddingIsRefused) {
  ReplaceFile(kItemsFile, ItemsWith([](CatalogData* d) { d->embeddings[5] = std::nanf(""); }));
  EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Read().message(), HasSubstr("embeddings"));
}

TEST_F(BundleTest, DuplicateItemIdIsRefusedAtModelCreation) {
  ReplaceFile(kItemsFile, ItemsWith([](CatalogData* d) { d->ids[3] = d->ids[2]; }));
  auto b = ReadBundle(dir_);
  ASSERT_TRUE(b.ok());
  auto model = Model::Create(*std::move(b), 1);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("items.safetensors: 'ids' has item id 1002 twice"));
}

TEST_F(BundleTest, CovisitNeighbourOutOfRangeIsRefused) {
  CovisitData c = contents_.covisit;
  c.neighbors[4] = 100000;
  SafetensorsWriter w;
  w.AddI64("offsets", {static_cast<int64_t>(c.offsets.size())}, c.offsets);
  w.AddI32("neighbors", {static_cast<int64_t>(c.neighbors.size())}, c.neighbors);
  w.AddF32("weights", {static_cast<int64_t>(c.weights.size())}, c.weights);
  ReplaceFile(kCovisitFile, w.Serialize());
  auto b = ReadBundle(dir_);
  ASSERT_TRUE(b.ok());
  auto model = Model::Create(*std::move(b), 1);
  EXPECT_THAT(model.status().message(), HasSubstr("covisit.safetensors: 'neighbors'[4] is 100000"));
}

TEST_F(BundleTest, CalibrationLabelsMustBeBinary) {
  CalibrationSet cal = contents_.calibration;
  cal.labels[7] = 0.5f;
  SafetensorsWriter w;
  w.AddF32("features", {cal.rows, cal.width}, cal.features);
  w.AddF32("labels", {cal.rows}, cal.labels);
  w.AddI64("groups", {cal.rows}, cal.groups);
  ReplaceFile(kCalibrationFile, w.Serialize());
  EXPECT_THAT(Read().message(), HasSubstr("calibration.safetensors: tensor 'labels': value 0.5 at row 7"));
}

TEST_F(BundleTest, GarbageInSafetensorsIsAnErrorNotACrash) {
  ReplaceFile(kItemsFile, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{garbage", 17));
  EXPECT_FALSE(Read().ok());
  EXPECT_THAT(Read().message(), HasSubstr("items.safetensors"));
  ReplaceFile(kRankerFile, "not an onnx model at all");
  EXPECT_FALSE(Read().ok());
}

}  // namespace
}  // namespace recserve
