// The small model bundle of the hnsw and request fuzz targets and their seeds.
#ifndef RECSERVE_TESTS_FUZZ_FUZZ_BUNDLE_H_
#define RECSERVE_TESTS_FUZZ_FUZZ_BUNDLE_H_

#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/embedding_index.h"
#include "engine/item_key.h"
#include "engine/test_util.h"

namespace recserve::fuzz {

// The small bundle the hnsw and request targets serve and the seeds come from: 32 items
// with string keys (SKU-like for even items, canonical decimals for odd ones, as the
// service test has them), 4-dimensional embeddings, one hidden layer.
inline BundleContents FuzzBundle() {
  BundleContents b = testing::TinyBundle(/*n=*/32, /*dim=*/4, /*dense_dim=*/2, /*hidden=*/{8}, /*seed=*/7);
  for (size_t i = 0; i < b.items.ids.size(); ++i) {
    b.items.keys.push_back(i % 2 == 0 ? absl::StrCat("SKU-", 85000 + i, "A") : absl::StrCat(1000 + i));
    b.items.ids[i] = ItemIdFromKey(b.items.keys[i]);
  }
  return b;
}

// The hnsw parameters of FuzzBundle's graph (small: a 32-element graph is 2 KB).
inline EmbeddingIndexOptions FuzzHnswOptions() {
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  o.hnsw_m = 4;
  o.hnsw_ef_construction = 16;
  o.hnsw_ef_search = 16;
  return o;
}

}  // namespace recserve::fuzz

#endif  // RECSERVE_TESTS_FUZZ_FUZZ_BUNDLE_H_
