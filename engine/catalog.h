// The item catalog of one model version and its co-visitation graph.
//
// Catalog maps external 64-bit item ids to dense indices [0, size) and holds, per item,
// its embedding [dim], dense features [dense_dim], category and popularity. Items are
// addressed by dense index everywhere inside the engine; external ids appear only at
// the edges (requests, responses, bundle files).
//
// A catalog may also hold every item's string key (engine/item_key.h): then each id is
// ItemIdFromKey(key), checked at Create, so two keys with one id (a hash collision) are
// refused as a duplicate id. A numeric catalog holds no keys; its items' keys are their
// ids in decimal.
//
// Both classes are immutable after Create and safe to share between threads; they are
// owned by the model version that loaded them.
#ifndef RECSERVE_ENGINE_CATALOG_H_
#define RECSERVE_ENGINE_CATALOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace recserve {

// Column data of the catalog as stored in items.safetensors. Every float is finite and
// within +-kMaxBundleValue (engine/value_limits.h), so the features computed from them
// stay finite.
struct CatalogData {
  std::vector<uint64_t> ids;         // [N], unique
  std::vector<float> embeddings;     // [N x dim]
  std::vector<float> dense;          // [N x dense_dim]
  std::vector<int32_t> category;     // [N], in [0, 2^20)
  std::vector<float> popularity;     // [N], >= 0 (interaction counts, possibly decayed)
  // [N] or empty: events in a recent window before the bundle's cut (the log trainer's
  // is 30 days), >= 0. Orders the tail of answers (manifest answer.recent_share).
  std::vector<float> recent_popularity;
  // [N] or empty (numeric catalog). Each valid by CheckItemKey, ids[i] == ItemIdFromKey(keys[i]).
  std::vector<std::string> keys;
  int dim = 0;
  int dense_dim = 0;
};

// OK when `key` may name an item: 1 to kMaxItemKeyBytes bytes, no control bytes (< 0x20,
// 0x7f). Otherwise InvalidArgument saying what is wrong (without the field's name, which
// the caller prefixes).
absl::Status CheckItemKey(absl::string_view key);

class Catalog {
 public:
  // Validates sizes, id uniqueness, keys and ranges (every float within the bundle
  // limit, value_limits.h); `name` prefixes errors, which name the item and the value.
  static absl::StatusOr<std::unique_ptr<Catalog>> Create(CatalogData data,
                                                        const std::string& name = "catalog");

  int size() const { return static_cast<int>(data_.ids.size()); }
  int dim() const { return data_.dim; }
  int dense_dim() const { return data_.dense_dim; }

  // Dense index of an external id, or -1 when unknown.
  int32_t Find(uint64_t id) const {
    auto it = index_.find(id);
    return it == index_.end() ? -1 : it->second;
  }
  uint64_t id(int32_t item) const { return data_.ids[item]; }
  // Whether the catalog holds string keys (else it is numeric: keys are decimal ids).
  bool has_keys() const { return !data_.keys.empty(); }
  // The key of `item` when has_keys(); empty for a numeric catalog (whose keys are the
  // ids in decimal: format id(item) where text is needed).
  absl::string_view key(int32_t item) const {
    return has_keys() ? absl::string_view(data_.keys[item]) : absl::string_view();
  }
  // Dense index of the item whose key is `key`, or -1. In a numeric catalog only a
  // canonical decimal key (item_key.h) names an item. Exact: a key that merely hashes to
  // a catalog id is not found.
  int32_t FindKey(absl::string_view key) const;
  const float* embedding(int32_t item) const {
    return &data_.embeddings[static_cast<size_t>(item) * data_.dim];
  }
  const float* dense(int32_t item) const {
    return data_.dense.data() + static_cast<size_t>(item) * data_.dense_dim;
  }
  int32_t category(int32_t item) const { return data_.category[item]; }
  // log(1 + popularity) / log(1 + max popularity): in [0, 1], a ranking feature.
  float popularity_feature(int32_t item) const { return popularity_feature_[item]; }
  // Item indices, most popular first (ties by index).
  const std::vector<int32_t>& by_popularity() const { return by_popularity_; }
  // Categories are 0 .. num_categories() - 1.
  int num_categories() const { return static_cast<int>(category_offsets_.size()) - 1; }
  // The items of `category`, most popular first.
  absl::Span<const int32_t> category_by_popularity(int32_t category) const {
    return absl::MakeConstSpan(category_items_.data() + category_offsets_[category],
                               category_offsets_[category + 1] - category_offsets_[category]);
  }
  const CatalogData& data() const { return data_; }

 private:
  explicit Catalog(CatalogData data) : data_(std::move(data)) {}
  CatalogData data_;
  absl::flat_hash_map<uint64_t, int32_t> index_;
  std::vector<float> popularity_feature_;
  std::vector<int32_t> by_popularity_;
  std::vector<int64_t> category_offsets_;  // CSR over by_popularity_, by category
  std::vector<int32_t> category_items_;
};

// Item-to-item co-visitation lists in CSR form, as stored in covisit.safetensors:
// the neighbours of item i are neighbors[offsets[i] .. offsets[i+1]) with weights in the
// same positions, strongest first.
struct CovisitData {
  std::vector<int64_t> offsets;   // [N + 1], offsets[0] == 0, non-decreasing
  std::vector<int32_t> neighbors; // [nnz], each in [0, N)
  std::vector<float> weights;     // [nnz], in [0, kMaxBundleValue]
  // [nnz] or empty: the raw (possibly time-decayed) pair counts behind `weights`, for
  // the count-based signals of CANDIDATE_SIGNALS. In [0, kMaxBundleValue].
  std::vector<float> counts;
  // Optional (all three empty or all set): the item-kNN lists, in the same CSR form
  // (knn_offsets [N + 1]): the items most often consumed by the same users, weighted by
  // the cosine of the two items' user sets, strongest first. For ITEM_KNN_SIGNALS.
  std::vector<int64_t> knn_offsets;
  std::vector<int32_t> knn_neighbors;
  std::vector<float> knn_weights;  // in [0, kMaxBundleValue]
};

class CovisitIndex {
 public:
  static absl::StatusOr<std::unique_ptr<CovisitIndex>> Create(CovisitData data, int num_items,
                                                             const std::string& name = "covisit");
  absl::Span<const int32_t> neighbors(int32_t item) const {
    return absl::MakeConstSpan(data_.neighbors.data() + data_.offsets[item],
                               data_.offsets[item + 1] - data_.offsets[item]);
  }
  absl::Span<const float> weights(int32_t item) const {
    return absl::MakeConstSpan(data_.weights.data() + data_.offsets[item],
                               data_.offsets[item + 1] - data_.offsets[item]);
  }
  // Empty when the bundle has no counts.
  absl::Span<const float> counts(int32_t item) const {
    if (data_.counts.empty()) return {};
    return absl::MakeConstSpan(data_.counts.data() + data_.offsets[item],
                               data_.offsets[item + 1] - data_.offsets[item]);
  }
  bool has_counts() const { return !data_.counts.empty(); }
  // The item-kNN lists; empty spans when the bundle has none.
  bool has_knn() const { return !data_.knn_offsets.empty(); }
  absl::Span<const int32_t> knn_neighbors(int32_t item) const {
    if (!has_knn()) return {};
    return absl::MakeConstSpan(data_.knn_neighbors.data() + data_.knn_offsets[item],
                               data_.knn_offsets[item + 1] - data_.knn_offsets[item]);
  }
  absl::Span<const float> knn_weights(int32_t item) const {
    if (!has_knn()) return {};
    return absl::MakeConstSpan(data_.knn_weights.data() + data_.knn_offsets[item],
                               data_.knn_offsets[item + 1] - data_.knn_offsets[item]);
  }
  int64_t num_edges() const { return static_cast<int64_t>(data_.neighbors.size()); }
  const CovisitData& data() const { return data_; }

 private:
  explicit CovisitIndex(CovisitData data) : data_(std::move(data)) {}
  CovisitData data_;
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_CATALOG_H_
