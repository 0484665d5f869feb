#include "engine/embedding_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/file_util.h"
#include "engine/model.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

EmbeddingIndexOptions Kind(const std::string& kind) {
  EmbeddingIndexOptions o;
  o.kind = kind;
  return o;
}

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
  auto index = BuildEmbeddingIndex(catalog_.get(), Kind("exact-int8"));
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->name(), "exact-int8");
  EXPECT_GE(MeasureIndexRecall(*catalog_, **index, 100, 50), 0.95);
  std::vector<ScoredItem> top;
  std::vector<float> q(catalog_->embedding(7), catalog_->embedding(7) + 16);
  (*index)->TopK(q.data(), 10, nullptr, &top);
  ASSERT_EQ(top.size(), 10u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].score, top[i].score);
}

TEST(ExactInt8IndexTest, ScoresAreTheQuantizedDotProductsForOddShapes) {
  // 1003 items (the last block of 16 is partly padding) of 30 dimensions (the last group
  // of 4 is padded): every score equals the quantized dot product, every item can win.
  constexpr int kItems = 1003, kDim = 30;
  CatalogData d;
  d.dim = kDim;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (int i = 0; i < kItems; ++i) {
    d.ids.push_back(100 + i);
    for (int k = 0; k < kDim; ++k) d.embeddings.push_back(normal(rng));
    d.category.push_back(i % 3);
    d.popularity.push_back(1.f);
  }
  auto catalog = Catalog::Create(std::move(d));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  auto index = BuildEmbeddingIndex(catalog->get(), Kind("exact-int8"));
  ASSERT_TRUE(index.ok()) << index.status();
  auto quantize = [](const float* v, int8_t* codes) {
    float max_abs = 0;
    for (int k = 0; k < kDim; ++k) max_abs = std::max(max_abs, std::abs(v[k]));
    const float scale = max_abs / 127.f;
    for (int k = 0; k < kDim; ++k) codes[k] = static_cast<int8_t>(std::nearbyint(v[k] / scale));
    return scale;
  };
  for (int query_item : {0, 500, kItems - 1}) {
    const float* query = (*catalog)->embedding(query_item);
    int8_t qc[kDim], ec[kDim];
    const float qs = quantize(query, qc);
    std::vector<std::pair<float, int32_t>> want;
    for (int i = 0; i < kItems; ++i) {
      const float es = quantize((*catalog)->embedding(i), ec);
      int32_t dot = 0;
      for (int k = 0; k < kDim; ++k) dot += int32_t{qc[k]} * int32_t{ec[k]};
      want.push_back({-(qs * es * static_cast<float>(dot)), i});
    }
    std::sort(want.begin(), want.end());
    std::vector<ScoredItem> top;
    (*index)->TopK(query, kItems, nullptr, &top);
    ASSERT_EQ(top.size(), static_cast<size_t>(kItems));
    std::vector<std::pair<float, int32_t>> got;
    for (const ScoredItem& s : top) got.push_back({-s.score, s.item});
    std::sort(got.begin(), got.end());
    for (int i = 0; i < kItems; ++i) {
      ASSERT_EQ(got[i].second, want[i].second) << "rank " << i;
      ASSERT_NEAR(got[i].first, want[i].first, 1e-4f * std::max(1.f, std::abs(want[i].first)));
    }
    EXPECT_EQ(top[0].item, query_item);  // an item is its own best match
    // A small k: the threshold rises and most blocks are skipped whole; the answer is
    // still the best 10 of the full ranking.
    std::vector<ScoredItem> top10;
    (*index)->TopK(query, 10, nullptr, &top10);
    ASSERT_EQ(top10.size(), 10u);
    for (int i = 0; i < 10; ++i) {
      EXPECT_NEAR(-top10[i].score, want[i].first, 1e-4f * std::max(1.f, std::abs(want[i].first))) << "rank " << i;
    }
  }
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
  auto index = BuildEmbeddingIndex(catalog_.get(), Kind("faiss"));
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), ::testing::HasSubstr("'faiss'"));
}

TEST_F(EmbeddingIndexTest, SavedHnswGraphLoadsAndAnswersLikeTheBuiltOne) {
  const std::string path = testing::TempDir("hnsw_saved") + "/hnsw.bin";
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  o.build_threads = 1;  // one thread: the saved graph is the one a fresh build makes
  ASSERT_TRUE(SaveHnswGraph(catalog_.get(), o, path).ok());
  auto built = BuildEmbeddingIndex(catalog_.get(), o);
  o.hnsw_graph_path = path;
  auto loaded = BuildEmbeddingIndex(catalog_.get(), o);
  ASSERT_TRUE(built.ok() && loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->name(), "hnsw(M=16,ef=300,prebuilt)");
  std::vector<ScoredItem> a, b;
  for (int item : {3, 99, 4000}) {
    (*built)->TopK(catalog_->embedding(item), 20, nullptr, &a);
    (*loaded)->TopK(catalog_->embedding(item), 20, nullptr, &b);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].item, b[i].item) << item << " rank " << i;
  }
}

TEST_F(EmbeddingIndexTest, HnswGraphOfAnotherCatalogOrCorruptIsRefused) {
  const std::string dir = testing::TempDir("hnsw_bad");
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  // Same size and dimension, other embeddings.
  auto other = Catalog::Create(testing::TinyBundle(5000, 16, 2, {16, 8}, /*seed=*/99).items);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(SaveHnswGraph(other->get(), o, dir + "/other.bin").ok());
  o.hnsw_graph_path = dir + "/other.bin";
  auto index = BuildEmbeddingIndex(catalog_.get(), o);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), ::testing::HasSubstr("built for another catalog"));
  // Another size.
  auto small = Catalog::Create(testing::TinyBundle(100, 16, 2).items);
  ASSERT_TRUE(small.ok());
  o.hnsw_graph_path.clear();
  ASSERT_TRUE(SaveHnswGraph(small->get(), o, dir + "/small.bin").ok());
  o.hnsw_graph_path = dir + "/small.bin";
  index = BuildEmbeddingIndex(catalog_.get(), o);
  EXPECT_THAT(index.status().message(), ::testing::HasSubstr("does not fit this catalog (5000 items of dimension 16)"));
  // Same size, another dimension: refused from the header, before hnswlib reads vectors.
  auto narrow = Catalog::Create(testing::TinyBundle(5000, 8, 2).items);
  ASSERT_TRUE(narrow.ok());
  o.hnsw_graph_path.clear();
  ASSERT_TRUE(SaveHnswGraph(narrow->get(), o, dir + "/narrow.bin").ok());
  o.hnsw_graph_path = dir + "/narrow.bin";
  index = BuildEmbeddingIndex(catalog_.get(), o);
  EXPECT_THAT(index.status().message(), ::testing::HasSubstr("does not fit this catalog"));
  // Truncated.
  {
    std::string bytes = *ReadFileToString(dir + "/other.bin");
    ASSERT_TRUE(WriteFileAtomically(dir + "/cut.bin", bytes.substr(0, bytes.size() / 2)).ok());
  }
  o.hnsw_graph_path = dir + "/cut.bin";
  index = BuildEmbeddingIndex(catalog_.get(), o);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(index.status().message()), ::testing::HasSubstr("too short for the 5000 elements"));
}

// A graph file as hnswlib 0.6 writes it (saveIndex), opened for surgery: a 96-byte
// header, then per element a level-0 record [count | maxM0 links | vector | label], then
// per element a u32 byte size and its upper link lists (level l at (l - 1) x (4 + 4 maxM)
// bytes), each list [count | maxM links].
class HnswFile {
 public:
  explicit HnswFile(std::string bytes) : bytes_(std::move(bytes)) { Index(); }
  const std::string& bytes() const { return bytes_; }
  size_t count() const { return Get<uint64_t>(16); }
  int max_level() const { return Get<int32_t>(48); }
  uint32_t entry() const { return Get<uint32_t>(52); }
  void set_max_level(int level) { Put<int32_t>(48, level); }
  void set_entry(uint32_t element) { Put<uint32_t>(52, element); }
  int level(size_t element) const { return static_cast<int>(Get<uint32_t>(upper_[element]) / list_bytes()); }
  // Offset of the link list of `element` on `level` (its u32 count, then the links).
  size_t List(size_t element, int level) const {
    if (level == 0) return kHeader + element * Get<uint64_t>(24);
    return upper_[element] + 4 + static_cast<size_t>(level - 1) * list_bytes();
  }
  uint32_t Count(size_t list) const { return Get<uint32_t>(list) & 0xffff; }
  void SetLabel(size_t element, uint64_t label) { Put<uint64_t>(List(element, 0) + Get<uint64_t>(32), label); }
  void MarkDeleted(size_t element) { Put<uint32_t>(List(element, 0), Get<uint32_t>(List(element, 0)) | 0x10000); }
  void SetCount(size_t list, uint32_t count) { Put<uint32_t>(list, count); }
  uint32_t Link(size_t list, int k) const { return Get<uint32_t>(list + 4 + 4 * k); }
  void SetLink(size_t list, int k, uint32_t to) { Put<uint32_t>(list + 4 + 4 * k, to); }
  // Appends `extra` zero bytes to the upper link lists of `element` (and its size field).
  void GrowUpper(size_t element, uint32_t extra) {
    const uint32_t size = Get<uint32_t>(upper_[element]);
    Put<uint32_t>(upper_[element], size + extra);
    bytes_.insert(upper_[element] + 4 + size, std::string(extra, '\0'));
    Index();
  }
  // The first element with exactly `level` levels above 0.
  size_t FirstAtLevel(int level) const {
    for (size_t i = 0; i < count(); ++i) {
      if (this->level(i) == level) return i;
    }
    return count();
  }

 private:
  static constexpr size_t kHeader = 96;
  size_t list_bytes() const { return 4 + 4 * Get<uint64_t>(56); }
  void Index() {
    upper_.clear();
    size_t at = kHeader + count() * Get<uint64_t>(24);
    for (size_t i = 0; i < count(); ++i) {
      upper_.push_back(at);
      at += 4 + Get<uint32_t>(at);
    }
  }
  template <typename T>
  T Get(size_t at) const {
    T v;
    std::memcpy(&v, bytes_.data() + at, sizeof(T));
    return v;
  }
  template <typename T>
  void Put(size_t at, T v) {
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  std::string bytes_;
  std::vector<size_t> upper_;  // offset of each element's size field
};

TEST_F(EmbeddingIndexTest, CorruptHnswLevelsAreRefusedAtLoad) {
  const std::string dir = testing::TempDir("hnsw_levels");
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  ASSERT_TRUE(SaveHnswGraph(catalog_.get(), o, dir + "/good.bin").ok());
  const HnswFile good(*ReadFileToString(dir + "/good.bin"));
  ASSERT_GE(good.max_level(), 2);
  const size_t flat = good.FirstAtLevel(0), upper = good.FirstAtLevel(1);
  ASSERT_LT(flat, good.count());
  ASSERT_LT(upper, good.count());
  ASSERT_GT(good.Count(good.List(upper, 1)), 0u);
  const size_t n = good.count();

  // Each a graph whose lists hnswlib would follow out of bounds (or a header that does not
  // describe its lists), with what the refusal must say.
  std::vector<std::pair<std::string, std::function<void(HnswFile*)>>> cases = {
      {"the entry point, element", [&](HnswFile* f) { f->set_entry(static_cast<uint32_t>(flat)); }},
      {"the entry point, element", [&](HnswFile* f) { f->set_max_level(f->max_level() + 1); }},
      {"which has no level 1",
       [&](HnswFile* f) { f->SetLink(f->List(upper, 1), 0, static_cast<uint32_t>(flat)); }},
      {"more than the 16 allowed", [&](HnswFile* f) { f->SetCount(f->List(upper, 1), 17); }},
      {"more than the 32 allowed", [&](HnswFile* f) { f->SetCount(f->List(flat, 0), 33); }},
      {"past the last element", [&](HnswFile* f) { f->SetLink(f->List(flat, 0), 0, static_cast<uint32_t>(n)); }},
      {"past the last element",
       [&](HnswFile* f) { f->SetLink(f->List(upper, 1), 0, static_cast<uint32_t>(n + 5)); }},
      {"above the top level",
       [&](HnswFile* f) { f->GrowUpper(flat, static_cast<uint32_t>(68 * (f->max_level() + 1))); }},
      {"not a whole number of levels", [&](HnswFile* f) { f->GrowUpper(flat, 30); }},
      {"not a whole number of levels", [&](HnswFile* f) { f->GrowUpper(upper, 1); }},
      {"4999 distinct labels for 5000 elements", [&](HnswFile* f) { f->SetLabel(flat, upper); }},
      {"is marked deleted", [&](HnswFile* f) { f->MarkDeleted(upper); }},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    HnswFile bad = good;
    cases[c].second(&bad);
    const std::string path = absl::StrCat(dir, "/bad", c, ".bin");
    ASSERT_TRUE(WriteFileAtomically(path, bad.bytes()).ok());
    o.hnsw_graph_path = path;
    auto index = BuildEmbeddingIndex(catalog_.get(), o);
    EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument) << "case " << c;
    EXPECT_THAT(std::string(index.status().message()), ::testing::HasSubstr(cases[c].first)) << "case " << c;
  }
  // Trailing bytes past the last link list: the file is not the graph its header describes.
  ASSERT_TRUE(WriteFileAtomically(dir + "/long.bin", good.bytes() + std::string(68, '\0')).ok());
  o.hnsw_graph_path = dir + "/long.bin";
  EXPECT_EQ(BuildEmbeddingIndex(catalog_.get(), o).status().code(), absl::StatusCode::kInvalidArgument);
  // The untouched graph still loads.
  o.hnsw_graph_path = dir + "/good.bin";
  EXPECT_TRUE(BuildEmbeddingIndex(catalog_.get(), o).ok());
}

TEST(ModelIndexTest, BundleWithAPrebuiltGraphServesFromIt) {
  const std::string dir = testing::TempDir("hnsw_bundle") + "/1";
  ASSERT_TRUE(testing::WriteBundleWithHnswGraph(testing::TinyBundle(3000, 16, 2), dir).ok());
  auto read = ReadBundle(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_NE(read->hnsw_graph, nullptr);
  EXPECT_EQ(read->hnsw_graph->name(), dir + "/hnsw.bin");
  auto model = Model::Create(*std::move(read), 1, ModelOptions());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->index().name(), "hnsw(M=16,ef=300,prebuilt)");
  EXPECT_GT((*model)->index_recall(), 0.9);
  // A flipped byte in the graph fails the bundle's checksum before hnswlib reads it.
  std::string bytes = *ReadFileToString(dir + "/hnsw.bin");
  bytes[bytes.size() / 2] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(dir + "/hnsw.bin", bytes).ok());
  EXPECT_THAT(ReadBundle(dir).status().message(), ::testing::HasSubstr("hnsw.bin: checksum mismatch"));
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
