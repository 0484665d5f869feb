#include "engine/catalog.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numeric>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "engine/huge_pages.h"
#include "engine/item_key.h"
#include "engine/status_macros.h"
#include "engine/value_limits.h"

namespace recserve {
namespace {

absl::Status SizeError(const std::string& name, const char* field, size_t got, size_t want) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: '%s' has %d values, want %d", name, field, got, want));
}

// Finite and within the bundle limit (value_limits.h): NaN fails both comparisons.
bool WithinLimit(float v) { return v >= -kMaxBundleValue && v <= kMaxBundleValue; }

// Every value of `rows` ([ids.size() x width]) within the limit, or an error naming the
// item, its id and the value.
absl::Status CheckRows(const std::string& name, const char* field, const std::vector<float>& rows, int width,
                       const std::vector<uint64_t>& ids) {
  for (size_t k = 0; k < rows.size(); ++k) {
    if (!WithinLimit(rows[k])) {
      const size_t item = k / static_cast<size_t>(width);
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: '%s' of item %d (id %d) is %g; bundle values must be finite and within +-%g", name, field, item,
          ids[item], rows[k], kMaxBundleValue));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckItemKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("is empty");
  if (key.size() > kMaxItemKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("has %d bytes, more than the limit of %d", key.size(), kMaxItemKeyBytes));
  }
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("has control byte 0x%02x at offset %d", c, i));
    }
  }
  return absl::OkStatus();
}

int32_t Catalog::FindKey(absl::string_view key) const {
  const int32_t item = Find(ItemIdFromKey(key));
  if (item < 0) return -1;
  if (has_keys()) return data_.keys[item] == key ? item : -1;
  uint64_t id;
  return CanonicalNumericKey(key, &id) ? item : -1;
}

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::Create(CatalogData data,
                                                         const std::string& name) {
  const size_t n = data.ids.size();
  if (n == 0) return absl::InvalidArgumentError(name + ": catalog has no items");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(name + ": more than 2^31 items");
  }
  if (data.dim <= 0 || data.dim > 4096) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: bad embedding dim %d", name, data.dim));
  }
  if (data.dense_dim < 0 || data.dense_dim > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: bad dense dim %d", name, data.dense_dim));
  }
  if (data.embeddings.size() != n * data.dim) {
    return SizeError(name, "embeddings", data.embeddings.size(), n * data.dim);
  }
  if (data.dense.size() != n * data.dense_dim) {
    return SizeError(name, "dense", data.dense.size(), n * data.dense_dim);
  }
  if (data.category.size() != n) return SizeError(name, "category", data.category.size(), n);
  if (data.popularity.size() != n) {
    return SizeError(name, "popularity", data.popularity.size(), n);
  }
  if (!data.recent_popularity.empty() && data.recent_popularity.size() != n) {
    return SizeError(name, "recent_popularity", data.recent_popularity.size(), n);
  }
  if (!data.keys.empty() && data.keys.size() != n) {
    return SizeError(name, "keys", data.keys.size(), n);
  }
  for (size_t i = 0; i < data.keys.size(); ++i) {
    if (absl::Status s = CheckItemKey(data.keys[i]); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'keys' of item %d (id %d) %s", name, i, data.ids[i], s.message()));
    }
    const uint64_t derived = ItemIdFromKey(data.keys[i]);
    if (derived != data.ids[i]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: item %d has key '%s', whose id is %d, but 'ids' says %d", name, i,
          absl::CHexEscape(data.keys[i]), derived, data.ids[i]));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (data.category[i] < 0 || data.category[i] >= (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'category' of item %d (id %d) is %d, outside [0, 2^20)", name, i, data.ids[i],
          data.category[i]));
    }
    if (!(data.popularity[i] >= 0 && data.popularity[i] <= kMaxBundleValue)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'popularity' of item %d (id %d) is %g; want finite, >= 0 and <= %g", name, i, data.ids[i],
          data.popularity[i], kMaxBundleValue));
    }
    if (!data.recent_popularity.empty() &&
        !(data.recent_popularity[i] >= 0 && data.recent_popularity[i] <= kMaxBundleValue)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'recent_popularity' of item %d (id %d) is %g; want finite, >= 0 and <= %g", name, i, data.ids[i],
          data.recent_popularity[i], kMaxBundleValue));
    }
  }
  RETURN_IF_ERROR(CheckRows(name, "embeddings", data.embeddings, data.dim, data.ids));
  RETURN_IF_ERROR(CheckRows(name, "dense", data.dense, data.dense_dim, data.ids));

  std::unique_ptr<Catalog> catalog(new Catalog(std::move(data)));
  const CatalogData& d = catalog->data_;
  catalog->index_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto [it, inserted] = catalog->index_.emplace(d.ids[i], static_cast<int32_t>(i));
    if (!inserted) {
      if (d.keys.empty() || d.keys[it->second] == d.keys[i]) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: 'ids' has item id %d twice", name, d.ids[i]));
      }
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'ids' has item id %d twice: keys '%s' (item %d) and '%s' (item %d) hash to it",
          name, d.ids[i], absl::CHexEscape(d.keys[it->second]), it->second,
          absl::CHexEscape(d.keys[i]), i));
    }
  }
  const float max_pop = *std::max_element(d.popularity.begin(), d.popularity.end());
  const float denom = std::log1p(max_pop);
  catalog->popularity_feature_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    catalog->popularity_feature_[i] = denom > 0 ? std::log1p(d.popularity[i]) / denom : 0.f;
  }
  catalog->by_popularity_.resize(n);
  std::iota(catalog->by_popularity_.begin(), catalog->by_popularity_.end(), 0);
  std::stable_sort(catalog->by_popularity_.begin(), catalog->by_popularity_.end(),
                   [&](int32_t a, int32_t b) { return d.popularity[a] > d.popularity[b]; });
  const int32_t num_categories = *std::max_element(d.category.begin(), d.category.end()) + 1;
  catalog->category_offsets_.assign(num_categories + 1, 0);
  for (int32_t c : d.category) ++catalog->category_offsets_[c + 1];
  for (int32_t c = 0; c < num_categories; ++c) {
    catalog->category_offsets_[c + 1] += catalog->category_offsets_[c];
  }
  catalog->category_items_.resize(n);
  std::vector<int64_t> fill(catalog->category_offsets_.begin(), catalog->category_offsets_.end() - 1);
  for (int32_t item : catalog->by_popularity_) catalog->category_items_[fill[d.category[item]]++] = item;
  // Requests read rows of these at random.
  AdviseHugePages(d.embeddings);
  AdviseHugePages(d.dense);
  AdviseHugePages(d.category);
  AdviseHugePages(catalog->popularity_feature_);
  return catalog;
}

namespace {

// Checks one CSR table of `name`: offsets [num_items + 1] from 0, non-decreasing, ending at
// the number of neighbours; neighbours in [0, num_items); each value column (named, same
// length as the neighbours, or empty when optional) finite in [0, kMaxBundleValue].
absl::Status CheckNeighborLists(
    const std::string& name, const char* offsets_name, const std::vector<int64_t>& offsets,
    const char* neighbors_name, const std::vector<int32_t>& neighbors,
    std::initializer_list<std::pair<const char*, const std::vector<float>*>> values, int num_items) {
  if (offsets.size() != static_cast<size_t>(num_items) + 1) {
    return SizeError(name, offsets_name, offsets.size(), static_cast<size_t>(num_items) + 1);
  }
  for (const auto& [column, v] : values) {
    if (v->size() != neighbors.size()) return SizeError(name, column, v->size(), neighbors.size());
  }
  if (offsets[0] != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: '%s'[0] is %d, want 0", name, offsets_name, offsets[0]));
  }
  for (int i = 0; i < num_items; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: '%s' decreases at %d (%d -> %d)", name,
                                                        offsets_name, i, offsets[i], offsets[i + 1]));
    }
  }
  if (static_cast<uint64_t>(offsets[num_items]) != neighbors.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: '%s'[%d] is %d but there are %d %s", name,
                                                      offsets_name, num_items, offsets[num_items],
                                                      neighbors.size(), neighbors_name));
  }
  for (size_t e = 0; e < neighbors.size(); ++e) {
    if (neighbors[e] < 0 || neighbors[e] >= num_items) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: '%s'[%d] is %d, outside [0, %d)", name,
                                                        neighbors_name, e, neighbors[e], num_items));
    }
    for (const auto& [column, v] : values) {
      if (!((*v)[e] >= 0 && (*v)[e] <= kMaxBundleValue)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: '%s'[%d] is %g; want finite, >= 0 and <= %g", name, column, e, (*v)[e], kMaxBundleValue));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CovisitIndex>> CovisitIndex::Create(CovisitData data,
                                                                   int num_items,
                                                                   const std::string& name) {
  if (data.counts.empty()) {
    RETURN_IF_ERROR(CheckNeighborLists(name, "offsets", data.offsets, "neighbors", data.neighbors,
                                       {{"weights", &data.weights}}, num_items));
  } else {
    RETURN_IF_ERROR(CheckNeighborLists(name, "offsets", data.offsets, "neighbors", data.neighbors,
                                       {{"weights", &data.weights}, {"counts", &data.counts}}, num_items));
  }
  if (!data.knn_offsets.empty() || !data.knn_neighbors.empty() || !data.knn_weights.empty()) {
    RETURN_IF_ERROR(CheckNeighborLists(name, "knn_offsets", data.knn_offsets, "knn_neighbors",
                                       data.knn_neighbors, {{"knn_weights", &data.knn_weights}}, num_items));
  }
  std::unique_ptr<CovisitIndex> index(new CovisitIndex(std::move(data)));
  AdviseHugePages(index->data_.offsets);
  AdviseHugePages(index->data_.neighbors);
  AdviseHugePages(index->data_.weights);
  AdviseHugePages(index->data_.knn_neighbors);
  AdviseHugePages(index->data_.knn_weights);
  return index;
}

}  // namespace recserve
