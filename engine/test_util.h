// Test helpers: small, valid, random bundle contents built in memory.
#ifndef RECSERVE_ENGINE_TEST_UTIL_H_
#define RECSERVE_ENGINE_TEST_UTIL_H_

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "engine/bundle.h"
#include "engine/embedding_index.h"
#include "engine/features.h"
#include "engine/file_util.h"

namespace recserve::testing {

inline Mlp RandomMlp(const std::vector<int>& sizes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Mlp mlp;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    DenseLayer l;
    l.in = sizes[i];
    l.out = sizes[i + 1];
    std::normal_distribution<float> w(0.f, std::sqrt(2.f / l.in));
    for (int k = 0; k < l.in * l.out; ++k) l.weight.push_back(w(rng));
    for (int k = 0; k < l.out; ++k) l.bias.push_back(0.1f * w(rng));
    l.relu = i + 2 < sizes.size();
    mlp.layers.push_back(std::move(l));
  }
  return mlp;
}

// A consistent bundle: `n` items (ids 1000 + i), random embeddings and features, a ring
// co-visitation graph (i -> i+1, i+2), random calibration rows, a random MLP.
inline BundleContents TinyBundle(int n = 64, int dim = 8, int dense_dim = 3,
                                 std::vector<int> hidden = {16, 8}, uint64_t seed = 5) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  BundleContents b;
  b.items.dim = dim;
  b.items.dense_dim = dense_dim;
  for (int i = 0; i < n; ++i) {
    b.items.ids.push_back(1000 + i);
    b.items.category.push_back(i % 4);
    b.items.popularity.push_back(static_cast<float>(n - i));
    for (int k = 0; k < dim; ++k) b.items.embeddings.push_back(normal(rng));
    for (int k = 0; k < dense_dim; ++k) b.items.dense.push_back(normal(rng));
  }
  b.covisit.offsets.push_back(0);
  for (int i = 0; i < n; ++i) {
    b.covisit.neighbors.push_back((i + 1) % n);
    b.covisit.weights.push_back(1.0f);
    b.covisit.neighbors.push_back((i + 2) % n);
    b.covisit.weights.push_back(0.5f);
    b.covisit.offsets.push_back(static_cast<int64_t>(b.covisit.neighbors.size()));
  }
  v1::Manifest& m = b.manifest;
  m.set_schema_version(kBundleSchemaVersion);
  m.set_model_name("tiny");
  *m.mutable_features() = DefaultFeatureSpec(dim, dense_dim);
  *m.mutable_user_model() = DefaultUserModel();
  m.mutable_recall()->set_embedding_k(10);
  m.mutable_recall()->set_covisit_k(10);
  m.mutable_recall()->set_popularity_k(5);
  m.mutable_recall()->set_max_candidates(20);
  m.mutable_recall()->set_embedding_index("exact");
  m.mutable_compression()->set_mode("none");
  m.mutable_gate()->set_max_auc_drop(0.01f);
  m.mutable_gate()->set_max_logloss_rise(0.01f);
  int width = 0;
  for (const auto& blk : m.features().blocks()) width += blk.width();
  std::vector<int> sizes = {width};
  sizes.insert(sizes.end(), hidden.begin(), hidden.end());
  sizes.push_back(1);
  b.mlp = RandomMlp(sizes, seed + 1);
  for (int s : sizes) m.add_layer_sizes(s);
  b.calibration.width = width;
  b.calibration.rows = 40;
  for (int r = 0; r < 40; ++r) {
    for (int k = 0; k < width; ++k) b.calibration.features.push_back(normal(rng));
    b.calibration.labels.push_back(r % 3 == 0 ? 1.f : 0.f);
    b.calibration.groups.push_back(r / 10);
  }
  return b;
}

// A bundle within every value limit (engine/value_limits.h) whose ranker still overflows
// on real requests. Embeddings near 1e14 make the user-item products near 1e28; the
// ranker's two hidden units weigh the first two USER_ITEM_PRODUCT columns 1e15 each, so
// each unit is +inf or (after its ReLU) 0, and the logit is unit 0 - unit 1: NaN for a
// warm user's candidate whose two products are both positive, +inf or -inf (scores 1 and
// 0) when one is, finite otherwise. The calibration rows (features near 1) score finite,
// so the accuracy gate sees nothing wrong.
inline BundleContents OverflowingRankerBundle(int n = 64) {
  constexpr int kDim = 8;
  BundleContents b = TinyBundle(n, kDim, 3, /*hidden=*/{2});
  for (float& e : b.items.embeddings) e *= 1e14f;
  DenseLayer& hidden = b.mlp.layers[0];
  std::fill(hidden.weight.begin(), hidden.weight.end(), 0.f);
  std::fill(hidden.bias.begin(), hidden.bias.end(), 0.f);
  // Blocks: USER_VECTOR, ITEM_EMBEDDING, then USER_ITEM_PRODUCT.
  hidden.weight[0 * hidden.in + 2 * kDim] = 1e15f;
  hidden.weight[1 * hidden.in + 2 * kDim + 1] = 1e15f;
  b.mlp.layers[1].weight = {1.f, -1.f};
  b.mlp.layers[1].bias = {0.f};
  return b;
}

// Writes `b` to the version directory `dir` with a prebuilt hnsw graph of its catalog
// (hnsw.bin), which the version serves from.
inline absl::Status WriteBundleWithHnswGraph(BundleContents b, const std::string& dir) {
  auto catalog = Catalog::Create(b.items);
  if (!catalog.ok()) return catalog.status();
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  if (absl::Status s = SaveHnswGraph(catalog->get(), o, dir + "/hnsw.bin"); !s.ok()) return s;
  b.manifest.mutable_recall()->set_hnsw_graph("hnsw.bin");
  b.manifest.mutable_recall()->set_embedding_index("hnsw");
  return WriteBundle(std::move(b), dir);
}

// A fresh empty directory under the test's temp dir.
inline std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/recserve_test_" +
                    std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace recserve::testing

#endif  // RECSERVE_ENGINE_TEST_UTIL_H_
