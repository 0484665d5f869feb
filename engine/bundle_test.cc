#include "engine/bundle.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "engine/file_util.h"
#include "engine/item_key.h"
#include "engine/model.h"
#include "engine/onnx_mlp.h"
#include "engine/safetensors.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

// Gives every item of `b` a key and the id derived from it: SKU-like strings for even
// items, canonical decimals (their own ids) for odd ones.
void GiveKeys(BundleContents* b) {
  CatalogData& d = b->items;
  d.keys.clear();
  for (size_t i = 0; i < d.ids.size(); ++i) {
    d.keys.push_back(i % 2 == 0 ? absl::StrCat("SKU-", 85000 + i, "A") : absl::StrCat(1000 + i));
    d.ids[i] = ItemIdFromKey(d.keys[i]);
  }
}

// items.safetensors of `d` with the key tensors given as raw offsets and bytes.
std::string ItemsWithKeyTensors(const CatalogData& d, const std::vector<int64_t>& offsets,
                                const std::string& bytes) {
  const int64_t n = d.ids.size();
  SafetensorsWriter w;
  w.AddU64("ids", {n}, d.ids);
  w.AddF32("embeddings", {n, d.dim}, d.embeddings);
  w.AddF32("dense", {n, d.dense_dim}, d.dense);
  w.AddI32("category", {n}, d.category);
  w.AddF32("popularity", {n}, d.popularity);
  w.AddI64("key_offsets", {static_cast<int64_t>(offsets.size())}, offsets);
  w.AddU8("key_bytes", {static_cast<int64_t>(bytes.size())},
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  return w.Serialize();
}

// The well-formed key tensors of `keys`.
void KeyTensors(const std::vector<std::string>& keys, std::vector<int64_t>* offsets,
                std::string* bytes) {
  offsets->assign(1, 0);
  bytes->clear();
  for (const std::string& k : keys) {
    *bytes += k;
    offsets->push_back(static_cast<int64_t>(bytes->size()));
  }
}

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

// Found by fuzz_manifest: 64 characters that are not lowercase hex passed the manifest
// check and were only caught as a checksum mismatch (DataLoss) after every file was hashed.
TEST_F(BundleTest, ManifestChecksumMustBeLowercaseHex) {
  for (const std::string bad : {std::string(64, 'z'), std::string(64, 'A'), std::string(63, 'a') + "\xff"}) {
    SetUp();
    EditManifest([&](v1::Manifest* m) { m->mutable_files(1)->set_sha256(bad); });
    EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(Read().message()),
                HasSubstr("files.sha256: of 'items.safetensors' is not 64 lowercase hex digits"));
  }
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
      {[](v1::Manifest* m) { m->mutable_answer()->set_recent_share(0.75f); }, "answer.recent_share"},
      {[](v1::Manifest* m) { m->mutable_answer()->set_recent_share(NAN); }, "answer.recent_share"},
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

TEST_F(BundleTest, CovisitCountsRoundTripAndBadCountsAreRefusedAtModelCreation) {
  BundleContents with_counts = contents_;
  for (float w : with_counts.covisit.weights) with_counts.covisit.counts.push_back(3 * w + 1);
  const std::string dir = dir_ + "-counts";
  ASSERT_TRUE(WriteBundle(with_counts, dir).ok());
  auto read = ReadBundle(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->covisit.counts, with_counts.covisit.counts);
  // Without counts (the tiny bundle) the reader leaves them empty.
  auto plain = ReadBundle(dir_);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->covisit.counts.empty());
  read->covisit.counts[2] = -1.f;
  auto model = Model::Create(*std::move(read), 1);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("'counts'[2] is -1"));
}

TEST_F(BundleTest, RecentPopularityRoundTripsAndIsCheckedAtModelCreation) {
  BundleContents with_recent = contents_;
  for (size_t i = 0; i < with_recent.items.ids.size(); ++i) with_recent.items.recent_popularity.push_back(i % 5);
  const std::string dir = dir_ + "-recent";
  ASSERT_TRUE(WriteBundle(with_recent, dir).ok());
  auto read = ReadBundle(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->items.recent_popularity, with_recent.items.recent_popularity);
  // Optional: the tiny bundle has none.
  auto plain = ReadBundle(dir_);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->items.recent_popularity.empty());
  read->items.recent_popularity[3] = -2.f;
  auto model = Model::Create(*std::move(read), 1);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("'recent_popularity' of item 3"));
  with_recent.items.recent_popularity.pop_back();
  model = Model::Create(std::move(with_recent), 2);
  EXPECT_THAT(model.status().message(), HasSubstr("recent_popularity"));
}

TEST_F(BundleTest, ItemKnnListsRoundTripAndAreCheckedAtModelCreation) {
  BundleContents with_knn = contents_;
  with_knn.covisit.knn_offsets = with_knn.covisit.offsets;
  with_knn.covisit.knn_neighbors = with_knn.covisit.neighbors;
  for (float w : with_knn.covisit.weights) with_knn.covisit.knn_weights.push_back(w / 2);
  const std::string dir = dir_ + "-knn";
  ASSERT_TRUE(WriteBundle(with_knn, dir).ok());
  auto read = ReadBundle(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->covisit.knn_offsets, with_knn.covisit.knn_offsets);
  EXPECT_EQ(read->covisit.knn_neighbors, with_knn.covisit.knn_neighbors);
  EXPECT_EQ(read->covisit.knn_weights, with_knn.covisit.knn_weights);
  auto plain = ReadBundle(dir_);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->covisit.knn_offsets.empty());
  {
    BundleContents bad = *read;
    bad.covisit.knn_neighbors[3] = -7;
    auto model = Model::Create(std::move(bad), 1);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(model.status().message(), HasSubstr("'knn_neighbors'[3] is -7"));
  }
  {
    BundleContents bad = *read;
    bad.covisit.knn_weights[1] = std::numeric_limits<float>::infinity();
    auto model = Model::Create(std::move(bad), 1);
    EXPECT_THAT(model.status().message(), HasSubstr("'knn_weights'[1] is inf"));
  }
  {
    BundleContents bad = *read;
    bad.covisit.knn_offsets.pop_back();
    auto model = Model::Create(std::move(bad), 1);
    EXPECT_THAT(model.status().message(), HasSubstr("knn_offsets"));
  }
  auto model = Model::Create(*std::move(read), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->covisit().has_knn());
}

TEST_F(BundleTest, NanEmbeddingIsRefused) {
  ReplaceFile(kItemsFile, ItemsWith([](CatalogData* d) { d->embeddings[5] = std::nanf(""); }));
  EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Read().message(), HasSubstr("embeddings"));
}

TEST_F(BundleTest, HugeFiniteValuesAreRefusedAtLoad) {
  // Finite, but past kMaxBundleValue (1e15): products and sums of such values overflow
  // to infinity and NaN on the request path (value_limits.h).
  struct Case {
    std::function<void(BundleContents*)> edit;
    std::string want;
  } cases[] = {
      {[](BundleContents* b) { b->items.embeddings[5] = 1e30f; }, "'embeddings' of item 0 (id 1000) is 1e+30"},
      {[](BundleContents* b) { b->items.dense[7] = -2e20f; }, "'dense' of item 2 (id 1002) is -2e+20"},
      {[](BundleContents* b) { b->items.popularity[3] = 3e38f; }, "'popularity' of item 3 (id 1003) is 3e+38"},
      {[](BundleContents* b) { b->covisit.weights[4] = 1e16f; }, "'weights'[4] is 1e+16"},
      {[](BundleContents* b) {
         b->covisit.counts.assign(b->covisit.weights.size(), 1.f);
         b->covisit.counts[6] = 1e20f;
       },
       "'counts'[6] is 1e+20"},
      {[](BundleContents* b) { b->calibration.features[11] = -1e25f; }, "'features'[11] is -1e+25"},
  };
  for (const Case& c : cases) {
    BundleContents b = contents_;
    c.edit(&b);
    const std::string dir = dir_ + "-" + std::to_string(&c - cases);
    ASSERT_TRUE(WriteBundle(std::move(b), dir).ok());
    const absl::Status loaded = Model::Load(dir, 1).status();
    EXPECT_EQ(loaded.code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_THAT(std::string(loaded.message()), HasSubstr(c.want));
    EXPECT_THAT(std::string(loaded.message()), HasSubstr("1e+15")) << c.want;
  }
  // A ranker weight: the writer refuses it, so patch its bytes in ranker.onnx.
  {
    Mlp mlp = contents_.mlp;
    mlp.layers[0].weight[3] = 0.123456789f;
    std::string bytes = *SerializeOnnxMlp(mlp);
    const float marker = 0.123456789f, huge = 4e20f;
    const size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&marker), sizeof(float)));
    ASSERT_NE(at, std::string::npos);
    bytes.replace(at, sizeof(float), std::string(reinterpret_cast<const char*>(&huge), sizeof(float)));
    ReplaceFile(kRankerFile, bytes);
    const absl::Status loaded = Model::Load(dir_, 1).status();
    EXPECT_EQ(loaded.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(loaded.message()), HasSubstr("ranker.onnx"));
    EXPECT_THAT(std::string(loaded.message()), HasSubstr("4e+20"));
  }
  // The user model's event weights and event count bound the sums over a user's events.
  SetUp();
  EditManifest([](v1::Manifest* m) { m->mutable_user_model()->set_cart_weight(1e30f); });
  EXPECT_THAT(std::string(Read().message()), HasSubstr("user_model: event weight 1e+30"));
  SetUp();
  EditManifest([](v1::Manifest* m) { m->mutable_user_model()->set_max_events(1 << 30); });
  EXPECT_THAT(std::string(Read().message()), HasSubstr("user_model.max_events"));
  // At the limits, everything loads.
  BundleContents at_limit = contents_;
  at_limit.items.embeddings[0] = -1e15f;
  at_limit.items.popularity[0] = 1e15f;
  at_limit.covisit.weights[0] = 1e15f;
  at_limit.mlp.layers[0].weight[0] = 1e15f;
  const std::string dir = dir_ + "-at-limit";
  ASSERT_TRUE(WriteBundle(std::move(at_limit), dir).ok());
  EXPECT_TRUE(Model::Load(dir, 1).ok());
}

TEST_F(BundleTest, DuplicateItemIdIsRefusedAtModelCreation) {
  ReplaceFile(kItemsFile, ItemsWith([](CatalogData* d) { d->ids[3] = d->ids[2]; }));
  auto b = ReadBundle(dir_);
  ASSERT_TRUE(b.ok());
  auto model = Model::Create(*std::move(b), 1);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("items.safetensors: 'ids' has item id 1002 twice"));
}

TEST_F(BundleTest, NumericCatalogStoresNoKeys) {
  auto file = SafetensorsFile::Open(Path(kItemsFile));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().count("key_offsets"), 0u);
  EXPECT_EQ((*file)->tensors().count("key_bytes"), 0u);
  auto read = ReadBundle(dir_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->items.keys.empty());
  auto model = Model::Create(*std::move(read), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const Catalog& c = (*model)->catalog();
  EXPECT_FALSE(c.has_keys());
  EXPECT_EQ(c.key(0), "");
  EXPECT_EQ(c.FindKey("1005"), 5);
  EXPECT_EQ(c.FindKey("01005"), -1);  // not canonical: not the key of item 1005
  EXPECT_EQ(c.FindKey("SKU-1"), -1);
}

TEST_F(BundleTest, ItemKeysRoundTripAndFindTheirItems) {
  BundleContents keyed = contents_;
  GiveKeys(&keyed);
  const std::string dir = dir_ + "/keyed";
  ASSERT_TRUE(WriteBundle(keyed, dir).ok());
  auto file = SafetensorsFile::Open(dir + "/" + kItemsFile);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().at("key_offsets").dtype, DType::kI64);
  EXPECT_EQ((*file)->tensors().at("key_bytes").dtype, DType::kU8);
  auto read = ReadBundle(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->items.keys, keyed.items.keys);
  EXPECT_EQ(read->items.ids, keyed.items.ids);
  auto model = Model::Create(*std::move(read), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const Catalog& c = (*model)->catalog();
  EXPECT_TRUE(c.has_keys());
  EXPECT_EQ(c.key(4), "SKU-85004A");
  EXPECT_EQ(c.key(5), "1005");
  EXPECT_EQ(c.FindKey("SKU-85004A"), 4);
  EXPECT_EQ(c.Find(ItemIdFromKey("SKU-85004A")), 4);
  EXPECT_EQ(c.FindKey("1005"), 5);
  EXPECT_EQ(c.Find(1005), 5);
  EXPECT_EQ(c.FindKey("SKU-85005A"), -1);
  EXPECT_EQ(c.FindKey(""), -1);
}

TEST_F(BundleTest, ItemKeyTensorsAreCheckedBeforeUse) {
  CatalogData d = contents_.items;
  BundleContents keyed = contents_;
  GiveKeys(&keyed);
  d.ids = keyed.items.ids;
  std::vector<int64_t> good_offsets;
  std::string good_bytes;
  KeyTensors(keyed.items.keys, &good_offsets, &good_bytes);
  ReplaceFile(kItemsFile, ItemsWithKeyTensors(d, good_offsets, good_bytes));
  ASSERT_TRUE(Read().ok()) << Read();

  struct Case {
    std::string what;
    std::function<void(std::vector<int64_t>*, std::string*)> edit;
    std::string want;
  } cases[] = {
      {"offsets decrease", [](std::vector<int64_t>* o, std::string*) { (*o)[3] = (*o)[2] - 1; },
       "'key_offsets' decreases at 2"},
      {"offset past the bytes",
       [](std::vector<int64_t>* o, std::string* b) { (*o)[5] = static_cast<int64_t>(b->size()) + 100; },
       "'key_offsets'[5] is"},
      {"negative first offset", [](std::vector<int64_t>* o, std::string*) { (*o)[0] = -1; },
       "'key_offsets'[0] is -1, want 0"},
      {"bytes left over", [](std::vector<int64_t>*, std::string* b) { *b += "xyz"; },
       "but 'key_bytes' has"},
      {"too few offsets", [](std::vector<int64_t>* o, std::string*) { o->pop_back(); },
       "tensor 'key_offsets': shape"},
      {"empty key", [](std::vector<int64_t>* o, std::string*) { (*o)[1] = 0; },
       "key of item 0 (id"},
      {"control byte", [](std::vector<int64_t>*, std::string* b) { (*b)[2] = '\x07'; },
       "has control byte 0x07 at offset 2"},
      {"DEL byte", [](std::vector<int64_t>*, std::string* b) { (*b)[0] = '\x7f'; },
       "has control byte 0x7f at offset 0"},
      {"key not matching its id", [](std::vector<int64_t>*, std::string* b) { (*b)[0] = 'T'; },
       "'key_bytes': key 'TKU-85000A' of item 0 has id"},
  };
  for (const Case& c : cases) {
    std::vector<int64_t> offsets = good_offsets;
    std::string bytes = good_bytes;
    c.edit(&offsets, &bytes);
    ReplaceFile(kItemsFile, ItemsWithKeyTensors(d, offsets, bytes));
    const absl::Status s = Read();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr("items.safetensors")) << c.what;
    EXPECT_THAT(s.message(), HasSubstr(c.want)) << c.what;
  }
}

TEST_F(BundleTest, TooLongItemKeyIsRefused) {
  CatalogData d = contents_.items;
  std::vector<std::string> keys;
  for (size_t i = 0; i < d.ids.size(); ++i) keys.push_back(absl::StrCat(d.ids[i]));
  keys[1] = std::string(kMaxItemKeyBytes + 1, 'k');
  d.ids[1] = ItemIdFromKey(keys[1]);
  std::vector<int64_t> offsets;
  std::string bytes;
  KeyTensors(keys, &offsets, &bytes);
  ReplaceFile(kItemsFile, ItemsWithKeyTensors(d, offsets, bytes));
  EXPECT_THAT(Read().message(), HasSubstr("key of item 1 (id"));
  EXPECT_THAT(Read().message(), HasSubstr("has 257 bytes, more than the limit of 256"));
}

TEST_F(BundleTest, OneKeyTensorWithoutTheOtherIsRefused) {
  CatalogData d = contents_.items;
  const int64_t n = d.ids.size();
  SafetensorsWriter w;
  w.AddU64("ids", {n}, d.ids);
  w.AddF32("embeddings", {n, d.dim}, d.embeddings);
  w.AddF32("dense", {n, d.dense_dim}, d.dense);
  w.AddI32("category", {n}, d.category);
  w.AddF32("popularity", {n}, d.popularity);
  w.AddI64("key_offsets", {n + 1}, std::vector<int64_t>(n + 1, 0));
  ReplaceFile(kItemsFile, w.Serialize());
  EXPECT_EQ(Read().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Read().message(), HasSubstr("'key_offsets' without 'key_bytes'"));
}

TEST_F(BundleTest, KeyOffsetsOfAnotherDtypeAreRefused) {
  CatalogData d = contents_.items;
  const int64_t n = d.ids.size();
  SafetensorsWriter w;
  w.AddU64("ids", {n}, d.ids);
  w.AddF32("embeddings", {n, d.dim}, d.embeddings);
  w.AddF32("dense", {n, d.dense_dim}, d.dense);
  w.AddI32("category", {n}, d.category);
  w.AddF32("popularity", {n}, d.popularity);
  w.AddI32("key_offsets", {n + 1}, std::vector<int32_t>(n + 1, 0));
  w.AddU8("key_bytes", {0}, {});
  ReplaceFile(kItemsFile, w.Serialize());
  EXPECT_THAT(Read().message(), HasSubstr("tensor 'key_offsets': dtype is I32, want I64"));
}

TEST(CatalogKeysTest, EachKeyMustDeriveItsId) {
  BundleContents b = testing::TinyBundle(8);
  GiveKeys(&b);
  ASSERT_TRUE(Catalog::Create(b.items).ok());
  CatalogData wrong = b.items;
  wrong.ids[2] = 77;  // key "SKU-85002A" derives another id
  auto c = Catalog::Create(wrong, "items.safetensors");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("item 2 has key 'SKU-85002A', whose id is"));
  EXPECT_THAT(c.status().message(), HasSubstr(absl::StrCat(ItemIdFromKey("SKU-85002A"))));
  EXPECT_THAT(c.status().message(), HasSubstr("but 'ids' says 77"));
  // A numeric key is its own id; "01001" is not canonical and hashes.
  CatalogData padded = b.items;
  padded.keys[1] = "01001";
  EXPECT_THAT(Catalog::Create(padded).status().message(), HasSubstr("but 'ids' says 1001"));
}

TEST(CatalogKeysTest, KeysMustBeOnePerItemAndValid) {
  BundleContents b = testing::TinyBundle(8);
  GiveKeys(&b);
  CatalogData short_keys = b.items;
  short_keys.keys.pop_back();
  EXPECT_THAT(Catalog::Create(short_keys).status().message(), HasSubstr("'keys' has 7 values, want 8"));
  CatalogData empty_key = b.items;
  empty_key.keys[3] = "";
  empty_key.ids[3] = ItemIdFromKey("");
  EXPECT_THAT(Catalog::Create(empty_key).status().message(), HasSubstr("'keys' of item 3 (id"));
  EXPECT_THAT(Catalog::Create(empty_key).status().message(), HasSubstr("is empty"));
  CatalogData tab = b.items;
  tab.keys[4] = "SKU\t4";
  tab.ids[4] = ItemIdFromKey(tab.keys[4]);
  EXPECT_THAT(Catalog::Create(tab).status().message(), HasSubstr("control byte 0x09 at offset 3"));
}

TEST(CatalogKeysTest, TheSameKeyTwiceIsADuplicateId) {
  BundleContents b = testing::TinyBundle(8);
  GiveKeys(&b);
  b.items.keys[6] = b.items.keys[4];
  b.items.ids[6] = b.items.ids[4];
  auto c = Catalog::Create(b.items, "items.safetensors");
  EXPECT_THAT(c.status().message(),
              HasSubstr(absl::StrCat("'ids' has item id ", ItemIdFromKey("SKU-85004A"), " twice")));
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

// ReadBundle(dir), which must return without blocking. A reader stuck opening a FIFO or
// reading /dev/zero for ever cannot be interrupted, so after a minute (a tiny bundle
// reads in milliseconds) this reports the hang and ends the test process.
absl::Status ReadWithoutHanging(const std::string& dir) {
  absl::Status result;
  absl::Notification done;
  std::thread reader([&] {
    result = ReadBundle(dir).status();
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Minutes(1))) {
    ADD_FAILURE() << "ReadBundle(" << dir << ") has not returned after a minute: it hangs on a bundle file";
    std::fflush(stdout);
    std::_Exit(1);
  }
  reader.join();
  return result;
}

TEST_F(BundleTest, AFifoInPlaceOfABundleFileIsRefusedWithoutBlocking) {
  std::filesystem::remove(Path(kItemsFile));
  ASSERT_EQ(::mkfifo(Path(kItemsFile).c_str(), 0644), 0);
  const absl::Status s = ReadWithoutHanging(dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("items.safetensors: is a FIFO"));
}

TEST_F(BundleTest, ABundleFileSymlinkedToDevZeroIsRefusedWithoutReadingIt) {
  std::filesystem::remove(Path(kCovisitFile));
  std::filesystem::create_symlink("/dev/zero", Path(kCovisitFile));
  const absl::Status s = ReadWithoutHanging(dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("covisit.safetensors: is a symbolic link"));
  // A link to the right bytes is refused the same way: files must be in the directory.
  const std::string copy = dir_ + "-covisit-copy";
  ASSERT_TRUE(WriteBundle(contents_, dir_ + "-copy").ok());
  std::filesystem::rename(dir_ + "-copy/" + kCovisitFile, copy);
  std::filesystem::remove(Path(kCovisitFile));
  std::filesystem::create_symlink(copy, Path(kCovisitFile));
  EXPECT_THAT(Read().message(), HasSubstr("covisit.safetensors: is a symbolic link"));
}

TEST_F(BundleTest, AVersionDirectoryReachedThroughASymlinkReads) {
  const std::string link = dir_ + "-link";
  std::filesystem::remove(link);
  std::filesystem::create_directory_symlink(dir_, link);
  const absl::StatusOr<BundleContents> read = ReadBundle(link);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->items.ids, contents_.items.ids);
}

TEST_F(BundleTest, AFileLargerThanTheManifestSaysIsRefusedBeforeItIsRead) {
  // A terabyte, sparse: reading it to find out would take many minutes.
  if (::truncate(Path(kItemsFile).c_str(), off_t{1} << 40) != 0) {
    GTEST_SKIP() << "this file system cannot hold a sparse 1 TiB file";
  }
  const absl::Status s = ReadWithoutHanging(dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("items.safetensors: size 1099511627776 but the manifest says"));
  std::filesystem::remove(Path(kItemsFile));  // no terabyte-sized file left behind
}

TEST_F(BundleTest, AManifestListingAFileAboveTheSizeLimitIsRefused) {
  EditManifest([](v1::Manifest* m) { m->mutable_files(1)->set_size(uint64_t{1} << 40); });
  const absl::Status s = Read();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("manifest.textproto: files.size"));
  EXPECT_THAT(s.message(), HasSubstr("is 1099511627776 bytes, above the limit of"));
}

// Counts the opens of each file in a directory (inotify IN_OPEN: every open(2), whatever
// library makes it).
class OpenCounter {
 public:
  explicit OpenCounter(const std::string& dir) : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    EXPECT_GE(fd_, 0);
    EXPECT_GE(::inotify_add_watch(fd_, dir.c_str(), IN_OPEN), 0);
  }
  ~OpenCounter() { ::close(fd_); }
  // The opens since construction, by file name (the directory's own are left out).
  std::map<std::string, int> Counts() {
    alignas(inotify_event) char buffer[64 << 10];
    ssize_t got;
    while ((got = ::read(fd_, buffer, sizeof(buffer))) > 0) {
      for (ssize_t at = 0; at < got;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        if (event->len > 0 && !(event->mask & IN_ISDIR)) ++counts_[event->name];
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
    return counts_;
  }

 private:
  int fd_;
  std::map<std::string, int> counts_;
};

TEST(BundleReadOnceTest, LoadingAVersionOpensEachOfItsFilesOnce) {
  // Each file is read once and parsed from the bytes whose checksum was checked; a file
  // opened a second time (to parse, to map, for hnswlib) could be another file by then.
  const std::string dir = testing::TempDir("read_once") + "/1";
  ASSERT_TRUE(testing::WriteBundleWithHnswGraph(testing::TinyBundle(500, 8, 2), dir).ok());

  OpenCounter opens(dir);
  ModelOptions options;
  options.index_recall_queries = 0;
  auto model = Model::Load(dir, 1, options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->index().name(), "hnsw(M=16,ef=300,prebuilt)");
  const std::map<std::string, int> once = {{kManifestFile, 1}, {kRankerFile, 1},      {kItemsFile, 1},
                                           {kCovisitFile, 1},  {kCalibrationFile, 1}, {"hnsw.bin", 1}};
  EXPECT_EQ(opens.Counts(), once);
}

}  // namespace
}  // namespace recserve
